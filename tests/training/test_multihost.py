"""Two processes with two CPU devices each form one 4-device fold mesh (gloo collectives): each
trains, checkpoints and resumes its own folds; damage and kills of either process's folds, a lost
peer, a busy workdir and mismatched configs end as one line each."""

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import time

from absl import logging as absl_logging
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import synthetic
from pwes_jax import train
from pwes_jax.workdir import checkpointing
from pwes_jax.workdir import lock
from pwes_jax.workdir import run_files

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OVERRIDES = {"optim.steps": 6, "mplg.pretrain_steps": 3, "checkpoint.every_steps": 3,
             "log_every": 3}


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _command(workdir, data, port, i, *flags):
  """``launch.main`` of process ``i`` of a two-process tiny run over gloo (:data:`OVERRIDES`)."""
  return [sys.executable, "-m", "launch.main", "--config=configs/synthetic.py:tiny",
          f"--workdir={workdir}", "--folds=0-3", "--config.loso.parallel_folds=4",
          f"--config.data.cache_dir={data}", f"--coordinator_address=127.0.0.1:{port}",
          "--num_processes=2", f"--process_id={i}", "--cpu_collectives=gloo",
          "--heartbeat_timeout_s=10", "--shutdown_timeout_s=10",
          *[f"--config.{k}={v}" for k, v in OVERRIDES.items()], *flags]


_ENV = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")


