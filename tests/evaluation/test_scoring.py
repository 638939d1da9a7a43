"""The evaluator against hand-worked cases and an independent brute-force implementation."""

import fractions
import json
import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest

from pwes_jax.evaluation import scoring
from pwes_jax.evaluation import prediction_files
from pwes_jax.evaluation import operating_points
from pwes_jax.evaluation import intervals
from pwes_jax.evaluation import proposals
from pwes_jax.data import layout

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_gt(fps, gts, num_frames=2000):
  """``gts``: ``{video: [(onset, offset, type)]}``; subject = video name's prefix before '_'."""
  videos = [layout.Video(v.split("_")[0], v, num_frames) for v in gts]
  anns = [layout.Annotation(v.split("_")[0], v, on, -1, off, t)
          for v, items in gts.items() for on, off, t in items]
  return scoring.ground_truth_from_annotations(videos, anns, fps)


def preds_of(items):
  """``{video: [(onset, offset, score)]}`` -> prediction dicts."""
  return {v: [dict(onset=a, offset=b, score=s) for a, b, s in ps] for v, ps in items.items()}


def counts(result, row="overall"):
  r = result["rows"][row]
  return r["tp"], r["n_pred"], r["n_gt"]


# ----------------------------------------------------------------------------------------------
# Brute force: plain loops, exact fractions.


def bf_iou(a_on, a_off, b_on, b_off):
  inter = min(a_off, b_off) - max(a_on, b_on) + 1
  if inter <= 0:
    return fractions.Fraction(0)
  return fractions.Fraction(inter, max(a_off, b_off) - min(a_on, b_on) + 1)


def bf_in_row(row, kind, item, fps):
  if kind == "gt":
    return row == "overall" or (item[2] == "ME") == (row in ("me", "me_1.0"))
  dur = item[1] - item[0]  # the field's duration: offset - onset
  return {"overall": True, "me": dur <= 0.5 * fps, "mae": dur > 0.5 * fps,
          "me_1.0": dur <= 1.0 * fps}[row]


def bf_rows(pred_items, gt_items, fps, protocol, threshold):
  rows = {}
  for row in scoring.ROWS:
    tp = n_pred = n_gt = 0
    for video, gts in gt_items.items():
      ps = [(i, p) for i, p in enumerate(pred_items.get(video, []))
            if p[2] >= threshold and bf_in_row(row, "pred", p, fps)]
      gs = [(j, g) for j, g in enumerate(gts) if bf_in_row(row, "gt", g, fps)]
      n_pred += len(ps)
      n_gt += len(gs)
      if protocol == "megc":
        tp += sum(any(bf_iou(p[0], p[1], g[0], g[1]) >= fractions.Fraction(1, 2) for _, p in ps)
                  for _, g in gs)
      else:
        pairs = []
        for i, p in ps:
          for j, g in gs:
            u = bf_iou(p[0], p[1], g[0], g[1])
            if u >= fractions.Fraction(1, 2):
              pairs.append(((-u, -p[2], p[0], p[1], i, g[0], g[1], j), i, j))
        pairs.sort()
        used_p, used_g = set(), set()
        for _, i, j in pairs:
          if i not in used_p and j not in used_g:
            used_p.add(i)
            used_g.add(j)
            tp += 1
    f1 = fractions.Fraction(0)
    if tp:
      prec, rec = fractions.Fraction(tp, n_pred), fractions.Fraction(tp, n_gt)
      f1 = 2 * prec * rec / (prec + rec)
    rows[row] = (tp, n_pred, n_gt, f1)
  return rows


def bf_sweep(pred_items, gt_items, fps, protocol):
  scores = sorted({p[2] for ps in pred_items.values() for p in ps}, reverse=True)
  table = [(th, bf_rows(pred_items, gt_items, fps, protocol, th)) for th in scores]
  best = max(range(len(table)), key=lambda k: (table[k][1]["overall"][3], table[k][0]))
  th, rows = table[best]
  return dict(threshold=th, rows=rows,
              f1_05=max(r["me"][3] for _, r in table), f1_10=max(r["me_1.0"][3] for _, r in table))


