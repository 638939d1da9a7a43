"""The four protocols: hand-worked boundary cases, brute-force loops, the cross-fold threshold."""

import fractions
import json
import math

import numpy as np
import pytest

from pwes_jax import evaluate
from pwes_jax.data import layout
from pwes_jax.evaluation import scoring
from pwes_jax.evaluation import prediction_files
from pwes_jax.evaluation import operating_points
from pwes_jax.evaluation import protocols
from tests.evaluation.test_scoring import bf_iou, counts, make_gt, preds_of, random_case

HALF = fractions.Fraction(1, 2)
PROTOCOLS = list(scoring.PROTOCOLS)


def at_zero(gts, preds, protocol, fps=30.0, **kw):
  """Every prediction counts (scores are positive; ``paper`` counts ``score > 0``)."""
  return scoring.evaluate(preds_of(preds), make_gt(fps, gts), protocol=protocol,
                             threshold=0.0, **kw)


# ----------------------------------------------------------------------------------------------
# Hand-worked cases, every protocol. Counts are (tp, n_pred, n_gt) of the given row.

HAND = [
    # id, fps, gts, preds, row, {protocol: counts}
    ("one_prediction_covering_two_ground_truths", 30.0,
     {"a_1": [(0, 9, "ME"), (0, 11, "ME")]}, {"a_1": [(0, 10, 0.9)]}, "overall",
     dict(megc=(2, 1, 2), strict=(1, 1, 2), paper=(2, 1, 2), strs=(2, 2, 2))),
    ("duplicate_predictions", 30.0,
     {"a_1": [(10, 29, "MaE")]}, {"a_1": [(10, 29, 0.8), (10, 29, 0.8)]}, "overall",
     dict(megc=(1, 2, 1), strict=(1, 2, 1), paper=(1, 2, 1), strs=(1, 2, 1))),
    # STRS: the first copy takes the ground truth; the later copies find it taken: FPs.
    ("three_copies_of_one_correct_prediction_over_two_ground_truths", 30.0,
     {"a_1": [(0, 9, "ME"), (100, 129, "MaE")]}, {"a_1": [(0, 9, 0.9)] * 3}, "overall",
     dict(megc=(1, 3, 2), strict=(1, 3, 2), paper=(1, 3, 2), strs=(1, 3, 2))),
    # 0 .. 15 lasts 15 frames (16 inclusive): an ME at 30 fps by the field's rule.
    ("16_frame_me_at_30fps_is_an_me", 30.0,
     {"a_1": [(0, 15, "ME")]}, {"a_1": [(0, 15, 1.0)]}, "me",
     dict(megc=(1, 1, 1), strict=(1, 1, 1), paper=(1, 1, 1), strs=(1, 1, 1))),
    # 0 .. 16 lasts 16 frames: the prediction is MaE; paper's hit is an MaE hit (the ground
    # truth's own length) while the annotated type still counts it among the ME ground truths.
    ("17_frame_me_at_30fps_me_row", 30.0,
     {"a_1": [(0, 16, "ME")]}, {"a_1": [(0, 16, 1.0)]}, "me",
     dict(megc=(0, 0, 1), strict=(0, 0, 1), paper=(0, 0, 1), strs=(0, 0, 1))),
    ("17_frame_me_at_30fps_mae_row", 30.0,
     {"a_1": [(0, 16, "ME")]}, {"a_1": [(0, 16, 1.0)]}, "mae",
     dict(megc=(0, 1, 0), strict=(0, 1, 0), paper=(1, 1, 0), strs=(0, 1, 0))),
    ("17_frame_me_at_30fps_counts_within_1s", 30.0,
     {"a_1": [(0, 16, "ME")]}, {"a_1": [(0, 16, 1.0)]}, "me_1.0",
     dict(megc=(1, 1, 1), strict=(1, 1, 1), paper=(0, 1, 1), strs=(1, 1, 1))),
    ("100_frame_me_at_200fps_is_an_me", 200.0,
     {"a_1": [(0, 100, "ME")]}, {"a_1": [(0, 100, 1.0)]}, "me",
     dict(megc=(1, 1, 1), strict=(1, 1, 1), paper=(1, 1, 1), strs=(1, 1, 1))),
    ("101_frame_me_at_200fps_is_not", 200.0,
     {"a_1": [(0, 101, "ME")]}, {"a_1": [(0, 101, 1.0)]}, "me",
     dict(megc=(0, 0, 1), strict=(0, 0, 1), paper=(0, 0, 1), strs=(0, 0, 1))),
    # A zero-length ground truth is never a hit for the authors' scorer.
    ("zero_length_ground_truth", 30.0,
     {"a_1": [(5, 5, "ME")]}, {"a_1": [(5, 5, 1.0)]}, "overall",
     dict(megc=(1, 1, 1), strict=(1, 1, 1), paper=(0, 1, 1), strs=(1, 1, 1))),
    # A negative video (no ground truth): its prediction is a false positive, except for
    # strs, which scores only videos with ground truth.
    ("negative_video", 30.0,
     {"a_1": [(0, 9, "ME")], "a_2": []}, {"a_1": [(0, 9, 0.9)], "a_2": [(0, 9, 0.9)]},
     "overall", dict(megc=(1, 2, 1), strict=(1, 2, 1), paper=(1, 2, 1), strs=(1, 1, 1))),
    # Subject b has ground truth but no prediction at all: strs leaves it out.
    ("subject_without_predictions", 30.0,
     {"a_1": [(0, 9, "ME")], "b_1": [(0, 9, "ME"), (40, 59, "MaE")]},
     {"a_1": [(0, 9, 0.9), (100, 109, 0.5)]}, "overall",
     dict(megc=(1, 2, 3), strict=(1, 2, 3), paper=(1, 2, 3), strs=(1, 2, 1))),
    # The prediction of largest IoU is what counts for paper: any duration, any row.
    ("paper_hit_by_a_prediction_of_the_other_class", 30.0,
     {"a_1": [(0, 11, "ME")]}, {"a_1": [(0, 16, 1.0)]}, "me",
     dict(megc=(0, 0, 1), strict=(0, 0, 1), paper=(1, 0, 1), strs=(0, 0, 1))),
]