def _run_two(workdir, data, timeout=600):
  """Runs both processes to the end; their logs (each must exit 0)."""
  port = _free_port()
  procs = [subprocess.Popen(_command(workdir, data, port, i), cwd=REPO, env=_ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  try:
    logs = [p.communicate(timeout=timeout)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  return logs


def _step_holds_arrays(step_dir):
  """Whether an Orbax step directory holds the tree's metadata and its array data (the bug: a
  step saved by process 1 held only ``_CHECKPOINT_METADATA`` and two ``commit_success.txt``)."""
  data = glob.glob(os.path.join(step_dir, "default", "ocdbt.process_*", "d", "*"))
  return (os.path.isfile(os.path.join(step_dir, "default", "_METADATA"))
          and sum(os.path.getsize(f) for f in data) > 50_000)


def _restore_latest(workdir, fold):
  """The fold's latest checkpoint restored in this (single) process, onto its first device."""
  manager = checkpointing.make_manager(run_files.checkpoint_dir(workdir, fold), read_only=True)
  try:
    step = manager.latest_step()
    meta = manager.item_metadata(step)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda l: jax.ShapeDtypeStruct(l.shape, l.dtype, sharding=device),
                            getattr(meta, "tree", meta))
    return step, manager.restore(step, args=ocp.args.PyTreeRestore(
        item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract)))
  finally:
    manager.close()


def _attention(workdir, fold):
  return {name: d["attention"] for name, d in run_files.load_outputs(
      run_files.outputs_path(workdir, fold)).items()}


def _assert_same_outputs(a, b, folds):
  for fold in folds:
    x, y = _attention(a, fold), _attention(b, fold)
    assert sorted(x) == sorted(y)
    for name in x:
      np.testing.assert_allclose(x[name], y[name], rtol=2e-4, atol=2e-5,
                                 err_msg=f"fold {fold} {name}")


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
  """An uninterrupted two-process run of folds 0-3 (process 0 trains folds 0-1, process 1 folds
  2-3), and its logs."""
  root = tmp_path_factory.mktemp("multihost")
  data, workdir = str(root / "data"), str(root / "full")
  logs = _run_two(workdir, data)
  return dict(root=root, data=data, workdir=workdir, logs=logs)


def _copy(run, name):
  dst = str(run["root"] / name)
  shutil.copytree(run["workdir"], dst)
  return dst


def test_two_processes_train_their_own_folds_like_one_process(two_process_run):
  """Both processes train and checkpoint their own folds; every fold's checkpoints hold their
  arrays (process 1's included) and restore in one process; the outputs equal a one-process
  run's."""
  workdir, logs = two_process_run["workdir"], two_process_run["logs"]
  assert "fold-steps/s" in logs[0] and "fold-steps/s" in logs[1]
  assert "| +MPLG+DFCL | tuned |" in logs[0]  # only process 0 reports
  assert "| +MPLG+DFCL | tuned |" not in logs[1]
  for fold in range(4):
    for step in (3, 6):
      step_dir = os.path.join(run_files.checkpoint_dir(workdir, fold), str(step))
      assert _step_holds_arrays(step_dir), (fold, step, os.listdir(step_dir))
    step, state = _restore_latest(workdir, fold)
    assert step == 6 and int(state["step"]) == 6

  single = str(two_process_run["root"] / "single")
  train.train_and_evaluate(_config(two_process_run["data"]), single)
  _assert_same_outputs(single, workdir, range(4))


def _config(data):
  """The config of the two-process runs, for a run in this (single) process."""
  c = synthetic.get_config("tiny")
  for k, v in OVERRIDES.items():
    section, _, field = k.rpartition(".")
    (c[section] if section else c)[field] = v
  c.loso.folds = "0-3"
  c.loso.parallel_folds = 4
  c.data.cache_dir = data
  return c


def test_a_single_process_rerun_rebuilds_a_fold_process_1_wrote(two_process_run, caplog):
  """A single-process rerun of the two-process workdir with process 1's fold 2 record damaged:
  it restores the fold's last step as process 1 wrote it (nothing set aside, no step retrained),
  rebuilds its train_summary from process 1's metrics log, and writes the same outputs."""
  w = _copy(two_process_run, "single_rerun")
  with open(run_files.fold_record_path(w, 2), "w") as f:
    f.write('{"finished": tr')
  absl_logging.get_absl_logger().propagate = True
  with caplog.at_level("WARNING"):
    train.train_and_evaluate(_config(two_process_run["data"]), w)
  warned = "\n".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
  assert "cannot be restored" not in warned and "train_summary" not in warned, warned
  assert sorted(os.listdir(run_files.checkpoint_dir(w, 2))) == ["3", "6"]
  before = run_files.read_fold_record(two_process_run["workdir"], 2)["train_summary"]
  after = run_files.read_fold_record(w, 2)["train_summary"]
  assert after.keys() == before.keys()
  for k, v in before.items():
    assert after[k] == pytest.approx(v, rel=1e-6), k
  _assert_same_outputs(two_process_run["workdir"], w, [2])


def test_damaged_folds_of_both_processes_are_rebuilt(two_process_run):
  """A rerun with a damaged fold.json of a process-0 fold (1) and of a process-1 fold (2), and a
  process-1 fold (3) killed before its outputs with its last step damaged: process 0 sets the
  records aside and rebuilds fold 2 from the checkpoint process 1 wrote; process 1 sets the
  damaged step aside and retrains fold 3 from step 3; the outputs are the uninterrupted run's."""
  w = _copy(two_process_run, "damaged")
  for fold in (1, 2):
    with open(run_files.fold_record_path(w, fold), "w") as f:
      f.write('{"finished": tr')
  os.remove(run_files.fold_record_path(w, 3))
  os.remove(run_files.outputs_path(w, 3))
  step6 = os.path.join(run_files.checkpoint_dir(w, 3), "6")
  data_files = glob.glob(os.path.join(step6, "default", "ocdbt.process_*", "d", "*"))
  with open(max(data_files, key=os.path.getsize), "r+b") as f:
    f.truncate(100)
  logs = _run_two(w, two_process_run["data"])
  assert logs[0].count("set aside as") == 2, logs[0][-3000:]  # the two fold.json
  assert "fold.json" in logs[0] and "checkpoint step" not in logs[0], logs[0][-3000:]
  assert logs[1].count("set aside as") == 1, logs[1][-3000:]  # fold 3's step 6
  assert "checkpoint step 6 cannot be restored" in logs[1], logs[1][-3000:]
  for log in logs:
    assert "folds [0] already finished" in log, log[-3000:]
    assert "Traceback" not in log and "sync_global_devices" not in log, log[-3000:]
  for fold in (1, 2):
    assert len(glob.glob(run_files.fold_record_path(w, fold) + ".damaged-*")) == 1
  assert len(glob.glob(os.path.join(run_files.fold_dir(w, 3), "checkpoint_6.damaged-*"))) == 1
  assert all(run_files.read_fold_record(w, f)["finished"] for f in range(4))
  _assert_same_outputs(two_process_run["workdir"], w, range(4))


def test_a_process_killed_after_its_first_checkpoint_resumes_to_the_same_predictions(
    two_process_run, tmp_path):
  """Process 1 SIGKILLed once its folds hold their step-3 checkpoint: process 0 ends within
  seconds with one line; both processes started again resume (process 1's folds from the
  checkpoint it wrote) and end with the uninterrupted run's outputs and predictions."""
  w, data = str(tmp_path / "w"), two_process_run["data"]
  port = _free_port()
  logs = [open(tmp_path / f"log{i}", "w+") for i in range(2)]
  procs = [subprocess.Popen(_command(w, data, port, i), cwd=REPO, env=_ENV, stdout=logs[i],
                            stderr=subprocess.STDOUT, text=True) for i in range(2)]
  first = os.path.join(run_files.checkpoint_dir(w, 2), "3")
  try:
    deadline = time.time() + 300
    while not os.path.isdir(first) and time.time() < deadline:
      assert procs[1].poll() is None, "process 1 ended before its first checkpoint"
      time.sleep(0.01)
    procs[1].kill()
    t0 = time.time()
    procs[1].wait(timeout=30)
    procs[0].wait(timeout=60)
    seconds = time.time() - t0
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  logs[0].seek(0)
  log0 = logs[0].read()
  assert not os.path.exists(run_files.fold_record_path(w, 2)), "killed too late to resume"
  assert procs[0].returncode == 1 and seconds < 30, (seconds, log0[-3000:])
  assert log0.strip().splitlines()[-1].startswith(
      "launch.main: process 1 of 2 stopped while this process was at "), log0[-3000:]
  for noise in ("Traceback", "Check failure", "Fatal Python error"):
    assert noise not in log0, log0[-3000:]
  assert not os.path.exists(os.path.join(w, run_files.LOCK_FILE))
  assert _step_holds_arrays(first)
  _run_two(w, data)
  _assert_same_outputs(two_process_run["workdir"], w, range(4))
  with open(os.path.join(w, "predictions.json")) as f, open(
      os.path.join(two_process_run["workdir"], "predictions.json")) as g:
    assert json.load(f) == json.load(g)


def _launch_two(tmp_path, per_process_flags, timeout=300):
  """Starts a two-process tiny run; returns ``[(returncode, log, seconds)]``. A process still
  running after ``timeout`` seconds (a hang) fails the test."""
  port = _free_port()
  t0 = time.time()
  procs = [subprocess.Popen(
      _command(tmp_path / "w", tmp_path / "data", port, i, *per_process_flags[i]),
      cwd=REPO, env=_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  out = []
  for p in procs:
    try:
      log = p.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
      p.kill()
      pytest.fail(f"process still running after {timeout} s: {p.communicate()[0][-3000:]}")
    out.append((p.returncode, log, time.time() - t0))
  return out


def test_one_bad_dataset_dir_ends_both_processes_with_its_message(tmp_path):
  bad = f"--config.data.dataset_dir={tmp_path / 'nope'}"
  results = _launch_two(tmp_path, [[], [bad]])
  for rc, log, seconds in results:
    assert rc not in (0, None), log[-3000:]
    assert seconds < 150, (seconds, log[-2000:])  # both end promptly, not at the timeout
    assert "dataset.json" in log and "missing" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
  assert "process 1 failed at start" in results[0][1]


def test_a_workdir_in_use_ends_both_processes_at_start(tmp_path):
  """Process 0 takes the workdir lock for the run: a lock held by a live process (this test's)
  ends both processes at start with the busy message naming it; the lock is left as it was
  and no fold directory is made."""
  w = tmp_path / "w"
  w.mkdir()
  lock_file = lock.lock_path(str(w))
  holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": "2026-12-01 00:00:00"}
  with open(lock_file, "w") as f:
    json.dump(holder, f)
  results = _launch_two(tmp_path, [[], []])
  for rc, log, seconds in results:
    assert rc not in (0, None), log[-3000:]
    assert seconds < 150, (seconds, log[-2000:])  # both end promptly, not at the timeout
    assert f"workdir {w} is in use by process {os.getpid()}" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
  assert "process 0 failed at start" in results[1][1]
  with open(lock_file) as f:
    assert json.load(f) == holder
  assert not os.path.exists(run_files.fold_dir(str(w), 0))


def test_processes_with_different_configs_are_refused(tmp_path):
  """A process started with another learning rate: both refuse at start, naming the field and
  both values."""
  results = _launch_two(tmp_path, [[], ["--config.optim.learning_rate=0.01"]])
  for rc, log, seconds in results:
    assert rc not in (0, None), log[-3000:]
    assert seconds < 150, (seconds, log[-2000:])  # both end promptly, not at the timeout
    assert ("process 1 runs another config than process 0 (first difference: "
            "optim.learning_rate: 0.01 on process 1, 0.001 on process 0)") in log, log[-3000:]
  assert not os.path.exists(run_files.fold_dir(str(tmp_path / "w"), 0))


@pytest.mark.parametrize("signame", ["SIGKILL", "SIGTERM"])
def test_a_lost_peer_ends_the_run_in_seconds_with_one_line_each(tmp_path, signame):
  """Process 1 killed (or terminated) mid-run: process 0 ends within 30 s with one line naming
  process 1 and how to resume, no abort, no C++ check failure, the lock released; a terminated
  process 1 says so in one line and exits 143."""
  import signal  # pylint: disable=g-import-not-at-top  (only this test sends signals)
  w = tmp_path / "w"
  port = _free_port()
  procs = [subprocess.Popen(
      _command(w, tmp_path / "data", port, i, "--config.optim.steps=100000",
               "--config.log_every=1"),
      cwd=REPO, env=_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  try:
    deadline = time.time() + 300
    while not (w / "metrics.p1.jsonl").exists() and time.time() < deadline:
      assert all(p.poll() is None for p in procs), procs[0].communicate()[0][-2000:]
      time.sleep(0.2)
    t0 = time.time()
    procs[1].send_signal(getattr(signal, signame))
    log1 = procs[1].communicate(timeout=30)[0]
    log0 = procs[0].communicate(timeout=60)[0]
    seconds = time.time() - t0
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert procs[0].returncode == 1 and seconds < 30, (seconds, log0[-3000:])
  last = log0.strip().splitlines()[-1]
  assert last.startswith("launch.main: process 1 of 2 stopped while this process was at "), last
  assert last.endswith("finished folds and checkpoints are kept: start every process again with "
                       "the same command to resume"), last
  for noise in ("Traceback", "Check failure", "Fatal Python error", "Aborted"):
    assert noise not in log0, log0[-3000:]
  assert not (w / run_files.LOCK_FILE).exists()
  if signame == "SIGTERM":
    assert procs[1].returncode == 143, log1[-2000:]
    assert log1.strip().splitlines()[-1] == ("launch.main: terminated; rerun the same command "
                                            "to resume (finished folds are kept)"), log1[-2000:]
  else:
    assert procs[1].returncode == -signal.SIGKILL