def random_case(seed):
  rng = np.random.default_rng(seed)
  fps = float(rng.choice([30.0, 200.0, 25.0]))
  scale = fps / 30.0
  gt_items, pred_items = {}, {}
  for v in range(int(rng.integers(1, 6))):
    name = f"s{v % 3}_v{v}"
    gts = []
    for _ in range(int(rng.integers(0, 5))):
      on = int(rng.integers(0, 120 * scale))
      gts.append((on, on + int(rng.integers(0, 50 * scale)), "ME" if rng.random() < 0.5 else "MaE"))
    gt_items[name] = gts
    if rng.random() < 0.85:
      ps = []
      for _ in range(int(rng.integers(0, 12))):
        if gts and rng.random() < 0.6:  # near a ground truth, so matches and ties happen
          g = gts[int(rng.integers(len(gts)))]
          on = max(0, g[0] + int(rng.integers(-4, 5)))
          off = max(on, g[1] + int(rng.integers(-4, 5)))
        else:
          on = int(rng.integers(0, 120 * scale))
          off = on + int(rng.integers(0, 50 * scale))
        ps.append((on, off, float(rng.integers(0, 6)) / 5))  # few distinct scores: ties
      pred_items[name] = ps
  return fps, gt_items, pred_items


# ----------------------------------------------------------------------------------------------
# Hand-worked cases (fps 30: ME when offset - onset <= 15, me_1.0 when <= 30).

HAND_CASES = [
    # id, gts, preds, (megc tp, n_pred, n_gt), (strict tp, n_pred, n_gt)
    ("one_prediction_covers_two_ground_truths",
     {"a_1": [(0, 9, "ME"), (0, 11, "ME")]}, {"a_1": [(0, 10, 0.9)]}, (2, 1, 2), (1, 1, 2)),
    ("overlapping_ground_truths_each_matched",
     {"a_1": [(0, 9, "ME"), (5, 14, "ME")]}, {"a_1": [(0, 9, 0.9), (5, 14, 0.8)]},
     (2, 2, 2), (2, 2, 2)),
    ("duplicate_predictions",
     {"a_1": [(10, 29, "MaE")]}, {"a_1": [(10, 29, 0.8), (10, 29, 0.8)]}, (1, 2, 1), (1, 2, 1)),
    ("iou_exactly_one_half_matches",
     {"a_1": [(0, 9, "ME")], "a_2": [(0, 9, "ME")]}, {"a_1": [(0, 4, 1.0)], "a_2": [(0, 19, 1.0)]},
     (2, 2, 2), (2, 2, 2)),
    ("iou_just_below_one_half_misses",
     {"a_1": [(0, 9, "ME")], "a_2": [(0, 9, "ME")]}, {"a_1": [(0, 3, 1.0)], "a_2": [(0, 20, 1.0)]},
     (0, 2, 2), (0, 2, 2)),
    ("empty_videos",
     {"a_1": [], "a_2": [(0, 9, "ME")], "a_3": []}, {"a_1": [(0, 9, 0.5)], "a_3": []},
     (0, 1, 1), (0, 1, 1)),
    ("strict_greedy_takes_highest_iou_first",
     {"a_1": [(0, 9, "ME"), (4, 13, "ME")]}, {"a_1": [(1, 10, 0.5), (0, 5, 0.9)]},
     (2, 2, 2), (1, 2, 2)),
    # Both predictions have IoU 5/6 with (10, 19); only (10, 21) also reaches (14, 25), at 0.5.
    ("strict_equal_iou_higher_score_first",
     {"a_1": [(10, 19, "ME"), (14, 25, "ME")]}, {"a_1": [(10, 21, 0.9), (8, 19, 0.2)]},
     (2, 2, 2), (1, 2, 2)),
    ("strict_equal_iou_lower_score_second",
     {"a_1": [(10, 19, "ME"), (14, 25, "ME")]}, {"a_1": [(10, 21, 0.2), (8, 19, 0.9)]},
     (2, 2, 2), (2, 2, 2)),
    ("strict_equal_iou_and_score_earlier_onset_first",
     {"a_1": [(10, 19, "ME"), (14, 25, "ME")]}, {"a_1": [(10, 21, 0.5), (8, 19, 0.5)]},
     (2, 2, 2), (2, 2, 2)),
]


