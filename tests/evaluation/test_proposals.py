"""Proposal generation (paper Section 3.6) against plain-numpy loop references."""

import math

import numpy as np
import pytest

from pwes_jax.evaluation import proposals


# ----------------------------------------------------------------------------------------------
# Plain loop references.


def ref_runs(attention, ks):
  t_len = len(attention)
  order = sorted(range(t_len), key=lambda i: (-attention[i], i))
  out = set()
  for k in ks:
    sel = sorted(order[:min(k, t_len)])
    start = prev = sel[0]
    for t in sel[1:]:
      if t != prev + 1:
        out.add((start, prev))
        start = t
      prev = t
    out.add((start, prev))
  return sorted(out)


def ref_oic(suppressed, runs, flank_ratio=0.25):
  t_len, c_num = suppressed.shape
  out = np.zeros((len(runs), c_num))
  for i, (s, e) in enumerate(runs):
    length = e - s + 1
    f = max(1, round(flank_ratio * length))  # Python round: half to even
    outer_idx = [t for t in range(s - f, s) if t >= 0] + [t for t in range(e + 1, e + f + 1)
                                                          if t < t_len]
    for c in range(c_num):
      inner = sum(suppressed[t, c] for t in range(s, e + 1)) / length
      outer = (sum(suppressed[t, c] for t in outer_idx) / len(outer_idx)) if outer_idx else 0.0
      out[i, c] = inner - outer
  return out


def ref_iou(a, b):
  inter = min(a[1], b[1]) - max(a[0], b[0]) + 1
  if inter <= 0:
    return 0.0
  return inter / (max(a[1], b[1]) - min(a[0], b[0]) + 1)


def ref_nms(runs, scores, threshold):
  order = sorted(range(len(runs)), key=lambda i: (-scores[i], i))
  keep = []
  for i in order:
    if all(ref_iou(runs[i], runs[j]) <= threshold for j in keep):
      keep.append(i)
  return keep


def ref_generate(attention, suppressed, snippet_length, fps, ks, nms_threshold=0.01):
  runs = ref_runs(attention, ks)
  oic = ref_oic(suppressed, runs)
  labels, scores = [], []
  for i, (s, e) in enumerate(runs):
    label = 0 if (e - s + 1) * snippet_length - 1 <= 0.5 * fps else 1  # offset - onset
    labels.append(label)
    scores.append(oic[i, label])
  keep = ref_nms(runs, scores, nms_threshold)
  return [(runs[i][0] * snippet_length, (runs[i][1] + 1) * snippet_length - 1, scores[i],
           ("ME", "MaE")[labels[i]]) for i in keep]


def random_video(seed, t_len, ties=False):
  rng = np.random.default_rng(seed)
  if ties:
    attention = rng.integers(0, 4, t_len).astype(np.float32)
  else:
    attention = rng.random(t_len).astype(np.float32)
  suppressed = rng.random((t_len, 2)).astype(np.float32)
  return attention, suppressed


# ----------------------------------------------------------------------------------------------
# multi_top_runs.


def test_multi_top_runs_hand_case_gives_each_run_once():
  attention = np.array([0.9, 0.1, 0.8, 0.7, 0.2, 0.95])
  # order: 5, 0, 2, 3, 4, 1; k=1: {5}; k=2: {0},{5}; k=3: {0},{2},{5}; k=4: {0},{2..3},{5}.
  runs = proposals.multi_top_runs(attention, k_range=(1, 4))
  assert runs.tolist() == [[0, 0], [2, 2], [2, 3], [5, 5]]


def test_ties_go_to_the_lower_index():
  runs = proposals.multi_top_runs(np.array([1.0, 1.0, 1.0, 1.0]), k_range=(2, 2))
  assert runs.tolist() == [[0, 1]]


@pytest.mark.parametrize("t_len,expected", [(1, 1), (3, 1), (10, 3), (11, 4), (325, 98)],
                         ids=lambda v: str(v))
def test_default_k_max_is_ceil_of_30_percent(t_len, expected):
  assert proposals.default_k_max(t_len) == expected


@pytest.mark.parametrize(
    "seed,t_len,ties,k_range",
    [(0, 1, False, None), (1, 7, False, None), (2, 40, False, None), (3, 40, True, None),
     (4, 25, True, (3, 9)), (5, 12, False, (1, 12)), (6, 9, False, (5, 30)),
     (7, 30, True, range(2, 20, 5)), (8, 60, False, (10, 10))],
    ids=["one_snippet", "short", "random", "random_with_ties", "k_from_3_to_9", "k_up_to_T",
         "k_past_T_is_clipped", "a_stepped_range", "a_single_k"])
