"""Tests of the run report: markdown tables, results loading, plots and the launch.report CLI."""

import json
import math
import os
import shutil
import subprocess
import sys

import pytest

from configs import synthetic
from pwes_jax import report
from pwes_jax import train
from pwes_jax.evaluation import prediction_files
from pwes_jax.evaluation import scoring
from pwes_jax.workdir import run_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = ("| run | operating point | F1(0.5) | F1(1.0) | F1(p) | REC | PRE | F1 | "
          "attention AUC |")


def _rows(recall, precision, f1):
  row = {"tp": 1, "n_pred": 2, "n_gt": 3, "recall": recall, "precision": precision, "f1": f1}
  return {"overall": row, "me": row, "mae": row, "me_1.0": row}


def _result(method, tuned, honest, folds=None, auc=0.75):
  """A hand-made results dict; ``tuned``/``honest`` = (f1_0.5, f1_1.0, f1_p, rec, pre, f1)."""
  def point(v):
    return {"f1_0.5": v[0], "f1_1.0": v[1], "f1_p": v[2], "rows": _rows(*v[3:])}
  return {"workdir": f"/runs/{method}", "method": method, "protocol": "megc",
          "mean_attention_auc": auc, "tuned": point(tuned), "honest": point(honest),
          "folds": folds or {}}


def _cells(line):
  return [c.strip() for c in line.strip().strip("|").split("|")]


def test_table_has_paper_columns_and_one_tuned_and_one_honest_row_per_run():
  res = [_result("A", (0.1, 0.2, 0.3, 0.4, 0.5, 0.6), (0.01, 0.02, 0.03, 0.04, 0.05, 0.06)),
         _result("B", (1, 1, 1, 1, 1, 1), (0, 0, float("nan"), 0, 0, 0), auc=float("nan"))]
  lines = report.markdown_table(res).splitlines()
  assert lines[0] == HEADER
  assert len(_cells(lines[1])) == 9 and set("".join(_cells(lines[1]))) == {"-"}
  assert [_cells(l) for l in lines[2:]] == [
      ["A", "tuned", "0.100", "0.200", "0.300", "0.400", "0.500", "0.600", "0.750"],
      ["A", "honest", "0.010", "0.020", "0.030", "0.040", "0.050", "0.060", "0.750"],
      ["B", "tuned", "1.000", "1.000", "1.000", "1.000", "1.000", "1.000", "-"],
      ["B", "honest", "0.000", "0.000", "-", "0.000", "0.000", "0.000", "-"],
  ]


@pytest.mark.parametrize("per_fold,expected_rows", [
    pytest.param(False, 2, id="without per_fold only the two run rows"),
    pytest.param(True, 4, id="with per_fold one honest row per fold, in index order"),
])
def test_per_fold_rows(per_fold, expected_rows):
  folds = {"10": {"test_subject": "s11", "attention_auc": 0.5, "rows": _rows(0.2, 0.3, 0.24)},
           "2": {"test_subject": "s03", "attention_auc": float("nan")}}
  res = _result("M", (0.1,) * 6, (0.2,) * 6, folds=folds)
  lines = report.markdown_table([res], per_fold=per_fold, names=["run"]).splitlines()[2:]
  assert len(lines) == expected_rows
  if per_fold:
    assert _cells(lines[2]) == ["run fold 2 (s03)", "honest"] + ["-"] * 7
    assert _cells(lines[3]) == ["run fold 10 (s11)", "honest", "-", "-", "-", "0.200",
                                "0.300", "0.240", "0.500"]


@pytest.mark.parametrize("names,expected", [
    pytest.param(None, ["A (x)", "A (y)", "B"], id="duplicate methods get the workdir name"),
    pytest.param(["p", "q", "r"], ["p", "q", "r"], id="given names are used as they are"),
])
def test_run_names(names, expected):
  res = [_result("A", (0,) * 6, (0,) * 6), _result("A", (0,) * 6, (0,) * 6),
         _result("B", (0,) * 6, (0,) * 6)]
  res[0]["workdir"], res[1]["workdir"] = "/r/x", "/r/y"
  assert report.run_names(res, names) == expected


