"""Every launcher reports a bad flag and an OS failure as one line, never a traceback.

Each launcher runs in one process through ``tests.launch.launcher_driver`` (its own flags parser and
``main``, as ``python -m launch.X`` would run them), with everything written to file descriptor 2
captured. Cases per launcher:

* ``--config.foo=1`` and a misspelt nested field: one line naming the field; for a launcher with
  a config flag, the close field names (or the config's sections when nothing is close).
* A write that fails with ENOSPC (disk full), EROFS (read-only file system) or EACCES (permission)
  at the stage where the launcher really writes (inputs valid, so all the work before the write
  runs): one line with the path and :data:`launch.common._OS_HINTS`'s advice. The failures are
  injected by the driver into ``open``/``os.open``/``os.replace``/``os.mkdir`` for paths under
  the output directory, because a real read-only directory does not stop root (see
  :func:`test_read_only_directory_for_real`, which does it with ``chmod`` when not root).
* An output (or work) directory that is a file, or lies under a file: one line.
"""

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from launch import common
from tests.extraction.test_extract import _constant_frames, _write_folder
from tests.data.test_importers import make_features, samm_xlsx

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# name in messages, whether it has an ml_collections config flag (and its name).
LAUNCHERS = {
    "launch.main": ("launch.main", "config"),
    "launch.sweep": ("launch.sweep", "config"),
    "launch.extract_features": ("launch.extract_features", "config"),
    "launch.spot": ("spot", "extraction_config"),
    "launch.evaluate": ("evaluate", None),
    "launch.report": ("report", None),
    "launch.seed_spread": ("launch.seed_spread", None),
    "launch.import_dataset": ("import_dataset", None),
    "launch.make_synthetic": ("make_synthetic", None),
    "launch.convert_i3d": ("convert_i3d", None),
}


@pytest.fixture(scope="module")
def world(tiny_run, tmp_path_factory):
  """Valid inputs for every launcher (so each reaches its writes) and a file ``notes.txt``."""
  root = tmp_path_factory.mktemp("errors")
  run = str(root / "run")
  shutil.copytree(tiny_run, run)
  data_root = os.path.join(run, "data")
  dataset = os.path.join(data_root, os.listdir(data_root)[0])
  user = root / "user"
  user.mkdir()
  (user / "notes.txt").write_text("mine\n")
  shutil.copy(os.path.join(run, "predictions.json"), user / "preds.json")
  feats = os.path.join(dataset, "features")
  shutil.copy(os.path.join(feats, sorted(os.listdir(feats))[0]), user / "x.npz")
  samm_xlsx(user / "samm.xlsx")
  make_features(str(user / "samm_feats"), "006_1", 20, "npz")
  make_features(str(user / "samm_feats"), "007_3", 3, "npz")
  _write_folder(str(user / "videos" / "006_1"), _constant_frames(20), "006_1_{:04d}.jpg")
  for seed in (0, 1):  # a two-seed table8 sweep for launch.seed_spread
    for row in ("Apex", "Random"):
      os.makedirs(user / f"spread{seed}" / row)
      shutil.copy(os.path.join(run, "results.json"), user / f"spread{seed}" / row)
  out = root / "out"  # where the injected failures happen
  (out / "existing_workdir").mkdir(parents=True)
  return dict(run=run, dataset=dataset, user=str(user), out=str(out))


def _good_argv(launcher, w, target):
  """An argv whose inputs are valid and whose output is ``target`` (a fresh path)."""
  run, d, u = w["run"], w["dataset"], w["user"]
  return {
      "launch.main": [f"--workdir={target}", "--config=configs/synthetic.py:tiny"],
      "launch.sweep": [f"--workdir={target}", "--config=configs/synthetic.py:tiny"],
      "launch.extract_features": [f"--videos_dir={u}/videos", f"--output_dir={target}",
                                  "--random_init", "--source_fps=30"],
      "launch.spot": [f"--workdir={run}", f"--features={u}/x.npz", f"--output={target}.json"],
      "launch.evaluate": [f"--dataset_dir={d}", f"--predictions={u}/preds.json",
                          f"--output={target}/metrics.json"],
      "launch.report": [f"--workdir={run}", f"--output={target}.md"],
      "launch.seed_spread": ["--sweep=table8", f"--workdirs={u}/spread0,{u}/spread1",
                        f"--output={target}.md"],
      "launch.import_dataset": ["--format=samm_lv", f"--annotations={u}/samm.xlsx",
                                f"--features={u}/samm_feats", f"--output_dir={target}",
                                "--skip_missing"],
      "launch.make_synthetic": ["--preset=tiny", f"--output_dir={target}"],
      "launch.convert_i3d": ["--input=kinetics400", f"--output={target}.npz"],
  }[launcher]