@pytest.mark.parametrize("gts,preds,megc,strict", [c[1:] for c in HAND_CASES],
                         ids=[c[0] for c in HAND_CASES])
@pytest.mark.parametrize("protocol", ["megc", "strict"])
def test_hand_worked_counts(gts, preds, megc, strict, protocol):
  gt = make_gt(30.0, gts)
  res = scoring.evaluate(preds_of(preds), gt, protocol=protocol, threshold=0.0)
  assert counts(res) == (megc if protocol == "megc" else strict)


def test_megc_precision_can_exceed_one_as_documented():
  gt = make_gt(30.0, {"a_1": [(0, 9, "ME"), (0, 11, "ME")]})
  res = scoring.evaluate(preds_of({"a_1": [(0, 10, 0.9)]}), gt, threshold=0.0)
  assert res["rows"]["overall"]["precision"] == 2.0
  assert res["rows"]["overall"]["f1"] == pytest.approx(4 / 3)


def test_strict_matching_uses_the_higher_scored_duplicate():
  gt = make_gt(30.0, {"a_1": [(0, 9, "ME")]})
  res = scoring.evaluate(preds_of({"a_1": [(0, 9, 0.2), (0, 9, 0.7)]}), gt,
                            protocol="strict", threshold=0.5)
  assert counts(res) == (1, 1, 1)


@pytest.mark.parametrize(
    "fps,duration,me,me_long",
    [(30.0, 15, True, True), (30.0, 16, False, True), (30.0, 30, False, True),
     (30.0, 31, False, False), (200.0, 100, True, True), (200.0, 101, False, True),
     (200.0, 200, False, True), (200.0, 201, False, False)],
    ids=["30fps_lasting_15_ME", "30fps_lasting_16_MaE", "30fps_lasting_30_within_1s",
         "30fps_lasting_31_past_1s", "200fps_lasting_100_ME", "200fps_lasting_101_MaE",
         "200fps_lasting_200_within_1s", "200fps_lasting_201_past_1s"])
def test_prediction_class_follows_duration(fps, duration, me, me_long):
  # ``duration`` = offset - onset: 0 .. 15 (16 frames inclusive) is an ME at 30 fps.
  gt = make_gt(fps, {"a_1": [(0, duration, "ME")]})
  res = scoring.evaluate(preds_of({"a_1": [(0, duration, 1.0)]}), gt, threshold=0.0)
  assert counts(res, "me") == ((1, 1, 1) if me else (0, 0, 1))
  assert counts(res, "mae") == ((0, 0, 0) if me else (0, 1, 0))
  assert counts(res, "me_1.0") == ((1, 1, 1) if me_long else (0, 0, 1))


def test_ground_truth_keeps_its_annotated_type():
  # A 40-frame ME ground truth at 30 fps is still ME; a 5-frame MaE one still MaE.
  gt = make_gt(30.0, {"a_1": [(0, 39, "ME"), (100, 104, "MaE")]})
  res = scoring.evaluate(preds_of({"a_1": [(0, 39, 1.0), (100, 104, 1.0)]}), gt, threshold=0)
  assert counts(res, "me") == (0, 1, 1)
  assert counts(res, "mae") == (0, 1, 1)
  assert counts(res) == (2, 2, 2)


def test_sweep_hand_case():
  gt = make_gt(30.0, {"a_1": [(0, 9, "ME"), (100, 139, "MaE")]})
  preds = preds_of({"a_1": [(0, 9, 0.9), (50, 59, 0.8), (100, 139, 0.7)]})
  with mock.patch.object(scoring.logging, "warning") as warn:
    res = scoring.evaluate(preds, gt)
  assert any(scoring.TUNED_WARNING in str(c) for c in warn.call_args_list)
  assert res["warning"] == scoring.TUNED_WARNING
  assert res["threshold"] == 0.7 and res["threshold_source"] == "tuned_on_test_predictions"
  assert res["rows"]["overall"]["f1"] == pytest.approx(0.8)
  assert res["f1_0.5"] == pytest.approx(1.0) and res["f1_0.5_threshold"] == 0.9
  assert res["f1_1.0"] == pytest.approx(1.0)
  assert res["f1_p"] == pytest.approx(2 / 3)