@pytest.mark.parametrize("fps,gts,preds,row,want", [c[1:] for c in HAND],
                         ids=[c[0] for c in HAND])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_hand_worked_counts(fps, gts, preds, row, want, protocol):
  assert counts(at_zero(gts, preds, protocol, fps), row) == want[protocol]


def test_strs_precision_and_recall_count_pairs():
  # Two pairs (TP 2), one stray prediction (FP 1), one missed ground truth (FN 1).
  gts = {"a_1": [(0, 9, "ME"), (0, 11, "ME"), (200, 239, "MaE")]}
  res = at_zero(gts, {"a_1": [(0, 10, 0.9), (100, 109, 0.3)]}, "strs")
  assert res["rows"]["overall"] == dict(tp=2, n_pred=3, n_gt=3, recall=2 / 3,
                                        precision=2 / 3, f1=pytest.approx(2 / 3))
  assert res["strs_scored_videos"] == 1


def test_strs_each_ground_truth_counts_once_and_file_order_decides_the_fp():
  # Three copies of one correct prediction over 2 ground truths: TP 1, FP 2, FN 1, F1 0.40.
  gts = {"a_1": [(0, 9, "ME"), (100, 129, "MaE")]}
  res = at_zero(gts, {"a_1": [(0, 9, 0.9)] * 3}, "strs")
  assert res["rows"]["overall"] == dict(tp=1, n_pred=3, n_gt=2, recall=0.5, precision=1 / 3,
                                        f1=pytest.approx(0.40))
  # A wide prediction takes both ground truths first; the exact one after it is then an FP.
  gts = {"a_1": [(0, 9, "ME"), (5, 14, "ME")]}
  wide, exact = (0, 14, 0.9), (0, 9, 0.9)  # IoU 2/3 with both; 1 and 1/3
  assert counts(at_zero(gts, {"a_1": [wide, exact]}, "strs")) == (2, 3, 2)
  # The other order: the exact one takes its ground truth, the wide one the remaining one.
  assert counts(at_zero(gts, {"a_1": [exact, wide]}, "strs")) == (2, 2, 2)
  # Below a cut the earlier prediction no longer counts, so the later one takes over.
  got = scoring.evaluate(preds_of({"a_1": [(0, 9, 0.5), (0, 9, 0.9)]}),
                            make_gt(30.0, {"a_1": [(0, 9, "ME")]}), protocol="strs",
                            threshold=0.7)
  assert counts(got) == (1, 1, 1)