def _cases(launcher, w):
  """``[(spec for the driver, kind, what the one line must contain)]``."""
  name, config_flag = LAUNCHERS[launcher]
  out, notes = w["out"], os.path.join(w["user"], "notes.txt")
  good = _good_argv(launcher, w, os.path.join(out, "fresh"))
  cases = []
  # Unknown and misspelt config fields.
  if config_flag == "config":
    nested, close = (("frames.fsp", "frames.fps") if launcher == "launch.extract_features" else
                     ("optim.learnin_rate", "optim.learning_rate"))
    cases += [
        (good + ["--config.foo=1"], "flag", ["--config.foo: no such config field",
                                             "the config's sections and fields:"]),
        (good + [f"--config.{nested}=1"], "flag", [f"--config.{nested}: no such config field",
                                                   f"close names: {close}"]),
    ]
  else:
    cases += [(good + ["--config.foo=1"], "flag", ["config.foo"]),
              (good + ["--config.optim.learnin_rate=1"], "flag", ["config.optim.learnin_rate"])]
  if config_flag == "extraction_config":
    cases.append((good + ["--extraction_config=configs/extraction.py",
                          "--extraction_config.frames.fsp=1"], "flag",
                  ["--extraction_config.frames.fsp: no such config field",
                   "close names: frames.fps"]))
  # Injected OS failures at the launcher's real writes; each errno for a few launchers.
  names = list(LAUNCHERS)
  rotate = ["EROFS", "EACCES"][names.index(launcher) % 2]
  for code in ("ENOSPC", rotate):
    cases.append(({"argv": good, "fail": {"errno": code, "under": out}}, "os",
                  [common._OS_HINTS[getattr(errno, code)]]))  # pylint: disable=protected-access
  if launcher == "launch.main":  # an existing workdir: the failure is at the lock / config.json
    argv = _good_argv(launcher, w, os.path.join(out, "existing_workdir"))
    cases.append(({"argv": argv, "fail": {"errno": "ENOSPC", "under": out}}, "os",
                  [common._OS_HINTS[errno.ENOSPC]]))  # pylint: disable=protected-access
  # A directory that is a file, and an output under a file.
  cases.append((_good_argv(launcher, w, os.path.join(notes, "sub")), "os",
                ["is a file, not a directory"]))
  if launcher in ("launch.main", "launch.sweep", "launch.extract_features",
                  "launch.import_dataset", "launch.make_synthetic"):
    cases.append((_good_argv(launcher, w, notes), "os", ["is a file, not a directory"]))
  if launcher in ("launch.spot", "launch.report"):  # the run to read is a file
    argv = [a.replace(f"--workdir={w['run']}", f"--workdir={notes}")
            for a in _good_argv(launcher, w, os.path.join(out, "fresh"))]
    cases.append((argv, "os", [notes]))
  return name, cases


def _drive(launcher, specs):
  proc = subprocess.run([sys.executable, "-m", "tests.launch.launcher_driver", launcher,
                         *[json.dumps(s) for s in specs]], cwd=REPO, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith('{"code"')]
  assert len(rows) == len(specs), proc.stdout[-2000:] + proc.stderr[-2000:]
  return rows


def _error_lines(message):
  """The lines of stderr that are not logged warnings about the inputs."""
  return [l for l in message.splitlines() if l.strip() and not l.startswith("WARNING:")]


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_launcher_errors_are_one_line(world, launcher):
  name, cases = _cases(launcher, world)
  rows = _drive(launcher, [spec for spec, _, _ in cases])
  for (spec, kind, needles), row in zip(cases, rows):
    message = row["message"]
    assert "Traceback" not in message, (spec, message)
    if kind == "flag":
      # A flag error stops before any work: its one line is all of stderr.
      assert row["code"] == 2, (spec, row)
      lines = message.strip().splitlines()
      assert len(lines) == 1, (spec, message)
      assert lines[0].startswith(f"{name}: usage error: "), (spec, message)
    else:
      assert row["code"] == 1, (spec, row)
      lines = _error_lines(message)
      assert len(lines) == 1, (spec, message)
      assert lines[0].startswith(f"{name}: "), (spec, message)
    for needle in needles:
      assert needle in lines[0], (spec, needle, message)
  # Nothing was written where the writes failed (beyond what the test made).
  assert sorted(os.listdir(world["out"])) == ["existing_workdir"]
  assert os.listdir(os.path.join(world["out"], "existing_workdir")) == []