def test_sweep_ties_pick_the_highest_threshold():
  gt = make_gt(30.0, {"a_1": [(0, 9, "ME"), (20, 29, "ME")]})
  # th 0.9: tp 1 of 1 pred -> F1 2/3; th 0.5: tp 2 of 4 preds -> F1 4/6 = 2/3.
  preds = preds_of({"a_1": [(0, 9, 0.9), (20, 29, 0.5), (40, 49, 0.5), (60, 69, 0.5)]})
  assert scoring.evaluate(preds, gt)["threshold"] == 0.9


def test_fixed_threshold_counts_scores_at_or_above_it():
  gt = make_gt(30.0, {"a_1": [(0, 9, "ME"), (20, 29, "ME")]})
  preds = preds_of({"a_1": [(0, 9, 0.5), (20, 29, 0.49)]})
  res = scoring.evaluate(preds, gt, threshold=0.5)
  assert counts(res) == (1, 1, 2) and "warning" not in res


def test_no_predictions_at_all_gives_zeros():
  gt = make_gt(30.0, {"a_1": [(0, 9, "ME")]})
  res = scoring.evaluate({"a_1": []}, gt)
  assert res["threshold"] is None
  assert res["rows"]["overall"] == dict(tp=0, n_pred=0, n_gt=1, recall=0.0, precision=0.0,
                                        f1=0.0)


# ----------------------------------------------------------------------------------------------
# Against brute force.


@pytest.mark.parametrize("seed", range(12), ids=[f"seed{s}" for s in range(12)])
@pytest.mark.parametrize("protocol", ["megc", "strict"])
def test_matches_brute_force_at_every_threshold_and_in_the_sweep(seed, protocol):
  fps, gt_items, pred_items = random_case(seed)
  gt = make_gt(fps, gt_items)
  preds = preds_of(pred_items)
  for th in sorted({p[2] for ps in pred_items.values() for p in ps}) + [10.0]:
    got = scoring.evaluate(preds, gt, protocol=protocol, threshold=th)
    want = bf_rows(pred_items, gt_items, fps, protocol, th)
    for row in scoring.ROWS:
      assert counts(got, row) == want[row][:3], (th, row)
      assert got["rows"][row]["f1"] == pytest.approx(float(want[row][3]))
  got = scoring.evaluate(preds, gt, protocol=protocol)
  if not any(pred_items.values()):
    assert got["threshold"] is None
    return
  want = bf_sweep(pred_items, gt_items, fps, protocol)
  assert got["threshold"] == want["threshold"]
  for row in scoring.ROWS:
    assert counts(got, row) == want["rows"][row][:3]
  assert got["f1_0.5"] == pytest.approx(float(want["f1_05"]))
  assert got["f1_1.0"] == pytest.approx(float(want["f1_10"]))
  assert got["f1_p"] == pytest.approx(float(want["rows"]["me"][3]))


def test_iou_helper_matches_brute_force():
  rng = np.random.default_rng(0)
  a = rng.integers(0, 30, (200, 2))
  b = rng.integers(0, 30, (200, 2))
  a.sort(1)
  b.sort(1)
  got = intervals.iou(a[:, 0], a[:, 1], b[:, 0], b[:, 1])
  want = [float(bf_iou(*x, *y)) for x, y in zip(a.tolist(), b.tolist())]
  np.testing.assert_allclose(got, want)


# ----------------------------------------------------------------------------------------------
# Honest operating point.