def test_strs_at_a_threshold_scores_the_subjects_of_the_predictions_above_it():
  # Subject b's only prediction is below the threshold: the STRS script, given the
  # predictions at or above it, never sees subject b, so b's ground truths are not FNs.
  gts = {"a_1": [(0, 9, "ME"), (100, 129, "MaE")], "b_1": [(0, 9, "ME"), (50, 79, "MaE")],
         "b_2": [], "c_1": [(0, 9, "ME")]}
  preds = preds_of({"a_1": [(0, 9, 0.9), (300, 309, 0.7)], "b_1": [(0, 9, 0.3)],
                    "b_2": [(0, 9, 0.95)]})
  gt = make_gt(30.0, gts)
  res = scoring.evaluate(preds, gt, protocol="strs", threshold=0.6)
  # a_1: TP 1, FP 1, FN 1; b_2 (no ground truth) makes subject b scored, b_1's 2 are FNs.
  assert counts(res) == (1, 2, 4)
  assert (res["strs_scored_videos"], res["strs_unscored_predictions"],
          res["strs_unscored_ground_truths"]) == (2, 1, 1)  # b_2's prediction; c_1's ME
  preds["b_2"] = []
  res = scoring.evaluate(preds, gt, protocol="strs", threshold=0.6)
  assert counts(res) == (1, 2, 2)
  assert res["rows"]["overall"]["f1"] == pytest.approx(0.5)
  assert (res["strs_scored_videos"], res["strs_unscored_predictions"],
          res["strs_unscored_ground_truths"]) == (1, 0, 3)
  assert ("strs scored 1 videos; not scored: 0 counted predictions (videos without ground "
          "truth), 3 ground truths (subjects without a counted prediction)") in (
              evaluate.summary_lines(res))
  # At 0.3 subject b is scored again: its prediction takes b_1's ME.
  assert counts(scoring.evaluate(preds, gt, protocol="strs", threshold=0.3)) == (2, 3, 4)
  tuned = scoring.evaluate(preds, gt, protocol="strs")
  assert tuned["threshold"] == 0.9 and counts(tuned) == (1, 1, 2)
  assert tuned["strs_unscored_ground_truths"] == 3


def test_strs_at_a_threshold_equals_strs_on_the_exported_predictions(tmp_path):
  # What a user does: export the predictions counted at k, then run the STRS script on them.
  fps, gt_items, pred_items = 30.0, {}, {}
  for seed in range(30):
    _, g, p = random_case(seed)
    gt_items.update({f"{k}_{seed}": v for k, v in g.items()})
    pred_items.update({f"{k}_{seed}": v for k, v in p.items() if k in g})
  gt, preds = make_gt(fps, gt_items), preds_of(pred_items)
  everything = prediction_files.parse_predictions(preds, "p")
  for k in (0.2, 0.4, 0.6, 0.8):
    chosen = prediction_files.select(everything, "strs", k)
    at_k = scoring.evaluate(preds, gt, protocol="strs", threshold=k)
    path = str(tmp_path / f"at_{k}.csv")
    prediction_files.write_csv(path, chosen, gt)
    exported = prediction_files.load(path)
    again = scoring.evaluate(exported.videos, gt, protocol="strs", threshold=-1.0)
    assert again["rows"] == at_k["rows"], k
    for key in ("strs_scored_videos", "strs_unscored_predictions",
                "strs_unscored_ground_truths"):
      assert again[key] == at_k[key], (k, key)


