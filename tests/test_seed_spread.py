"""pwes_jax/seed_spread.py and launch/seed_spread.py: mean ± sd over seeds, paired t-tests."""

import json
import math
import os
import statistics
import subprocess
import sys

import pytest

from configs import sweeps
from pwes_jax import report
from pwes_jax import seed_spread

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _result(f1, f05=0.1, f10=0.2, fp=0.3, rec=0.4, pre=0.5):
  point = {"rows": {"overall": {"recall": rec, "precision": pre, "f1": f1}},
           "f1_0.5": f05, "f1_1.0": f10, "f1_p": fp}
  return {"tuned": point, "honest_cross_fold": dict(point), "honest_train_subjects": dict(point)}


def test_spread_is_the_plain_mean_and_sample_sd():
  runs = {"A": [_result(0.2, rec=0.1), _result(0.3, rec=0.2), _result(0.7, rec=0.6)]}
  s = next(x for x in seed_spread.spread_rows(runs) if x.point == "tuned")
  f1, rec = report.COLUMNS.index("F1"), report.COLUMNS.index("REC")
  assert s.mean[f1] == pytest.approx(statistics.mean([0.2, 0.3, 0.7]))
  assert s.sd[f1] == pytest.approx(statistics.stdev([0.2, 0.3, 0.7]))
  assert s.sd[rec] == pytest.approx(statistics.stdev([0.1, 0.2, 0.6]))
  assert s.values.shape == (3, len(report.COLUMNS))


@pytest.mark.parametrize("b_f1, told_apart", [
    ((0.3, 0.5, 0.7), False),   # diffs 0.1, 0.2, 0.3: t = 0.2 / (0.1 / sqrt 3) = 3.46 < 4.30
    ((0.3, 0.41, 0.52), True),  # diffs 0.10, 0.11, 0.12: t = 19.1
    ((0.1, 0.3, 0.5), False),   # diffs -0.1, 0.0, 0.1: t = 0
    ((0.3, 0.4, 0.5), True),    # diffs all 0.1: sd 0, t = inf
])
def test_paired_t_test_by_hand(b_f1, told_apart):
  runs = {"A": [_result(f) for f in (0.2, 0.3, 0.4)], "B": [_result(f) for f in b_f1]}
  d = {x.column: x for x in seed_spread.paired_differences(runs, "A", "B", "tuned")}["F1"]
  diffs = [b - a for a, b in zip((0.2, 0.3, 0.4), b_f1)]
  assert d.per_seed == pytest.approx(diffs)
  assert d.mean == pytest.approx(statistics.mean(diffs))
  assert d.critical == pytest.approx(4.302652729911275)
  sd = statistics.stdev(diffs)
  if sd > 1e-12:
    assert d.t == pytest.approx(statistics.mean(diffs) / (sd / math.sqrt(3)))
  assert d.distinguishable is told_apart


def test_rows_with_different_seed_counts_are_refused():
  runs = {"A": [_result(0.2)] * 3, "B": [_result(0.2)] * 2}
  with pytest.raises(ValueError, match="'A' and 'B' have 3 and 2 seeds"):
    seed_spread.paired_differences(runs, "A", "B", "tuned")


def test_markdown_marks_only_the_differences_the_seeds_tell_apart():
  runs = {"A": [_result(f, rec=0.3) for f in (0.2, 0.3, 0.4)],
          "B": [_result(f, rec=r) for f, r in ((0.3, 0.1), (0.41, 0.5), (0.52, 0.2))]}
  text = seed_spread.markdown(runs)
  assert "| A | tuned | 0.300 ± 0.100 |" in text
  line = next(l for l in text.splitlines() if l.startswith("| B - A | tuned |"))
  cells = [c.strip() for c in line.strip("|").split("|")][2:]
  assert cells[0] == "0.110 ± 0.010 *"          # F1: told apart
  assert not cells[3].endswith("*")             # REC: -0.2, +0.2, -0.1: not told apart
  assert "t(0.975, 2) = 4.30" in text


def _write(workdir, name, result):
  d = sweeps.entry_dir(str(workdir), name)
  os.makedirs(d)
  with open(os.path.join(d, "results.json"), "w") as f:
    json.dump(result, f)


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "launch.seed_spread", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=120)


def test_cli_reads_every_row_of_every_seed(tmp_path):
  rows = [name for name, _ in sweeps.get_sweep("table1")]
  dirs = []
  for s in range(3):
    w = tmp_path / f"seed{s}"
    dirs.append(str(w))
    for k, name in enumerate(rows):
      _write(w, name, _result(0.1 * k + 0.01 * s))
  out = tmp_path / "spread.md"
  proc = _cli("--sweep=table1", f"--workdirs={','.join(dirs)}", f"--output={out}")
  assert proc.returncode == 0, proc.stderr
  for name in rows:
    assert f"| {name} | tuned |" in proc.stdout
  for a, b in zip(rows, rows[1:]):
    assert f"| {b} - {a} | tuned |" in proc.stdout
  assert f"| {rows[-1]} - {rows[0]} | tuned |" in proc.stdout
  assert out.read_text() == proc.stdout
  # Remove one seed's row: a one-line error naming the file.
  os.remove(os.path.join(sweeps.entry_dir(dirs[1], "+PPLM"), "results.json"))
  proc = _cli("--sweep=table1", f"--workdirs={','.join(dirs)}", "--output=" + str(out),
              "--overwrite")
  assert proc.returncode != 0 and "Traceback" not in proc.stderr
  assert "seed1/plus_PPLM/results.json: no results for row '+PPLM'" in proc.stderr


def test_cli_refuses_a_workdir_twice_the_same_seeds_and_no_workdir(tmp_path):
  dirs = []
  for s in range(2):
    w = tmp_path / f"seed{s}"
    dirs.append(str(w))
    for name, _ in sweeps.get_sweep("table8"):
      _write(w, name, _result(0.2))
      with open(os.path.join(sweeps.entry_dir(str(w), name), "config.json"), "w") as f:
        json.dump({"seed": 0, "data": {"point_seed": 0}}, f)  # both workdirs: seed 0
  for args, needle in (
      ([f"--workdirs={dirs[0]},{dirs[0]}"], "more than once"),
      ([f"--workdirs={dirs[0]},{dirs[1]}"], "the same seed twice is no spread"),
      (["--workdirs="], "--workdirs is empty"),
  ):
    proc = _cli("--sweep=table8", *args)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert needle in proc.stderr, proc.stderr
  one = _cli("--sweep=table8", f"--workdirs={dirs[0]}")
  assert one.returncode == 0 and "One seed: no spread" in one.stdout, one.stderr
  assert "-0.000" not in one.stdout


def test_pseudo_label_quality_is_summarised_over_seeds():
  def res(p):
    return {"pseudo_labels": {"me": {"precision": p, "recall": 0.5},
                              "mae": {"precision": 0.4, "recall": 0.2},
                              "bg": {"precision": 0.9, "recall": 0.3}}}
  text = seed_spread.label_quality_markdown({"+MPLG": [res(0.2), res(0.4)]})
  (row,) = [line for line in text.splitlines() if line.startswith("| +MPLG")]
  cells = [c.strip() for c in row.strip("|").split("|")]
  assert cells[1] == "0.300 ± 0.141" and cells[2] == "0.500 ± 0.000"
  assert seed_spread.label_quality_markdown({"old": [{}, {}]}) == ""
