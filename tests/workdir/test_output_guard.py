"""Every launcher refuses output paths it must not write, before any work, and leaves the
target byte-identical: an input, a file inside a dataset directory, a run's own file, the
other output of the same command, an existing file without --overwrite, a directory."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pwes_jax.workdir import output_guard
from tests.data import test_layout

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _drive(launcher, *argvs):
  proc = subprocess.run([sys.executable, "-m", "tests.launch.launcher_driver", launcher,
                         *[json.dumps(a) for a in argvs]], cwd=REPO, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
  assert len(rows) == len(argvs), proc.stdout + proc.stderr[-2000:]
  return rows


@pytest.fixture(scope="module")
def world(tiny_run, tmp_path_factory):
  """A copy of a trained run, its dataset outside it, and unrelated user files."""
  root = str(tmp_path_factory.mktemp("world"))
  run = os.path.join(root, "run")
  shutil.copytree(tiny_run, run)
  data_root = os.path.join(run, "data")
  dataset = os.path.join(root, "dataset")
  shutil.copytree(os.path.join(data_root, os.listdir(data_root)[0]), dataset)
  user = os.path.join(root, "user")
  os.makedirs(os.path.join(user, "a_dir"))
  for name, text in (("notes.txt", "mine\n"), ("preds.json", open(
      os.path.join(run, "predictions.json")).read()), ("report.md", "# my report\n")):
    with open(os.path.join(user, name), "w") as f:
      f.write(text)
  feats = os.path.join(dataset, "features")
  shutil.copy(os.path.join(feats, sorted(os.listdir(feats))[0]), os.path.join(user, "x.npz"))
  np.savez(os.path.join(user, "weights.npz"), a=np.zeros(3))
  return dict(root=root, run=run, dataset=dataset, user=user)


def _check_refused(world, launcher, cases):
  before = test_layout.snapshot(world["root"])
  rows = _drive(launcher, *[argv for argv, _ in cases])
  for (argv, expect), row in zip(cases, rows):
    assert row["code"] not in (0, None), (argv, row)
    assert expect in row["message"], (argv, row["message"])
    assert "Traceback" not in row["message"]
  after = test_layout.snapshot(world["root"])
  assert after == before, sorted(k for k in after.keys() | before.keys()
                                 if after.get(k) != before.get(k))[:5]


def test_evaluate_refuses_forbidden_outputs(world):
  d, run, user = world["dataset"], world["run"], world["user"]
  base = [f"--dataset_dir={d}", f"--predictions={user}/preds.json"]
  _check_refused(world, "launch.evaluate", [
      (base + [f"--output={d}/annotations.csv"], "inside the dataset directory"),
      (base + [f"--output={d}/new_metrics.json"], "inside the dataset directory"),
      (base + [f"--output={user}/preds.json"], "the input --predictions"),
      (base + [f"--export_csv={user}/preds.json"], "the input --predictions"),
      (base + [f"--output={user}/same.json", f"--export_csv={user}/same.json"],
       "are the same file"),
      (base + [f"--output={user}/notes.txt"], "pass --overwrite"),
      (base + [f"--output={user}/notes.txt", "--overwrite", f"--export_csv={run}/config.json"],
       "own files"),
      (base + [f"--output={user}/a_dir"], "is a directory"),
      (base + [f"--output={user}/notes.txt/x.json"], "is a file, not a directory"),
      ([f"--dataset_dir={d}", f"--predictions={run}", f"--output={run}/predictions.json",
        "--overwrite"], "own files"),
      (base + [f"--output={run}/results.json", "--overwrite"], "own files"),
  ])


def test_spot_refuses_forbidden_outputs(world):
  run, user, d = world["run"], world["user"], world["dataset"]
  base = [f"--workdir={run}", f"--features={user}/x.npz"]
  _check_refused(world, "launch.spot", [
      (base + [f"--output={user}/x.npz", "--overwrite"], "the input --features"),
      (base + [f"--output={run}/config.json", "--overwrite"], "own files"),
      (base + [f"--output={run}/fold_00/outputs.npz", "--overwrite"], "own files"),
      (base + [f"--output={user}/notes.txt"], "pass --overwrite"),
      (base + [f"--output={user}/a_dir"], "is a directory"),
      (base + [f"--output={d}/features/spots.json"], "inside the dataset directory"),
  ])


def test_report_refuses_forbidden_outputs(world):
  run, user, d = world["run"], world["user"], world["dataset"]
  base = [f"--workdir={run}"]
  _check_refused(world, "launch.report", [
      (base + [f"--output={run}/results.json", "--overwrite"], "own files"),
      (base + [f"--output={run}/config.json", "--overwrite"], "own files"),
      (base + [f"--output={user}/report.md"], "pass --overwrite"),
      (base + [f"--output={user}/a_dir"], "is a directory"),
      (base + [f"--output={d}/report.md"], "inside the dataset directory"),
  ])


def test_convert_i3d_refuses_forbidden_outputs(world):
  user, d = world["user"], world["dataset"]
  _check_refused(world, "launch.convert_i3d", [
      ([f"--input={user}/weights.npz", f"--output={user}/weights.npz", "--overwrite"],
       "the input --input"),
      ([f"--input={user}/weights.npz", f"--output={user}/notes.txt"], "pass --overwrite"),
      ([f"--input={user}/weights.npz", f"--output={user}/a_dir"], "is a directory"),
      ([f"--input={user}/weights.npz", f"--output={d}/w.npz"], "inside the dataset"),
  ])


def test_dataset_writers_refuse_forbidden_output_dirs(world):
  user, d, run = world["user"], world["dataset"], world["run"]
  _check_refused(world, "launch.make_synthetic", [
      ([f"--output_dir={user}/notes.txt", "--preset=tiny"], "is a file, not a directory"),
      ([f"--output_dir={d}/sub", "--preset=tiny", "--overwrite"], "inside the dataset"),
      ([f"--output_dir={run}", "--preset=tiny", "--overwrite"], "is a run directory"),
      ([f"--output_dir={run}/fold_00", "--preset=tiny"], "inside the run directory"),
  ])
  table = os.path.join(d, "annotations.csv")
  _check_refused(world, "launch.import_dataset", [
      (["--format=samm_lv", f"--annotations={table}", f"--features={d}/features",
        f"--output_dir={d}/features/out"], "inside the dataset"),
      (["--format=samm_lv", f"--annotations={table}", f"--features={user}",
        f"--output_dir={user}"], "overlap"),
      (["--format=samm_lv", f"--annotations={table}", f"--features={d}/features",
        f"--output_dir={user}/notes.txt"], "is a file, not a directory"),
  ])
  _check_refused(world, "launch.extract_features", [
      ([f"--videos_dir={user}", f"--output_dir={user}/notes.txt", "--random_init"],
       "is a file, not a directory"),
      ([f"--videos_dir={user}", f"--output_dir={user}", "--random_init"], "overlap"),
      ([f"--videos_dir={user}", f"--output_dir={d}/more", "--random_init"], "inside the dataset"),
  ])


def test_sweep_refuses_a_run_dir_and_a_user_report(world):
  user, run = world["user"], world["run"]
  _check_refused(world, "launch.sweep", [
      ([f"--workdir={run}", "--config=configs/synthetic.py:tiny"], "is a run directory"),
      ([f"--workdir={user}", "--config=configs/synthetic.py:tiny"], "not a sweep report"),
  ])


def test_guard_accepts_a_fresh_path_and_overwrite(tmp_path):
  (tmp_path / "old.json").write_text("{}")
  got = output_guard.check_file_outputs({"output": str(tmp_path / "old.json"),
                                         "export_csv": str(tmp_path / "new" / "x.csv")},
                                        {"predictions": str(tmp_path / "p.json")},
                                        overwrite=True)
  assert got == {"output": str(tmp_path / "old.json"),
                 "export_csv": str(tmp_path / "new" / "x.csv")}
  link = tmp_path / "link.json"
  os.symlink(tmp_path / "p.json", link)
  (tmp_path / "p.json").write_text("{}")
  with pytest.raises(output_guard.OutputPathError, match="the input --predictions"):
    output_guard.check_file_outputs({"output": str(link)},
                                    {"predictions": str(tmp_path / "p.json")}, overwrite=True)


def test_workdir_that_is_not_a_run_but_holds_run_files_is_refused(world):
  """A user's own results.json / predictions.json / metrics.jsonl / fold_XX in a directory
  without config.json: launch.main (and a sweep entry) refuse it, naming the path and files."""
  root = world["root"]
  mine = os.path.join(root, "mine")
  os.makedirs(os.path.join(mine, "fold_03"))
  for name, text in (("predictions.json", '{"mine": 1}'), ("results.json", '{"mine": 2}'),
                     ("notes.txt", "x")):
    with open(os.path.join(mine, name), "w") as f:
      f.write(text)
  sweep = os.path.join(root, "sweep")
  os.makedirs(os.path.join(sweep, "plus_PPLM"))
  with open(os.path.join(sweep, "plus_PPLM", "metrics.jsonl"), "w") as f:
    f.write('{"mine": 3}\n')
  tiny = "--config=configs/synthetic.py:tiny"
  _check_refused(world, "launch.main", [
      ([tiny, f"--workdir={mine}"],
       f"{mine} is not a run directory (no config.json) but holds fold_03, predictions.json, "
       "results.json"),
  ])
  _check_refused(world, "launch.sweep", [
      ([tiny, f"--workdir={sweep}", "--sweep=table1"],
       f"sweep entry +PPLM's directory {sweep}/plus_PPLM is not a run directory"),
  ])


def test_workdir_guard_allows_empty_user_and_damaged_config_dirs(tmp_path):
  """An empty directory, one with unrelated files only, a run's own directory, and a run whose
  config.json was set aside (config.json.damaged-<time>) are all valid workdirs."""
  empty, user, run, damaged = (tmp_path / n for n in ("empty", "user", "run", "damaged"))
  for d in (empty, user, run, damaged):
    d.mkdir()
  (user / "notes.txt").write_text("x")
  (user / "report.md").write_text("# mine\n")
  (user / "data").mkdir()
  for d in (run, damaged):
    (d / "results.json").write_text("{}")
    (d / "fold_00").mkdir()
  (run / "config.json").write_text("{}")
  (damaged / "config.json.damaged-20250101-000000").write_text("")
  for d in (empty, user, run, damaged, tmp_path / "new"):
    assert output_guard.check_dir_output("workdir", str(d), run_ok=True) == str(d)
  (user / "predictions.json").write_text("{}")
  with pytest.raises(output_guard.OutputPathError, match="holds predictions.json, which a run"):
    output_guard.check_dir_output("workdir", str(user), run_ok=True)


def test_existing_plots_and_set_aside_files_are_not_replaced(world):
  """launch.report --plots refuses an existing WORKDIR/plots/<video>.png before any work unless
  --overwrite; what a repair set aside (metrics.jsonl.torn, config.json.damaged-<time>,
  checkpoint_<step>.damaged-<time>) is a run's own file even with --overwrite."""
  run, user = world["run"], world["user"]
  os.makedirs(os.path.join(run, "plots"), exist_ok=True)
  png = os.path.join(run, "plots", "s01_v01.png")
  with open(png, "w") as f:
    f.write("my own plot\n")
  for name in ("metrics.jsonl.torn", "config.json.damaged-20250101-000000",
               "fold_00/checkpoint_4.damaged-20250101-000000"):
    with open(os.path.join(run, name), "w") as f:
      f.write("set aside\n")
  _check_refused(world, "launch.report", [
      ([f"--workdir={run}", "--plots=1"], f"{png} (written by --plots) exists; pass --overwrite"),
      ([f"--workdir={run}", f"--output={run}/metrics.jsonl.torn", "--overwrite"], "own files"),
      ([f"--workdir={run}", f"--output={run}/config.json.damaged-20250101-000000",
        "--overwrite"], "own files"),
  ])
  _check_refused(world, "launch.spot", [
      ([f"--workdir={run}", f"--features={user}/x.npz", "--overwrite",
        f"--output={run}/fold_00/checkpoint_4.damaged-20250101-000000"], "own files"),
      ([f"--workdir={run}", f"--features={user}/x.npz", "--overwrite",
        f"--output={run}/metrics.jsonl.torn"], "own files"),
  ])