def _capped_case(n, scores):
  gts = {"a_1": [(40 * i, 40 * i + 19, "MaE") for i in range(n)]}
  preds = {"a_1": [(40 * i, 40 * i + 19, s) for i, s in zip(range(n), scores)]}
  return gts, preds


def test_paper_keeps_the_14_highest_scored_predictions_per_video():
  gts, preds = _capped_case(15, [1.0 - 0.01 * i for i in range(15)])
  res = at_zero(gts, preds, "paper")
  assert counts(res) == (14, 14, 15) and res["predictions_over_cap"] == 1
  assert counts(at_zero(gts, preds, "paper", max_per_video=15)) == (15, 15, 15)
  assert counts(at_zero(gts, preds, "megc")) == (15, 15, 15)  # no cap elsewhere


def test_paper_cap_breaks_equal_scores_by_file_order():
  gts, preds = _capped_case(15, [0.5] * 15)
  gts["a_1"] = gts["a_1"][14:]  # only the last prediction's ground truth
  assert counts(at_zero(gts, preds, "paper")) == (0, 14, 1)
  preds["a_1"] = preds["a_1"][::-1]  # now it comes first
  assert counts(at_zero(gts, preds, "paper")) == (1, 14, 1)


def test_paper_counts_scores_strictly_above_the_threshold():
  gt = make_gt(30.0, {"a_1": [(0, 9, "ME")]})
  preds = preds_of({"a_1": [(0, 9, 0.5)]})
  assert counts(scoring.evaluate(preds, gt, protocol="paper", threshold=0.5)) == (0, 0, 1)
  assert counts(scoring.evaluate(preds, gt, protocol="megc", threshold=0.5)) == (1, 1, 1)
  tuned = scoring.evaluate(preds, gt, protocol="paper")
  assert tuned["threshold"] < 0.5 and tuned["threshold_rule"] == ">"
  assert counts(tuned) == (1, 1, 1)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_settings_move_the_me_bound(protocol):
  # 0 .. 20 lasts 20 frames: MaE at 0.5 s, ME at 0.7 s (21 frames at 30 fps).
  gts, preds = {"a_1": [(0, 20, "ME")]}, {"a_1": [(0, 20, 1.0)]}
  assert counts(at_zero(gts, preds, protocol), "me")[1] == 0
  assert counts(at_zero(gts, preds, protocol, me_seconds=0.7), "me")[1] == 1


def _samm_lv(name="samm_lv"):
  videos = [layout.Video("006", "006_1", 5000)]
  anns = [layout.Annotation("006", "006_1", 0, -1, 104, "ME"),
          layout.Annotation("006", "006_1", 1000, -1, 1399, "MaE")]
  return scoring.ground_truth_from_annotations(videos, anns, 200.0, dataset=name)


@pytest.mark.parametrize("prediction,me_under_megc", [
    ((0, 103), True), ((0, 104), True), ((0, 105), False)],
    ids=["104_frames_inclusive", "105_frames_inclusive_the_baselines_longest_me",
         "106_frames_inclusive_the_baselines_shortest_mae"])
def test_megc_on_samm_lv_types_predictions_as_the_megc_2020_baseline(prediction, me_under_megc):
  preds = preds_of({"006_1": [(*prediction, 0.9)]})
  res = scoring.evaluate(preds, _samm_lv(), protocol="megc", threshold=0.5)
  assert (res["me_seconds"], res["me_max_frames"]) == (0.52, 104.0)
  assert res["me_bound_rule"].startswith("MEGC 2020 baseline, SAMM-LV")
  assert counts(res, "me")[1] == int(me_under_megc)
  assert counts(res, "mae")[1] == int(not me_under_megc)
  # Every other protocol, another dataset, or a bound the user gives: 0.5 s (100 frames).
  for protocol, gt, kw in [("paper", _samm_lv(), {}), ("strict", _samm_lv(), {}),
                           ("strs", _samm_lv(), {}), ("megc", _samm_lv("casme2"), {}),
                           ("megc", _samm_lv(), {"me_seconds": 0.5})]:
    other = scoring.evaluate(preds, gt, protocol=protocol, threshold=0.5, **kw)
    assert other["me_max_frames"] == 100.0 and counts(other, "me")[1] == 0, protocol
    assert other["me_bound_rule"] == ("given" if kw else protocols.ME_BOUND_RULE)