def test_multi_top_runs_matches_loop(seed, t_len, ties, k_range):
  attention, _ = random_video(seed, t_len, ties)
  if k_range is None:
    ks = range(1, math.ceil(0.3 * t_len - 1e-9) + 1)
  elif isinstance(k_range, range):
    ks = k_range
  else:
    ks = range(k_range[0], k_range[1] + 1)
  got = proposals.multi_top_runs(attention, k_range=k_range)
  assert [tuple(r) for r in got.tolist()] == ref_runs(attention.tolist(), ks)


@pytest.mark.parametrize("k_range", [(0, 3), (4, 2), (1, 2, 3), range(0)],
                         ids=["k_zero", "k_max_below_k_min", "three_values", "empty_range"])
def test_bad_k_range_is_a_clear_error(k_range):
  with pytest.raises(ValueError, match="k_range"):
    proposals.multi_top_runs(np.ones(5), k_range=k_range)


def test_empty_video_has_no_runs():
  assert proposals.multi_top_runs(np.zeros(0)).shape == (0, 2)


# ----------------------------------------------------------------------------------------------
# Outer-inner contrast.


@pytest.mark.parametrize("seed,t_len", [(0, 1), (1, 5), (2, 17), (3, 60)],
                         ids=["one_snippet", "five", "seventeen", "sixty"])
def test_outer_inner_scores_match_loop_on_every_interval(seed, t_len):
  _, suppressed = random_video(seed, t_len)
  runs = [(s, e) for s in range(t_len) for e in range(s, t_len)]
  got = proposals.outer_inner_scores(suppressed, np.array(runs))
  np.testing.assert_allclose(got, ref_oic(suppressed.astype(np.float64), runs), atol=1e-9)


def test_whole_video_proposal_has_zero_outer_mean():
  suppressed = np.array([[0.2, 0.4], [0.6, 0.8]])
  got = proposals.outer_inner_scores(suppressed, np.array([[0, 1]]))
  np.testing.assert_allclose(got, [[0.4, 0.6]])


@pytest.mark.parametrize("length,flank", [(1, 1), (2, 1), (3, 1), (6, 2), (10, 2), (14, 4)],
                         ids=lambda v: str(v))
def test_flank_length_rounds_half_to_even_with_minimum_one(length, flank):
  assert int(proposals.flank_length(np.array([length]))[0]) == flank


# ----------------------------------------------------------------------------------------------
# NMS.


@pytest.mark.parametrize("seed,threshold", [(0, 0.01), (1, 0.3), (2, 0.7), (3, 0.0)],
                         ids=["paper_threshold", "loose", "looser", "any_overlap"])
def test_nms_matches_loop(seed, threshold):
  rng = np.random.default_rng(seed)
  starts = rng.integers(0, 50, 40)
  runs = np.stack([starts, starts + rng.integers(0, 10, 40)], 1)
  scores = np.round(rng.random(40), 1)  # ties on purpose
  got = proposals.nms(runs, scores, threshold=threshold)
  assert got.tolist() == ref_nms(runs.tolist(), scores.tolist(), threshold)


def test_nms_keeps_touching_but_disjoint_intervals():
  runs = np.array([[0, 4], [5, 9], [4, 5]])
  assert proposals.nms(runs, np.array([0.9, 0.8, 0.95]), threshold=0.01).tolist() == [2]
  assert proposals.nms(runs[:2], np.array([0.9, 0.8])).tolist() == [0, 1]


# ----------------------------------------------------------------------------------------------
# generate_proposals.


@pytest.mark.parametrize(
    "seed,t_len,ties,snippet_length,fps",
    [(0, 30, False, 8, 30.0), (1, 80, True, 8, 30.0), (2, 50, False, 8, 200.0),
     (3, 3, False, 4, 30.0), (4, 120, False, 1, 25.0)],
    ids=["casme_like", "ties", "samm_fps_200", "three_snippets", "single_frame_snippets"])
def test_generate_proposals_matches_loop(seed, t_len, ties, snippet_length, fps):
  attention, suppressed = random_video(seed, t_len, ties)
  got = proposals.generate_proposals(attention, suppressed, snippet_length=snippet_length,
                                     fps=fps)
  ks = range(1, math.ceil(0.3 * t_len - 1e-9) + 1)
  want = ref_generate(attention.tolist(), suppressed.astype(np.float64), snippet_length, fps, ks)
  assert [(p["onset"], p["offset"], p["type"]) for p in got] == [w[:2] + w[3:] for w in want]
  np.testing.assert_allclose([p["score"] for p in got], [w[2] for w in want], atol=1e-9)
  for p in got:
    assert p["onset"] == p["start_snippet"] * snippet_length
    assert p["offset"] == (p["end_snippet"] + 1) * snippet_length - 1


@pytest.mark.parametrize("fps,snippets,expected", [(30.0, 1, "ME"), (30.0, 2, "ME"),
                                                   (30.0, 3, "MaE"), (200.0, 12, "ME"),
                                                   (200.0, 13, "MaE")],
                         ids=["30fps_8_frames_is_ME", "30fps_16_frames_lasting_15_is_ME",
                              "30fps_24_frames_is_MaE", "200fps_96_frames_is_ME",
                              "200fps_104_frames_is_MaE"])