def test_read_only_directory_for_real(world, tmp_path):
  """A real ``chmod 0o500`` directory: one line with the permission advice."""
  if os.geteuid() == 0:
    pytest.skip("running as root: chmod 0o500 does not stop root from writing; the same "
                "EACCES/EROFS failures are injected in test_launcher_errors_are_one_line")
  ro = tmp_path / "read_only"
  ro.mkdir()
  (ro / "workdir").mkdir()
  ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
  (ro / "workdir").chmod(stat.S_IRUSR | stat.S_IXUSR)
  hint = common._OS_HINTS[errno.EACCES]  # pylint: disable=protected-access
  try:
    for launcher, targets in (("launch.main", ["workdir", "new_workdir"]),
                              ("launch.make_synthetic", ["new_dataset"]),
                              ("launch.evaluate", ["metrics"])):
      name = LAUNCHERS[launcher][0]
      rows = _drive(launcher, [_good_argv(launcher, world, str(ro / t)) for t in targets])
      for row in rows:
        lines = _error_lines(row["message"])
        assert row["code"] == 1 and "Traceback" not in row["message"], row
        assert len(lines) == 1 and lines[0].startswith(f"{name}: ") and hint in lines[0], row
  finally:
    ro.chmod(stat.S_IRWXU)
    (ro / "workdir").chmod(stat.S_IRWXU)


def _interrupt(cmd, ready, env=None, timeout=300, signum=signal.SIGINT, poll=0.2, delay=0.0):
  """Starts ``cmd``, sends ``signum`` ``delay`` seconds after ``ready()`` is true (checked every
  ``poll`` seconds); ``(exit status, stderr)``."""
  with tempfile.TemporaryFile("w+") as err:
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err,
                            text=True)
    try:
      deadline = time.time() + timeout
      while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(poll)
      time.sleep(delay)
      assert proc.poll() is None, "ended before it could be interrupted"
      assert ready(), "never got ready"
      proc.send_signal(signum)
      code = proc.wait(timeout=120)
    finally:
      if proc.poll() is None:
        proc.kill()
    err.seek(0)
    return code, err.read()


@pytest.mark.parametrize("signum,status,word", [(signal.SIGINT, 130, "interrupted"),
                                                 (signal.SIGTERM, 143, "terminated")],
                         ids=["ctrl_c", "sigterm"])
def test_a_signal_to_a_training_run_is_one_line_with_its_status(tmp_path, signum, status, word):
  """SIGINT or SIGTERM in the middle of training: one line saying how to resume, exit status
  130 / 143, no KeyboardInterrupt traceback, the lock released."""
  workdir = tmp_path / "run"
  ckpts = workdir / "fold_00" / "checkpoints"
  env = dict(os.environ, JAX_PLATFORMS="cpu", PWES_COMPILE_CACHE=os.path.join(
      tempfile.gettempdir(), "pwes_jax_test_xla_cache"))
  env.pop("XLA_FLAGS", None)
  code, err = _interrupt(
      [sys.executable, "-m", "launch.main", "--config=configs/synthetic.py:tiny",
       f"--workdir={workdir}", "--folds=0", "--config.optim.steps=100000",
       "--config.checkpoint.every_steps=5", "--config.mplg.pretrain_steps=4"],
      lambda: ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir()), env=env,
      signum=signum)
  lines = [l for l in err.splitlines() if l.strip()]
  assert code == status, err[-3000:]
  assert lines[-1] == (f"launch.main: {word}; rerun the same command to resume (finished "
                       "folds are kept)"), err[-3000:]
  assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
  assert not (workdir / "run.lock").exists()


@pytest.mark.parametrize("delay", [0.01, 0.1], ids=["10ms", "100ms"])
def test_ctrl_c_after_the_last_fold_is_an_interrupt(tmp_path, tiny_run, delay):
  """SIGINT a moment after the last fold's fold.json, while the run evaluates: status 130 and
  the one line, not a run that goes on to exit 0 (the signal lands in a weakref callback, where
  Python swallows the handler's exception); the lock released; the rerun ends with the
  uninterrupted run's predictions."""
  workdir = tmp_path / "run"
  record = workdir / "fold_00" / "fold.json"
  env = dict(os.environ, JAX_PLATFORMS="cpu", PWES_COMPILE_CACHE=os.path.join(
      tempfile.gettempdir(), "pwes_jax_test_xla_cache"))  # the fake devices of tiny_run
  cmd = [sys.executable, "-m", "launch.main", "--config=configs/synthetic.py:tiny",
         f"--workdir={workdir}", "--folds=0", "--config.optim.steps=6"]
  code, err = _interrupt(cmd, record.exists, env=env, poll=0.002, delay=delay)
  # 130 with the line; or, when the signal lands after Python has finished and restored the
  # default action, the process is killed by it (a shell reports 130 too). Never 0.
  assert code in (130, -signal.SIGINT), err[-3000:]
  if code == 130:
    assert err.splitlines()[-1].startswith("launch.main: interrupted; rerun"), err[-3000:]
  assert not (workdir / "run.lock").exists()
  rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  with open(workdir / "predictions.json") as f, open(
      os.path.join(tiny_run, "predictions.json")) as g:
    assert json.load(f) == json.load(g)