def test_the_samm_lv_bound_reaches_the_cli_evaluator_and_the_honest_points(tmp_path):
  gt = _samm_lv()
  root = str(tmp_path / "samm_lv")
  layout.write_dataset(root, layout.DatasetInfo("samm_lv", 200.0, 32, 4),
                       [layout.Video("006", "006_1", 5000)],
                       [a for anns in gt.annotations.values() for a in anns])
  path = tmp_path / "preds.json"
  path.write_text(json.dumps({"videos": preds_of({"006_1": [(0, 104, 0.9)]})}))
  metrics = evaluate.evaluate(root, str(path), protocol="megc", threshold=0.5).metrics
  assert metrics["me_seconds"] == 0.52 and counts(metrics, "me") == (1, 1, 1)
  res = operating_points.honest_operating_point({"0": {}}, {"0": preds_of(
      {"006_1": [(0, 104, 0.9)]})}, gt, protocol="megc")
  assert counts(res["honest"], "me") == (1, 1, 1) and res["tuned"]["me_seconds"] == 0.52


# ----------------------------------------------------------------------------------------------
# Brute force: plain loops over videos, predictions and ground truths.


def _is_me(on, off, fps, seconds=0.5):
  return off - on <= seconds * fps


def _frac_f1(tp, n_pred, n_gt):
  return fractions.Fraction(2 * tp, n_pred + n_gt) if tp else fractions.Fraction(0)


def bf_paper(pred_items, gt_items, fps, k, cap):
  """The authors' scorer at ``score > k``."""
  hits = {"me": 0, "mae": 0}
  n = {"me": 0, "mae": 0, "me_1.0": 0}
  n_gt = {"ME": 0, "MaE": 0}
  for video, gts in gt_items.items():
    ranked = sorted(enumerate(pred_items.get(video, [])), key=lambda ip: (-ip[1][2], ip[0]))
    kept = [p for _, p in ranked if p[2] > k][:cap]
    for on, off, _ in kept:
      n["me" if _is_me(on, off, fps) else "mae"] += 1
      n["me_1.0"] += _is_me(on, off, fps, 1.0)
    for on, off, kind in gts:
      n_gt[kind] += 1
      best = max((bf_iou(p[0], p[1], on, off) for p in kept), default=0)
      if best >= HALF and off - on > 0:
        hits["me" if _is_me(on, off, fps) else "mae"] += 1
  rows = {"overall": (hits["me"] + hits["mae"], n["me"] + n["mae"], n_gt["ME"] + n_gt["MaE"]),
          "me": (hits["me"], n["me"], n_gt["ME"]), "mae": (hits["mae"], n["mae"], n_gt["MaE"]),
          "me_1.0": (hits["me"], n["me_1.0"], n_gt["ME"])}
  return {r: (*c, _frac_f1(*c)) for r, c in rows.items()}


def _bf_in_row(row, p=None, g=None, fps=30.0):
  if row == "overall":
    return True
  if g is not None:
    return (g[2] == "ME") == (row != "mae")
  return {"me": _is_me(p[0], p[1], fps), "mae": not _is_me(p[0], p[1], fps),
          "me_1.0": _is_me(p[0], p[1], fps, 1.0)}[row]