def test_honest_operating_point_hand_case():
  gt = make_gt(30.0, {"s1_v": [(0, 9, "ME")], "s2_v": [(0, 9, "ME")]})
  train = {"s1": preds_of({"s2_v": [(0, 9, 0.5), (40, 49, 0.9)]}),
           "s2": preds_of({"s1_v": [(0, 9, 0.3)]})}
  test = {"s1": preds_of({"s1_v": [(0, 9, 0.4), (40, 49, 0.6)]}),
          "s2": preds_of({"s2_v": [(0, 9, 0.35), (60, 69, 0.2)]})}
  with mock.patch.object(scoring.logging, "warning") as warn:
    res = operating_points.honest_operating_point(train, test, gt)
  # The tuned rows' warning is returned for the caller's table, not logged a second time.
  assert not any(scoring.TUNED_WARNING in str(c) for c in warn.call_args_list)
  assert res["warning"] == res["tuned"]["warning"] == scoring.TUNED_WARNING
  by_train = res["honest_train_subjects"]
  assert by_train["per_fold"]["s1"]["threshold"] == 0.5
  assert by_train["per_fold"]["s2"]["threshold"] == 0.3
  assert by_train["rows"]["overall"] == dict(tp=1, n_pred=2, n_gt=2, recall=0.5,
                                             precision=0.5, f1=0.5)
  # Cross-fold: s1 takes the best threshold of s2's held-out predictions (0.35) and vice versa.
  cross = res["honest_cross_fold"]
  assert cross["per_fold"]["s1"]["threshold"] == 0.35
  assert cross["per_fold"]["s2"]["threshold"] == 0.4
  assert counts(cross, "overall") == (1, 2, 2)
  assert res["honest"] is cross and res["honest_point"] == "cross_fold"
  assert res["tuned"]["threshold"] == 0.35
  assert res["tuned"]["rows"]["overall"]["f1"] == pytest.approx(0.8)
  assert "warning" in res["tuned"]


@pytest.mark.parametrize("protocol", ["megc", "strict"])
def test_honest_pooled_counts_equal_per_fold_brute_force(protocol):
  fps, gt_items, pred_items = random_case(3)
  names = sorted(gt_items)
  gt = make_gt(fps, gt_items)
  train, test, want = {}, {}, [0, 0, 0]
  for k, name in enumerate(names):
    others = {v: pred_items.get(v, []) for v in names if v != name}
    train[k] = preds_of(others)
    test[k] = preds_of({name: pred_items.get(name, [])})
    if any(others.values()):
      th = bf_sweep(others, {v: gt_items[v] for v in others}, fps, protocol)["threshold"]
    else:
      th = -np.inf
    rows = bf_rows({name: pred_items.get(name, [])}, {name: gt_items[name]}, fps, protocol, th)
    want = [w + x for w, x in zip(want, rows["overall"][:3])]
  with mock.patch.object(scoring.logging, "warning"):
    res = operating_points.honest_operating_point(train, test, gt, protocol=protocol)
  assert counts(res["honest_train_subjects"]) == tuple(want)


def test_honest_refuses_a_video_in_both_train_and_test():
  gt = make_gt(30.0, {"s1_v": [(0, 9, "ME")]})
  p = preds_of({"s1_v": [(0, 9, 0.5)]})
  with pytest.raises(ValueError, match="both train and test"):
    operating_points.honest_operating_point({0: p}, {0: p}, gt)


# ----------------------------------------------------------------------------------------------
# Bad input.


def write(tmp_path, text, name="preds.json"):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