def test_ctrl_c_stops_concurrently_trained_folds_at_once(tmp_path):
  """SIGINT while two folds train in threads (``loso.concurrent_folds=2``): both stop before
  their next step (no fold finishes after the signal), one line, status 130."""
  workdir = tmp_path / "run"
  env = dict(os.environ, JAX_PLATFORMS="cpu", PWES_COMPILE_CACHE=os.path.join(
      tempfile.gettempdir(), "pwes_jax_test_xla_cache"))
  env.pop("XLA_FLAGS", None)

  def both_training():
    return all((workdir / f"fold_0{f}" / "checkpoints").is_dir()
               and any(p.name.isdigit() for p in (workdir / f"fold_0{f}" / "checkpoints").iterdir())
               for f in (1, 2))

  code, err = _interrupt(
      [sys.executable, "-m", "launch.main", "--config=configs/synthetic.py:tiny",
       f"--workdir={workdir}", "--folds=0-2", "--config.optim.steps=600",
       "--config.checkpoint.every_steps=5", "--config.mplg.pretrain_steps=4",
       "--config.loso.concurrent_folds=2"], both_training, env=env)
  assert code == 130, err[-3000:]
  assert err.splitlines()[-1].startswith("launch.main: interrupted"), err[-3000:]
  assert "Traceback" not in err, err[-3000:]
  assert (workdir / "fold_00" / "fold.json").exists()  # trained alone, before the threads
  assert not (workdir / "fold_01" / "fold.json").exists()
  assert not (workdir / "fold_02" / "fold.json").exists()
  assert not (workdir / "run.lock").exists()


_SWALLOWED = """
import atexit, os, signal, sys, time, weakref
from launch import common
common.flags_parser("report")(["report"])
flag = sys.argv[1]

def kill_myself(*unused):  # the handler runs inside this function, whose exceptions are swallowed
  os.kill(os.getpid(), signal.{signal})
  for _ in range(20):
    time.sleep(0.01)

if sys.argv[2] == "weakref":
  class Thing:
    pass
  thing = Thing()
  ref = weakref.ref(thing, kill_myself)
  del thing
  for _ in range(300):  # the work that must not run on after the signal
    time.sleep(0.01)
  open(flag, "w").close()
else:
  atexit.register(kill_myself)
"""


@pytest.mark.parametrize("where", ["weakref", "atexit"])
@pytest.mark.parametrize("signame,status,word", [("SIGINT", 130, "interrupted"),
                                                 ("SIGTERM", 143, "terminated")])
def test_a_signal_python_swallows_still_ends_the_launcher(tmp_path, where, signame, status,
                                                          word):
  """The signal's handler raising inside a weakref callback or an atexit function (Python
  reports such exceptions and goes on): the launcher still ends with the line and the status,
  and the work after the callback does not run."""
  flag = tmp_path / "ran_on"
  proc = subprocess.run([sys.executable, "-c", _SWALLOWED.replace("{signal}", signame),
                         str(flag), where], cwd=REPO, capture_output=True, text=True,
                        timeout=60)
  assert proc.returncode == status, proc.stderr[-2000:]
  assert proc.stderr == f"report: {word}\n", proc.stderr[-2000:]
  assert not flag.exists()


def test_ctrl_c_of_any_launcher_is_one_line_with_status_130():
  """The handler every launcher's flags parser installs: ``<name>: interrupted``, status 130."""
  with tempfile.TemporaryDirectory() as d:
    flag = os.path.join(d, "ready")
    code, err = _interrupt(
        [sys.executable, "-c", "import time\n"
         "from launch import common\n"
         "common.flags_parser('report')(['report'])\n"
         f"open({flag!r}, 'w').close()\n"
         "time.sleep(120)\n"], lambda: os.path.exists(flag))
  assert code == 130 and err == "report: interrupted\n", (code, err)