def bf_strs(pred_items, gt_items, fps, th):
  """STRS spotting at ``score >= th``, walked as genbing99/STRS-Metric ``evaluate_STRS`` does
  on the predictions with ``score >= th``: the subjects of those predictions, their videos
  with ground truth, and in each video the predictions in file order, each taking every
  not-yet-taken ground truth it matches."""
  with_preds = {v.split("_")[0] for v, ps in pred_items.items() if any(p[2] >= th for p in ps)}
  rows = {}
  for row in scoring.ROWS:
    tp = fp = fn = 0
    for video, gts in gt_items.items():
      if not gts or video.split("_")[0] not in with_preds:
        continue
      ps = [p for p in pred_items.get(video, []) if p[2] >= th and _bf_in_row(row, p=p, fps=fps)]
      gs = [g for g in gts if _bf_in_row(row, g=g)]
      taken = set()
      for p in ps:
        took = False
        for j, g in enumerate(gs):
          if bf_iou(p[0], p[1], g[0], g[1]) >= HALF and j not in taken:
            taken.add(j)
            tp += 1
            took = True
        fp += not took
      fn += len(gs) - len(taken)
    rows[row] = (tp, tp + fp, tp + fn, _frac_f1(tp, tp + fp, tp + fn))
  return rows


def _bf_sweep(score_sets, rows_at):
  """Best overall F1 over the candidate sets (ties: the highest cut)."""
  table = [(cut, rows_at(cut)) for cut in score_sets]
  best = max(range(len(table)), key=lambda i: (table[i][1]["overall"][3], table[i][0]))
  return table[best][1], max(r["me"][3] for _, r in table), max(r["me_1.0"][3] for _, r in table)


@pytest.mark.parametrize("seed", range(16), ids=[f"seed{s}" for s in range(16)])
@pytest.mark.parametrize("protocol", ["paper", "strs"])
def test_matches_brute_force_at_every_threshold_and_in_the_sweep(seed, protocol):
  fps, gt_items, pred_items = random_case(seed)
  gt, preds = make_gt(fps, gt_items), preds_of(pred_items)
  cap = 3  # small, so that random cases reach it

  def bf(th):
    return (bf_paper(pred_items, gt_items, fps, th, cap) if protocol == "paper"
            else bf_strs(pred_items, gt_items, fps, th))

  scores = sorted({p[2] for ps in pred_items.values() for p in ps})
  for th in scores + [-1.0, 10.0]:
    got = scoring.evaluate(preds, gt, protocol=protocol, threshold=th, max_per_video=cap)
    want = bf(th)
    for row in scoring.ROWS:
      assert counts(got, row) == want[row][:3], (th, row)
      assert got["rows"][row]["f1"] == pytest.approx(float(want[row][3]))
  got = scoring.evaluate(preds, gt, protocol=protocol, max_per_video=cap)
  if not scores:
    assert got["threshold"] is None
    return
  # Candidate sets: score >= s for every distinct s; for paper that is score > (next lower).
  lower = {s: (scores[i - 1] if i else -math.inf) for i, s in enumerate(scores)}
  rows, f1_05, f1_10 = _bf_sweep(scores, lambda s: bf(lower[s] if protocol == "paper" else s))
  for row in scoring.ROWS:
    assert counts(got, row) == rows[row][:3]
  assert got["f1_0.5"] == pytest.approx(float(f1_05))
  assert got["f1_1.0"] == pytest.approx(float(f1_10))
  again = scoring.evaluate(preds, gt, protocol=protocol, threshold=got["threshold"],
                              max_per_video=cap)
  assert again["rows"] == got["rows"]  # the reported threshold reproduces the tuned rows


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_reported_thresholds_reproduce_their_rows(protocol):
  for seed in range(6):
    fps, gt_items, pred_items = random_case(seed)
    gt, preds = make_gt(fps, gt_items), preds_of(pred_items)
    tuned = scoring.evaluate(preds, gt, protocol=protocol)
    if tuned["threshold"] is None:
      continue
    fixed = scoring.evaluate(preds, gt, protocol=protocol, threshold=tuned["threshold"])
    assert fixed["rows"] == tuned["rows"]
    at_05 = scoring.evaluate(preds, gt, protocol=protocol, threshold=tuned["f1_0.5_threshold"])
    assert at_05["rows"]["me"]["f1"] == pytest.approx(tuned["f1_0.5"])