BAD_FILES = [
    ("empty_file", "", "empty file"),
    ("malformed_json", '{"videos": {', "not valid JSON"),
    ("no_videos_key", '{"preds": {}}', "field 'videos'"),
    ("no_videos", '{"videos": {}}', "holds no videos"),
    ("onset_after_offset", '{"videos": {"a_1": [{"onset": 5, "offset": 4, "score": 1}]}}',
     "video 'a_1', field 'offset': prediction 0: onset 5 > offset 4"),
    ("negative_frame", '{"videos": {"a_1": [{"onset": -1, "offset": 4, "score": 1}]}}',
     "video 'a_1', field 'onset': prediction 0: negative frame"),
    ("fractional_frame", '{"videos": {"a_1": [{"onset": 1.5, "offset": 4, "score": 1}]}}',
     "field 'onset'"),
    ("string_score", '{"videos": {"a_1": [{"onset": 1, "offset": 4, "score": "0.5"}]}}',
     "video 'a_1', field 'score': prediction 0: not a number"),
    ("nan_score", '{"videos": {"a_1": [{"onset": 1, "offset": 4, "score": NaN}]}}',
     "field 'score': prediction 0: not finite"),
    ("infinite_score", '{"videos": {"a_1": [{"onset": 1, "offset": 4, "score": -Infinity}]}}',
     "field 'score': prediction 0: not finite"),
    ("boolean_score", '{"videos": {"a_1": [{"onset": 1, "offset": 4, "score": true}]}}',
     "field 'score'"),
    ("missing_score", '{"videos": {"a_1": [{"onset": 1, "offset": 4}]}}',
     "video 'a_1', field 'score': prediction 0: missing"),
    ("not_a_list", '{"videos": {"a_1": {"onset": 1}}}', "video 'a_1'"),
    ("duplicate_video", '{"videos": {"a_1": [], "a_1": []}}', "duplicate"),
]