def test_sweep_refreshes_only_its_own_report(world):
  """A report.md of another sweep is refused (not replaced by this sweep's table)."""
  other = os.path.join(world["root"], "other_sweep")
  os.makedirs(other)
  with open(os.path.join(other, "report.md"), "w") as f:
    f.write("# Sweep table2\n\n| a table |\n")
  _check_refused(world, "launch.sweep", [
      ([f"--workdir={other}", "--config=configs/synthetic.py:tiny", "--sweep=table1"],
       "is the report of another sweep ('table2'); refusing to replace it"),
  ])


def test_sweep_only_names_an_unknown_entry_before_any_work(world):
  """--only=<unknown> is one line listing the sweep's row names; nothing is written."""
  fresh = os.path.join(world["root"], "fresh_sweep")
  _check_refused(world, "launch.sweep", [
      ([f"--workdir={fresh}", "--config=configs/synthetic.py:tiny", "--sweep=table1",
        "--only=+points,+PLM"], "--only: no entry +PLM in sweep 'table1'; its entries: "
       "Video-level, +points, +PPLM, +MPLG, +MPLG+DFCL"),
  ])
  assert not os.path.exists(fresh)


def test_an_unwritable_output_fails_before_any_work(world, tmp_path):
  """A second output that cannot be written (a full disk, a read-only directory: injected
  here, as root bypasses permissions) fails before the work: evaluate leaves its first output
  unwritten, spot never runs the model; one line naming the flag and the advice."""
  d, run, user = world["dataset"], world["run"], world["user"]
  blocked = str(tmp_path / "blocked")
  os.makedirs(blocked)
  before = test_layout.snapshot(world["root"])
  rows = _drive(
      "launch.evaluate",
      {"argv": [f"--dataset_dir={d}", f"--predictions={user}/preds.json",
                f"--output={tmp_path}/metrics.json", f"--export_csv={blocked}/sub/preds.csv"],
       "fail": {"errno": "ENOSPC", "under": blocked}})
  assert rows[0]["code"] == 1
  assert rows[0]["message"].splitlines()[0] == (
      f"evaluate: --export_csv={blocked}/sub/preds.csv: the disk is full; free space and "
      "rerun (finished work is kept)"), rows[0]["message"]
  assert not os.path.exists(tmp_path / "metrics.json")
  rows = _drive("launch.spot",
                {"argv": [f"--workdir={run}", f"--features={user}/x.npz",
                          f"--output={blocked}/spots.json"],
                 "fail": {"errno": "EROFS", "under": blocked}})
  assert rows[0]["code"] == 1
  lines = [l for l in rows[0]["message"].splitlines() if not l.startswith("WARNING")]
  assert lines == [f"spot: --output={blocked}/spots.json: the file system is read-only; "
                   "choose a writable path"], rows[0]["message"]
  assert os.listdir(blocked) == []
  assert test_layout.snapshot(world["root"]) == before