def test_class_follows_duration(fps, snippets, expected):
  t_len = 40
  attention = np.zeros(t_len)
  attention[10:10 + snippets] = 1.0 + np.arange(snippets) * 1e-3
  suppressed = np.zeros((t_len, 2))
  suppressed[10:10 + snippets] = [0.3, 0.7]
  got = proposals.generate_proposals(attention, suppressed, snippet_length=8, fps=fps,
                                     k_range=(snippets, snippets))
  assert [(p["start_snippet"], p["end_snippet"], p["type"]) for p in got] == [
      (10, 10 + snippets - 1, expected)]
  assert got[0]["score"] == pytest.approx(0.3 if expected == "ME" else 0.7)


@pytest.mark.parametrize(
    "kwargs,match",
    [(dict(attention=np.ones((3, 1)), suppressed=np.ones((3, 2))), "attention"),
     (dict(attention=np.ones(3), suppressed=np.ones((3, 3))), "suppressed"),
     (dict(attention=np.ones(3), suppressed=np.ones((4, 2))), "suppressed"),
     (dict(attention=np.array([1.0, np.nan, 0.0]), suppressed=np.ones((3, 2))), "attention"),
     (dict(attention=np.ones(3), suppressed=np.full((3, 2), np.inf)), "suppressed")],
    ids=["attention_not_1d", "background_column_included", "length_mismatch", "nan_attention",
         "inf_tcam"])
def test_bad_inputs_are_clear_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    proposals.generate_proposals(snippet_length=8, fps=30.0, **kwargs)


def test_empty_video_gives_no_proposals():
  assert proposals.generate_proposals(np.zeros(0), np.zeros((0, 2)), snippet_length=8,
                                      fps=30.0) == []


def _nested_case():
  """Attention with a long MaE-like run 2..9 whose highest part 4..5 is a 2-snippet ME-like
  run: multi-top gives both; the MaE scores higher, so class-agnostic NMS removes the ME."""
  att = np.zeros(16)
  att[2:10] = 0.6
  att[4:6] = 1.0
  sup = np.zeros((16, 2))
  sup[4:6, 0] = 0.9   # ME evidence on the short run
  sup[2:10, 1] = 0.95  # MaE evidence on the long run
  return att, sup


def test_class_wise_nms_keeps_an_me_nested_in_a_longer_maE():
  att, sup = _nested_case()
  kw = dict(snippet_length=8, fps=30.0, k_range=(2, 8))
  agnostic = proposals.generate_proposals(att, sup, **kw)
  wise = proposals.generate_proposals(att, sup, class_wise_nms=True, **kw)
  assert [(p["type"], p["start_snippet"], p["end_snippet"]) for p in agnostic][0] == (
      "MaE", 2, 9)
  assert (4, 5) not in [(p["start_snippet"], p["end_snippet"]) for p in agnostic]
  me = [p for p in wise if p["type"] == "ME" and p["score"] > 0]
  assert [(p["start_snippet"], p["end_snippet"]) for p in me] == [(4, 5)]
  assert [p["score"] for p in wise] == sorted((p["score"] for p in wise), reverse=True)
  # Within a class NMS still applies: no two kept proposals of one class overlap.
  for c in ("ME", "MaE"):
    kept = [(p["start_snippet"], p["end_snippet"]) for p in wise if p["type"] == c]
    for i, a in enumerate(kept):
      for b in kept[i + 1:]:
        assert a[1] < b[0] or b[1] < a[0]


def test_per_class_caps_keep_the_highest_scored_of_each_class():
  rng = np.random.default_rng(3)
  att = np.zeros(80)
  for start, width in ((3, 1), (8, 2), (14, 5), (24, 1), (30, 6), (40, 2), (50, 4), (60, 8)):
    att[start:start + width] = 0.3 + 0.7 * rng.random()
  sup = rng.random((80, 2))
  kw = dict(snippet_length=8, fps=30.0, nms_threshold=0.5)
  everything = proposals.generate_proposals(att, sup, class_wise_nms=True, **kw)
  capped = proposals.generate_proposals(att, sup, class_wise_nms=True, max_per_class=(1, 2),
                                        **kw)
  by_type = {c: [p for p in everything if p["type"] == c] for c in ("ME", "MaE")}
  assert len(by_type["ME"]) > 1 and len(by_type["MaE"]) > 2
  want = sorted(by_type["ME"][:1] + by_type["MaE"][:2], key=lambda p: -p["score"])
  assert capped == want
  with pytest.raises(ValueError, match="max_per_class"):
    proposals.generate_proposals(att, sup, max_per_class=(1,), **kw)