def test_run_names_refuses_a_wrong_number_of_names():
  with pytest.raises(ValueError, match="2 names"):
    report.run_names([_result("A", (0,) * 6, (0,) * 6)], ["a", "b"])


def test_render_report_warns_that_tuned_rows_are_tuned_on_the_test_set():
  text = report.render_report([_result("A", (0,) * 6, (0,) * 6)])
  assert text.startswith(HEADER)
  assert "TUNED ON THE TEST PREDICTIONS" in text


def _run_cli(*args):
  return subprocess.run([sys.executable, "-m", "launch.report", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=120)


def test_cli_on_a_tiny_run_writes_the_table_and_a_png(tiny_run, tmp_path):
  out = tmp_path / "sub" / "report.md"
  proc = _run_cli(f"--workdir={tiny_run}", f"--output={out}", "--per_fold", "--plots=1",
                  "--names=tiny")
  assert proc.returncode == 0, proc.stderr
  text = out.read_text()
  assert proc.stdout == text
  with open(os.path.join(tiny_run, "results.json")) as f:
    results = json.load(f)
  assert text.startswith(report.markdown_table([results], per_fold=True, names=["tiny"]))
  paper_table, quality_table = text.split("\n\n")[:2]
  rows = [_cells(l)[:2] for l in paper_table.splitlines() if l.startswith("| tiny")]
  assert rows == [["tiny", "tuned"], ["tiny", "honest (cross-fold)"],
                  ["tiny", "honest (train subjects)"], ["tiny fold 0 (s01)", "honest"]]
  # The pseudo-label table: one row per run, precision and recall of each class in [0, 1].
  assert quality_table == report.pseudo_label_table([results], ["tiny"])
  (row,) = [_cells(l) for l in quality_table.splitlines() if l.startswith("| tiny")]
  assert len(row) == 8 and all(0.0 <= float(v) <= 1.0 for v in row[1:7])
  assert results["protocol"] == "paper" and results["tuned"]["protocol"] == "paper"
  pngs = os.listdir(os.path.join(tiny_run, "plots"))
  assert pngs == ["s01_v01.png"]
  with open(os.path.join(tiny_run, "plots", pngs[0]), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_missing_results_are_recomputed_from_the_finished_folds(tiny_run, tmp_path):
  copy = str(tmp_path / "run")
  shutil.copytree(tiny_run, copy, ignore=shutil.ignore_patterns("plots"))
  os.remove(os.path.join(copy, "results.json"))
  with open(os.path.join(tiny_run, "results.json")) as f:
    original = json.load(f)
  res = report.load_results(copy)
  assert os.path.isfile(os.path.join(copy, "results.json"))
  for point in ("tuned", "honest"):
    assert report.paper_row(res[point]) == pytest.approx(report.paper_row(original[point]))
  assert list(res["folds"]) == ["0"]
  auc, auc0 = res["mean_attention_auc"], original["mean_attention_auc"]
  assert (math.isnan(auc) and math.isnan(auc0)) or auc == pytest.approx(auc0)


def test_a_scoring_failure_after_training_keeps_every_fold_and_names_where(tiny_run, tmp_path,
                                                                            monkeypatch):
  copy = str(tmp_path / "run")
  shutil.copytree(tiny_run, copy, ignore=shutil.ignore_patterns("plots"))
  for name in ("results.json", "predictions.json"):
    os.remove(os.path.join(copy, name))

  def broken(tp, n_pred, n_gt):
    raise ZeroDivisionError("float division by zero")
  monkeypatch.setattr(scoring, "row_metrics", broken)
  # The trained run: train_and_evaluate finds fold 0 finished and goes straight to scoring.
  with pytest.raises(scoring.ScoringError) as e:
    train.train_and_evaluate(run_files.load_config(copy), copy)
  message = str(e.value)
  assert message.startswith("scoring failed under protocol 'paper', fold '0', row 'overall': "
                            "ZeroDivisionError: float division by zero; every trained fold is "
                            "kept")
  assert os.path.join(copy, "predictions.json") in message
  assert f"python -m launch.report --workdir={copy} --recompute" in message
  assert not os.path.exists(os.path.join(copy, "results.json"))
  assert os.path.isfile(os.path.join(copy, "fold_00", "outputs.npz"))
  with open(os.path.join(copy, "predictions.json")) as f:
    held_out = json.load(f)["videos"]
  assert set(held_out) == set(run_files.read_fold_record(copy, 0)["test_videos"])
  monkeypatch.undo()  # fixed: the run is scored again without training
  res = report.load_results(copy, recompute=True)
  assert os.path.isfile(os.path.join(copy, "results.json")) and list(res["folds"]) == ["0"]


def test_plots_and_a_recompute_load_the_run_once(tiny_run, tmp_path, monkeypatch):
  """launch.report --plots --recompute loads each run's config and dataset once and hands it to
  plot_targets, load_results and plot_run; plot_run alone loads it once (it used to load it
  twice, once more inside plot_targets)."""
  copy = str(tmp_path / "run")
  shutil.copytree(tiny_run, copy, ignore=shutil.ignore_patterns("plots"))
  run = report.load_run(copy)
  calls = []
  real = report.source.prepare_dataset
  monkeypatch.setattr(report.source, "prepare_dataset",
                      lambda *a, **k: calls.append(a[1]) or real(*a, **k))
  targets = report.plot_targets(copy, 1, run=run)
  report.load_results(copy, recompute=True, run=run)
  assert report.plot_run(copy, 1, targets=targets, run=run) == [targets[0][2]]
  assert calls == []
  assert report.plot_run(copy, 1) == [targets[0][2]]
  assert calls == [copy]


@pytest.mark.parametrize("layout_kind", [
    pytest.param("empty", id="an empty directory"),
    pytest.param("unfinished", id="a fold directory without a finished record"),
])
def test_a_workdir_without_finished_folds_is_a_clear_error(tmp_path, layout_kind):
  if layout_kind == "unfinished":
    (tmp_path / "fold_00").mkdir()
    (tmp_path / "fold_00" / "fold.json").write_text(json.dumps({"finished": False}))
  with pytest.raises(FileNotFoundError, match="no finished fold"):
    report.load_results(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="no finished fold"):
    report.plot_run(str(tmp_path), 1)


def test_cli_on_an_empty_workdir_exits_with_a_clear_message(tmp_path):
  proc = _run_cli(f"--workdir={tmp_path}")
  assert proc.returncode != 0
  assert f"workdir {tmp_path} has no finished fold" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_recompute_on_a_one_fold_run_counts_every_prediction_at_the_cross_fold_point(
    tiny_run, tmp_path):
  # One fold: no other fold's held-out predictions to choose a threshold on, so the
  # cross-fold point counts every prediction; an unmatched ground truth is never a hit.
  from pwes_jax.evaluation import scoring  # pylint: disable=g-import-not-at-top
  copy = str(tmp_path / "run")
  shutil.copytree(tiny_run, copy, ignore=shutil.ignore_patterns("plots"))
  with open(os.path.join(copy, "results.json")) as f:
    data = json.load(f)["dataset"].replace(os.path.abspath(tiny_run), copy)
  # The held-out video s01_v01 gets two ground truths: one at a held-out prediction's frames
  # (found), one where no prediction lies (a miss under every threshold).
  with open(os.path.join(copy, "predictions.json")) as f:
    first = json.load(f)["videos"]["s01_v01"][0]
  with open(os.path.join(data, "annotations.csv"), "a") as f:
    f.write(f"s01,s01_v01,{first['onset']},{first['onset']},{first['offset']},ME\n"
            "s01,s01_v01,130,140,160,MaE\n")
  proc = _run_cli(f"--workdir={copy}", "--recompute")
  assert proc.returncode == 0, proc.stderr
  with open(os.path.join(copy, "results.json")) as f:
    res = json.load(f)
  with open(os.path.join(copy, "fold_00", "fold.json")) as f:
    test_videos = json.load(f)["test_videos"]
  preds = prediction_files.load_predictions(os.path.join(copy, "predictions.json"))
  gt = scoring.load_ground_truth(res["dataset"])
  lowest = min((float(p.score.min()) for p in preds.values() if p.score.size), default=0.0)
  want = scoring.evaluate(preds, gt, protocol="paper", videos=test_videos,
                             threshold=lowest - 1.0)
  point = res["honest_cross_fold"]
  assert point["per_fold"]["0"]["threshold"] is None
  assert point["rows"] == want["rows"]
  assert res["dataset"] == data and want["rows"]["overall"]["n_gt"] == 2
  assert point["rows"]["overall"]["tp"] == 1  # before the fix the miss counted as a hit


@pytest.mark.parametrize("variant,dfcl,terms,name", [
    ("full", True, None, "+MPLG+DFCL"),
    ("full", False, None, "+MPLG"),
    ("none", False, None, "+points"),
    ("none", True, None, "+points +DFCL"),
    ("none", False, ("mil", "mil_suppressed", "guide", "sparsity", "mutual"), "Video-level"),
    ("pplm", False, None, "+PPLM"),
    ("caf1", True, None, "MPLG-caf1+DFCL"),
    ("dilated_points", False, None, "+dilated_points"),
    ("dilated_points", True, ("mil", "mil_suppressed", "guide", "sparsity", "mutual", "snippet",
                              "smoothness"), "+dilated_points +DFCL +smoothness"),
    ("full", True, ("mil", "mil_suppressed", "sparsity", "snippet"), "+MPLG+DFCL -guide -mutual"),
])
def test_method_name_follows_table_one_and_shows_changed_loss_terms(variant, dfcl, terms, name):
  c = synthetic.get_config("tiny")
  c.mplg.variant = variant
  c.dfcl.enabled = dfcl
  if terms is not None:
    c.loss.terms = terms
  assert report.method_name(c) == name
  del c.loss["terms"]  # a run made before loss.terms existed: eq. 18's terms
  old = "+points" if name == "Video-level" else name
  assert report.method_name(c) == old.split(" +smoothness")[0].split(" -guide")[0]


def test_rescore_reproduces_the_run_and_applies_proposal_choices(tiny_run):
  """Rescoring with no override gives the run's own rows; class-wise NMS only adds proposals
  an other-class proposal had suppressed; an unknown field is refused."""
  with open(os.path.join(tiny_run, "results.json")) as f:
    original = json.load(f)
  run = report.load_run(tiny_run)
  same = report.rescore(tiny_run, {}, run=run)
  for point in ("tuned", "honest"):
    assert report.paper_row(same[point]) == pytest.approx(report.paper_row(original[point]))
  wise = report.rescore(tiny_run, {"class_wise_nms": True, "max_per_class": (0, 0)}, run=run)
  agnostic = report.rescore(tiny_run, {"class_wise_nms": False, "max_per_class": (0, 0)},
                            run=run)
  agnostic_preds = sum(f["rows"]["overall"]["n_pred"] for f in agnostic["folds"].values()
                       if f.get("rows"))
  wise_preds = sum(f["rows"]["overall"]["n_pred"] for f in wise["folds"].values()
                   if f.get("rows"))
  assert agnostic_preds > 0  # the folds' rows exist and hold proposals
  assert wise_preds >= agnostic_preds
  assert not os.path.exists(os.path.join(tiny_run, "results.json.tmp"))
  with pytest.raises(KeyError, match="no field 'nms_treshold'"):
    report.rescore(tiny_run, {"nms_treshold": 0.5}, run=run)