def test_every_protocol_keeps_the_output_shape():
  fps, gt_items, pred_items = random_case(1)
  for protocol in PROTOCOLS:
    res = scoring.evaluate(preds_of(pred_items), make_gt(fps, gt_items), protocol=protocol)
    assert list(res["rows"]) == list(scoring.ROWS)
    for r in res["rows"].values():
      assert set(r) == {"tp", "n_pred", "n_gt", "recall", "precision", "f1"}
    assert {"f1_0.5", "f1_1.0", "f1_p", "threshold"} <= set(res)


def test_unknown_protocol_is_refused():
  with pytest.raises(ValueError, match="protocol must be one of"):
    scoring.evaluate({}, make_gt(30.0, {"a_1": []}), protocol="megc2019")


def test_top_per_video_matches_a_sort():
  rng = np.random.default_rng(0)
  pv = np.sort(rng.integers(0, 4, 60))
  scores = rng.integers(0, 5, 60).astype(float)
  m = protocols.match(30.0, np.zeros(4, np.int64),
                      [(np.zeros((pv == v).sum()), np.zeros((pv == v).sum()), scores[pv == v])
                       for v in range(4)], [([], [], [])] * 4, 0.5)
  got = protocols.top_per_video(m, 5)
  want = np.zeros(60, bool)
  for v in range(4):
    idx = np.flatnonzero(pv == v)
    want[sorted(idx, key=lambda i: (-scores[i], i))[:5]] = True
  np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------------------------
# The cross-fold honest threshold.


def _folds(seed):
  """Folds = subjects of a random case; train predictions = the other subjects' videos."""
  fps, gt_items, pred_items = random_case(seed)
  gt = make_gt(fps, gt_items)
  subjects = sorted({v.split("_")[0] for v in gt_items})
  test = {s: preds_of({v: pred_items.get(v, []) for v in gt_items if v.startswith(s + "_")})
          for s in subjects}
  train = {s: preds_of({v: [(a, b, min(1.0, c + 0.2)) for a, b, c in pred_items.get(v, [])]
                        for v in gt_items if not v.startswith(s + "_")}) for s in subjects}
  return gt, train, test


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cross_fold_threshold_ignores_the_folds_own_predictions(protocol):
  for seed in range(8):
    gt, train, test = _folds(seed)
    if len(test) < 2:
      continue
    base = operating_points.honest_operating_point(train, test, gt, protocol=protocol)
    for fold in test:
      changed = dict(test)
      changed[fold] = {v: [dict(p, score=1.0 - p["score"], offset=p["onset"]) for p in ps]
                       for v, ps in test[fold].items()}
      res = operating_points.honest_operating_point(train, changed, gt, protocol=protocol)
      want = base["honest_cross_fold"]["per_fold"][fold]
      got = res["honest_cross_fold"]["per_fold"][fold]
      assert got["threshold"] == want["threshold"], (seed, fold)
      assert got["other_folds_f1"] == want["other_folds_f1"]


def test_cross_fold_threshold_is_the_best_one_on_the_other_folds():
  for seed in range(8):
    gt, train, test = _folds(seed)
    res = operating_points.honest_operating_point(train, test, gt, protocol="megc")
    for fold in test:
      others = {v: p for f, t in test.items() if f != fold for v, p in t.items()}
      want = scoring.evaluate(others, gt, protocol="megc", videos=list(others))
      assert res["honest_cross_fold"]["per_fold"][fold]["threshold"] == want["threshold"]
    assert res["honest"] is res["honest_cross_fold"]


def test_default_honest_point_can_be_the_training_subjects():
  gt, train, test = _folds(2)
  res = operating_points.honest_operating_point(train, test, gt, default="train_subjects")
  assert res["honest"] is res["honest_train_subjects"]
  with pytest.raises(ValueError, match="default must be one of"):
    operating_points.honest_operating_point(train, test, gt, default="tuned")