@pytest.mark.parametrize("text,match", [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_bad_prediction_files_are_clear_errors(tmp_path, text, match):
  path = write(tmp_path, text)
  with pytest.raises(layout.DatasetError, match=match) as e:
    prediction_files.load_predictions(path)
  assert path in str(e.value)


def test_offset_past_the_video_end_is_an_error():
  gt = make_gt(30.0, {"a_1": [(0, 9, "ME")]}, num_frames=100)
  with pytest.raises(layout.DatasetError, match="video 'a_1', field 'offset'.*past"):
    scoring.evaluate(preds_of({"a_1": [(95, 100, 0.5)]}), gt, threshold=0)


def test_unknown_videos_are_a_warning_with_their_count():
  gt = make_gt(30.0, {"a_1": [(0, 9, "ME")]})
  preds = preds_of({"a_1": [(0, 9, 0.5)], "zz_9": [(0, 9, 0.5), (20, 29, 0.5)]})
  with mock.patch.object(scoring.logging, "warning") as warn:
    res = scoring.evaluate(preds, gt, threshold=0.0)
  assert res["unknown_videos"]["videos"] == 1 and res["unknown_videos"]["predictions"] == 2
  assert any("not in the dataset" in str(c) and 2 in c.args for c in warn.call_args_list)
  assert counts(res) == (1, 1, 1)


def test_missing_annotations_file_names_it(tmp_path):
  root = tmp_path / "ds"
  layout.write_dataset(str(root), layout.DatasetInfo("tiny", 30.0, 8, 4),
                       [layout.Video("s1", "s1_v", 100)], [])
  os.remove(root / "annotations.csv")
  with pytest.raises(layout.DatasetError, match="annotations.csv.*missing"):
    scoring.load_ground_truth(str(root))


# ----------------------------------------------------------------------------------------------
# Proposals feed the evaluator; the CLI end to end.


def test_generated_proposals_evaluate_directly():
  rng = np.random.default_rng(0)
  props = proposals.generate_proposals(rng.random(40), rng.random((40, 2)), snippet_length=8,
                                       fps=30.0)
  gt = make_gt(30.0, {"a_1": [(p["onset"], p["offset"], "ME") for p in props[:1]]},
               num_frames=40 * 8 + 1)
  res = scoring.evaluate({"a_1": props}, gt)
  assert res["rows"]["overall"]["tp"] == 1


@pytest.fixture(name="tiny_dataset")
def fixture_tiny_dataset(tmp_path):
  root = tmp_path / "ds"
  videos = [layout.Video("s1", "s1_v1", 200), layout.Video("s2", "s2_v1", 200)]
  anns = [layout.Annotation("s1", "s1_v1", 0, 4, 9, "ME"),
          layout.Annotation("s1", "s1_v1", 100, -1, 139, "MaE"),
          layout.Annotation("s2", "s2_v1", 50, 55, 59, "ME")]
  layout.write_dataset(str(root), layout.DatasetInfo("tiny", 30.0, 8, 4), videos, anns)
  preds = {"videos": preds_of({"s1_v1": [(0, 9, 0.9), (100, 139, 0.7), (150, 160, 0.8)],
                               "s2_v1": [(50, 59, 0.6)]})}
  path = tmp_path / "preds.json"
  path.write_text(json.dumps(preds))
  return str(root), str(path), tmp_path


def run_cli(*args):
  return subprocess.run([sys.executable, "-m", "launch.evaluate", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize("protocol", ["megc", "strict"])
def test_cli_end_to_end(tiny_dataset, protocol):
  root, preds, tmp = tiny_dataset
  out = tmp / "out" / "metrics.json"
  proc = run_cli(f"--dataset_dir={root}", f"--predictions={preds}", f"--output={out}",
                 f"--protocol={protocol}")
  assert proc.returncode == 0, proc.stderr
  res = json.loads(out.read_text())
  # Thresholds: 0.9 -> 1/1 of 3 GT (F1 .5); 0.8 -> 1/2 (.4); 0.7 -> 2/3 (2/3); 0.6 -> 3/4 (6/7).
  assert res["threshold"] == 0.6 and res["protocol"] == protocol
  assert counts(res) == (3, 4, 3)
  assert "TUNED ON THE TEST PREDICTIONS" in res["warning"]
  assert "WARNING" in proc.stdout
  proc = run_cli(f"--dataset_dir={root}", f"--predictions={preds}", f"--output={out}",
                 "--threshold=0.75", "--overwrite")
  assert proc.returncode == 0, proc.stderr
  res = json.loads(out.read_text())
  assert counts(res) == (1, 2, 3) and "warning" not in res


def test_cli_bad_predictions_exit_with_the_message(tiny_dataset):
  root, _, tmp = tiny_dataset
  bad = write(tmp, '{"videos": {"s1_v1": [{"onset": 9, "offset": 3, "score": 0.5}]}}', "bad.json")
  proc = run_cli(f"--dataset_dir={root}", f"--predictions={bad}", f"--output={tmp / 'o.json'}")
  assert proc.returncode != 0
  assert "bad.json" in proc.stderr and "video 's1_v1', field 'offset'" in proc.stderr
  assert not (tmp / "o.json").exists()


def test_numpy_scalars_are_accepted_like_plain_numbers():
  gt = make_gt(30.0, {"a_1": [(0, 9, "ME")]})
  preds = {"a_1": [dict(onset=np.int64(0), offset=np.int32(9), score=np.float32(0.5)),
                   dict(onset=20.0, offset=29, score=1)]}
  res = scoring.evaluate(preds, gt, threshold=0.0)
  assert counts(res) == (1, 2, 1)


def test_videos_argument_restricts_the_evaluated_set():
  gt = make_gt(30.0, {"a_1": [(0, 9, "ME")], "a_2": [(0, 9, "ME")]})
  preds = preds_of({"a_1": [(0, 9, 0.5)], "a_2": [(50, 59, 0.5)]})
  res = scoring.evaluate(preds, gt, threshold=0.0, videos=["a_1"])
  assert counts(res) == (1, 1, 1)
  assert res["predictions_outside_evaluated_videos"] == 1


# ----------------------------------------------------------------------------------------------
# Total row metrics: a row with no predictions or no ground truth scores 0, with its counts.


def test_the_reported_zero_division_case_scores_zero_from_the_cli(tmp_path):
  # paper: an MaE-typed ground truth of 10 frames (ME by its length) found by a longer
  # prediction is an ME hit in a row with n_pred = n_gt = 0.
  root = tmp_path / "ds"
  root.mkdir()
  (root / "dataset.json").write_text('{"name": "repro", "fps": 30, "snippet_length": 8, '
                                     '"feature_dim": 1024}')
  (root / "videos.csv").write_text("subject,video,num_frames\ns1,v1,100\n")
  (root / "annotations.csv").write_text("subject,video,onset,apex,offset,type\n"
                                        "s1,v1,0,,9,MaE\n")
  preds = write(tmp_path, '{"videos": {"v1": [{"onset": 0, "offset": 17, "score": 0.9}]}}',
                "preds.json")
  out = tmp_path / "out.json"
  proc = run_cli(f"--dataset_dir={root}", f"--predictions={preds}", f"--output={out}",
                 "--protocol=paper")
  assert proc.returncode == 0, proc.stderr
  res = json.loads(out.read_text())
  assert res["rows"]["me"] == dict(tp=1, n_pred=0, n_gt=0, recall=0.0, precision=0.0, f1=0.0)
  assert res["f1_0.5"] == 0.0 and res["f1_p"] == 0.0  # the sweep said 2.0 for this row
  assert counts(res, "mae") == (0, 1, 1)
  fixed = scoring.evaluate(prediction_files.load_predictions(preds),
                           scoring.load_ground_truth(str(root)), protocol="paper", threshold=0.5)
  assert fixed["rows"]["me"]["f1"] == 0.0 and counts(fixed, "me") == (1, 0, 0)


@pytest.mark.parametrize("tp,n_pred,n_gt", [(1, 0, 0), (2, 0, 3), (2, 5, 0), (0, 0, 0),
                                            (0, 4, 0), (0, 0, 4)],
                         ids=["hit_without_predictions_or_ground_truth",
                              "hits_without_predictions", "hits_without_ground_truth",
                              "empty_row", "predictions_only", "ground_truths_only"])
def test_a_row_without_predictions_or_ground_truth_scores_zero_with_its_counts(tp, n_pred,
                                                                                n_gt):
  want = dict(tp=tp, n_pred=n_pred, n_gt=n_gt, recall=0.0, precision=0.0, f1=0.0)
  assert scoring.row_metrics(tp, n_pred, n_gt) == want
  # pylint: disable-next=protected-access
  vectorised = scoring._f1(np.array([tp]), np.array([n_pred]), np.array([n_gt]))
  assert vectorised.tolist() == [0.0]


@pytest.mark.parametrize("protocol", list(scoring.PROTOCOLS))
def test_scalar_and_vectorised_f1_agree_at_every_cut(protocol):
  for seed in range(40):
    fps, gt_items, pred_items = random_case(seed)
    prep = scoring.Prepared(prediction_files.parse_predictions(preds_of(pred_items), "p"),
                            make_gt(fps, gt_items), list(gt_items), protocol, "p",
                            scoring.settings(max_per_video=3))
    cuts = np.concatenate([np.unique(prep.matched.p_score), [-np.inf, np.inf]])
    for row, (tp, n, g) in prep.counts(cuts).items():
      f1 = scoring._f1(tp, n, g)  # pylint: disable=protected-access
      for k in range(cuts.size):
        assert f1[k] == scoring.row_metrics(tp[k], n[k], g[k])["f1"], (seed, row, cuts[k])


def test_an_error_while_scoring_names_the_protocol_the_fold_and_the_row():
  gt = make_gt(30.0, {"a_1": [(0, 9, "ME")], "b_1": [(0, 9, "ME")]})
  test = {"0": preds_of({"a_1": [(0, 9, 0.9)]}), "1": preds_of({"b_1": [(0, 9, 0.9)]})}
  train = {"0": preds_of({"b_1": [(0, 9, 0.8)]}), "1": preds_of({"a_1": [(0, 9, 0.8)]})}
  real = scoring.row_metrics

  def fails_on_me(tp, n_pred, n_gt):
    if n_pred == 1 and n_gt == 1 and tp == 1:
      raise ZeroDivisionError("float division by zero")
    return real(tp, n_pred, n_gt)
  with mock.patch.object(scoring, "row_metrics", fails_on_me):
    with pytest.raises(scoring.ScoringError, match=r"scoring failed under protocol 'paper', "
                       r"fold '0', row 'overall': ZeroDivisionError: float division by zero"):
      operating_points.honest_operating_point(train, test, gt, protocol="paper")