# ----------------------------------------------------------------------------------------------
# "Count every prediction" (cut -inf) never counts an unmatched ground truth.


def _every_prediction(preds, gt, protocol, videos=None):
  """:func:`evaluate` with every prediction counted (a threshold below the lowest score)."""
  scores = [p["score"] for ps in preds.values() for p in ps]
  return scoring.evaluate(preds, gt, protocol=protocol, videos=videos,
                             threshold=min(scores, default=0.0) - 1.0)


def _point_counts(point):
  return {r: (x["tp"], x["n_pred"], x["n_gt"]) for r, x in point["rows"].items()}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cut_minus_infinity_never_admits_an_unmatched_ground_truth(protocol):
  gt = make_gt(30.0, {"s01_v01": [(100, 119, "MaE"), (300, 305, "ME")]})
  m = scoring._match(prediction_files.parse_predictions(preds_of({"s01_v01": [(0, 3, 0.9)]})), gt,
                        gt.videos, "<test>", 0.5)
  got = protocols.counts(protocol, m, [-np.inf, 0.0], protocols.Settings())
  for row, (tp, _, _) in got.items():
    assert tp.tolist() == [0, 0], row


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_honest_point_without_anything_to_choose_on_counts_like_evaluate(protocol):
  # The reviewer's repro: one prediction at frames 0..3, a ground truth it does not match.
  gt = make_gt(30.0, {"s01_v01": [(100, 119, "MaE")]})
  test = {"0": preds_of({"s01_v01": [(0, 3, 0.9)]})}
  res = operating_points.honest_operating_point({"0": {}}, test, gt, protocol=protocol)
  want = _point_counts(_every_prediction(test["0"], gt, protocol))
  assert want["overall"] == (0, 1, 1)
  for point in ("honest_cross_fold", "honest_train_subjects"):
    assert _point_counts(res[point]) == want, point
    assert res[point]["rows"]["overall"]["precision"] == 0.0
    assert res[point]["per_fold"]["0"]["threshold"] is None


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("seed", range(8), ids=[f"seed{s}" for s in range(8)])
def test_single_fold_and_no_other_predictions_count_every_prediction(protocol, seed):
  fps, gt_items, pred_items = random_case(seed)
  gt = make_gt(fps, gt_items)
  everything = preds_of({v: pred_items.get(v, []) for v in gt_items})
  # One fold, no training predictions: neither honest point has anything to choose on.
  res = operating_points.honest_operating_point({"0": {}}, {"0": everything}, gt, protocol=protocol)
  want = _point_counts(_every_prediction(everything, gt, protocol))
  assert _point_counts(res["honest_cross_fold"]) == want
  assert _point_counts(res["honest_train_subjects"]) == want
  # Several folds, only one with predictions: that fold's other folds predict nothing.
  subjects = sorted({v.split("_")[0] for v in gt_items})
  test = {s: {v: (ps if s == subjects[0] else [])
              for v, ps in everything.items() if v.startswith(s + "_")} for s in subjects}
  res = operating_points.honest_operating_point({s: {} for s in subjects}, test, gt,
                                          protocol=protocol)
  first = test[subjects[0]]
  assert res["honest_cross_fold"]["per_fold"][subjects[0]]["threshold"] is None
  assert _point_counts(res["honest_cross_fold"]["per_fold"][subjects[0]]) == _point_counts(
      _every_prediction(first, gt, protocol, videos=list(first)))


def test_strs_matches_the_file_order_walk_on_many_random_cases():
  for seed in range(100, 400):
    fps, gt_items, pred_items = random_case(seed)
    gt, preds = make_gt(fps, gt_items), preds_of(pred_items)
    for th in sorted({p[2] for ps in pred_items.values() for p in ps}) + [-1.0]:
      got = scoring.evaluate(preds, gt, protocol="strs", threshold=th)
      want = bf_strs(pred_items, gt_items, fps, th)
      for row in scoring.ROWS:
        assert counts(got, row) == want[row][:3], (seed, th, row)
