"""Tests for pwes_jax.method.mplg against an independent plain-Python/numpy loop reference."""

import functools
import math

import chex
import jax
import numpy as np
import pytest

from pwes_jax.method import mplg

C = 2  # ME, MaE; background is index 2.
T, N, D = 24, 5, 6  # Shapes of the main batch of named cases.


# ------------------------------------------------------------------------------------------------
# Independent reference: explicit Python loops, float64 except where noted.


def _cos(a, b):
  na = math.sqrt(sum(float(x) * float(x) for x in a))
  nb = math.sqrt(sum(float(x) * float(x) for x in b))
  dot = sum(float(x) * float(y) for x, y in zip(a, b))
  return dot / (max(na, 1e-8) * max(nb, 1e-8))


def _ref_points(case):
  """Effective points as (index, label) in slot order."""
  t_len = case["probs"].shape[0]
  pts = []
  for n in range(case["point_index"].shape[0]):
    p, lab = int(case["point_index"][n]), int(case["point_label"][n])
    if case["point_valid"][n] != 0 and 0 <= p < t_len and case["valid"][p] != 0 and 0 <= lab < C:
      pts.append((p, lab))
  return pts


def _ref_apply_points(labels, pts):
  for p, lab in pts:  # Later slots overwrite earlier ones.
    labels[p, :] = 0.0
    labels[p, lab] = 1.0
  return labels


def ref_pseudo_labels(case, *, top_ratio=0.3, theta=0.8, neg_ratio=2.0, variant="full",
                      threshold_mode="relative", point_classes_only=False):
  probs = case["probs"].astype(np.float64)
  att = case["attention"].astype(np.float64)
  x = case["features"].astype(np.float64)
  t_len = probs.shape[0]
  vs = [t for t in range(t_len) if case["valid"][t] != 0]
  tv = len(vs)
  pts = _ref_points(case)
  point_snips = {p for p, _ in pts}
  k = max(1, math.floor(round(top_ratio * tv, 9)))

  # Step 1: foreground-level similarity.
  m = {t: 1.0 for t in vs}
  if pts:
    for t in vs:
      m[t] = max(_cos(x[t], x[p]) for p, _ in pts)
    lo, hi = min(m.values()), max(m.values())
    for t in vs:
      m[t] = (m[t] - lo) / (hi - lo) if hi > lo else 1.0
    for p in point_snips:
      m[p] = 1.0

  # Step 3: class-level similarity weights.
  w = {t: [1.0] * C for t in vs}
  present = [c for c in range(C) if any(lab == c for _, lab in pts)]
  if present:
    centers = {}
    for c in present:
      members = [x[p] for p, lab in pts if lab == c]
      centers[c] = [sum(v[d] for v in members) / len(members) for d in range(x.shape[1])]
    for t in vs:
      sims = {c: _cos(x[t], centers[c]) for c in present}
      top = max(sims.values())
      ex = {c: math.exp(sims[c] - top) for c in present}
      total = sum(ex.values())
      w[t] = [ex[c] / total if c in present else 0.0 for c in range(C)]

  def top_k(score):
    order = sorted(vs, key=lambda t: (-score[t], t))
    return set(order[:k])

  ptil = np.zeros((t_len, C))
  if variant == "c":
    chosen = set(vs)
  elif variant in ("caf1", "full"):
    chosen = top_k({t: att[t] * m[t] for t in vs})
  else:
    chosen = top_k({t: att[t] for t in vs})
  for t in chosen:
    for c in range(C):
      ptil[t, c] = probs[t, c]
      if variant in ("caf2", "full"):
        ptil[t, c] *= w[t][c]

  # A class no point names gets W = 0 (every variant) when asked.
  if point_classes_only:
    for c in range(C):
      if c not in present:
        for t in vs:
          ptil[t, c] = 0.0

  # Step 4: drop below the mean original probability.
  for c in range(C):
    mean = sum(probs[t, c] for t in vs) / tv if tv else 0.0
    for t in vs:
      if ptil[t, c] < mean:
        ptil[t, c] = 0.0

  # Step 5: foreground labels. Thresholds are formed in float32 like the code under test, so a
  # value sitting exactly on the boundary (quantised inputs) is judged the same way.
  labels = np.zeros((t_len, C + 1))
  fg_snips = set()
  maxes = [max([ptil[t, c] for t in vs], default=0.0) for c in range(C)]
  for t in vs:
    best, best_val = None, None
    for c in range(C):
      if threshold_mode == "relative":
        thr = float(np.float32(1.0 - theta) * np.float32(maxes[c]))
        ok = ptil[t, c] > 0 and ptil[t, c] >= thr
      else:
        ok = ptil[t, c] > float(np.float32(theta))
      if ok and (best is None or ptil[t, c] > best_val):
        best, best_val = c, ptil[t, c]
    if best is not None:
      labels[t, best] = 1.0
      fg_snips.add(t)

  # Step 6: background labels.
  n_bg = max(0, min(round(round(neg_ratio * k, 9)), tv - k))
  lowest = sorted(vs, key=lambda t: (att[t], t))[:n_bg]
  for t in lowest:
    if t not in point_snips and t not in fg_snips:
      labels[t, C] = 1.0

  # Step 7: points win.
  return _ref_apply_points(labels, pts)


def ref_pplm_labels(case, *, fg_threshold=0.5, bg_threshold=0.1, point_classes_only=False):
  probs, att = case["probs"], case["attention"]
  named = {lab for _, lab in _ref_points(case)}
  t_len = probs.shape[0]
  labels = np.zeros((t_len, C + 1))
  for t in range(t_len):
    if case["valid"][t] == 0:
      continue
    best, best_val = None, None
    for c in range(C):
      s = float(np.float32(att[t]) * np.float32(probs[t, c]))
      if point_classes_only and c not in named:
        continue
      if s > fg_threshold and (best is None or s > best_val):
        best, best_val = c, s
    if best is not None:
      labels[t, best] = 1.0
    elif att[t] < bg_threshold:
      labels[t, C] = 1.0
  return _ref_apply_points(labels, _ref_points(case))


# ------------------------------------------------------------------------------------------------
# Named cases.


def _make_case(seed, *, t_len=T, n_slots=N, dim=D, valid=None, points=(), quantise=False,
               garbage_slots=True, high_class=None):
  """One video. ``points``: (index, label) pairs for the first slots; the rest are invalid."""
  rng = np.random.default_rng(seed)
  probs = rng.random((t_len, C + 1)).astype(np.float32)
  att = rng.random(t_len).astype(np.float32)
  if quantise:  # Multiples of 1/8: exact in float32, ties guaranteed.
    probs = (np.floor(probs * 8) / 8).astype(np.float32)
    att = (np.floor(att * 4) / 8 + 0.25).astype(np.float32)
  if high_class is not None:  # Push one class high so that the absolute threshold fires.
    probs[:, high_class] = (0.8 + 0.2 * rng.random(t_len)).astype(np.float32)
  feats = rng.normal(size=(t_len, dim)).astype(np.float32)
  v = np.ones(t_len, np.float32) if valid is None else np.asarray(valid, np.float32)
  pidx = rng.integers(-3, t_len + 3, n_slots).astype(np.int32)
  plab = rng.integers(-1, C + 2, n_slots).astype(np.int32)
  if not garbage_slots:
    pidx[:] = 0
    plab[:] = 0
  pval = np.zeros(n_slots, np.float32)
  for n, (p, lab) in enumerate(points):
    pidx[n], plab[n], pval[n] = p, lab, 1.0
  return dict(probs=probs, attention=att, features=feats, point_index=pidx, point_label=plab,
              point_valid=pval, valid=v)


def _prefix(tv, t_len=T):
  return [1.0] * tv + [0.0] * (t_len - tv)


_NON_PREFIX = [1, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 1, 1, 1, 1, 0, 1, 0, 1, 1, 0, 1, 1]

CASES = {
    "all_valid_three_points": _make_case(1, points=[(3, 0), (10, 1), (18, 0)]),
    "trailing_padding": _make_case(2, valid=_prefix(17), points=[(2, 1), (9, 0), (15, 1)]),
    "non_prefix_mask": _make_case(3, valid=_NON_PREFIX, points=[(0, 0), (7, 1), (20, 0)]),
    "class_absent_only_mae": _make_case(4, valid=_prefix(20), points=[(4, 1), (12, 1), (13, 1)]),
    "class_absent_only_me_non_prefix": _make_case(5, valid=_NON_PREFIX, points=[(6, 0), (14, 0)]),
    "one_point": _make_case(6, valid=_prefix(21), points=[(8, 1)]),
    "no_point": _make_case(7, valid=_prefix(19)),
    "no_point_all_valid": _make_case(8),
    "ties_quantised_with_points": _make_case(9, valid=_prefix(22), quantise=True,
                                             points=[(1, 0), (5, 0), (11, 1), (17, 1)]),
    "ties_quantised_no_point": _make_case(10, valid=_NON_PREFIX, quantise=True),
    "two_classes_on_one_snippet_later_wins": _make_case(11, points=[(6, 0), (2, 1), (6, 1)]),
    "same_snippet_twice_same_class": _make_case(12, valid=_prefix(16), points=[(5, 0), (5, 0)]),
    "single_valid_snippet_with_point": _make_case(13, valid=_prefix(1), points=[(0, 1)]),
    "single_valid_snippet_no_point": _make_case(14, valid=[0] * 9 + [1] + [0] * 14),
    "no_valid_snippet": _make_case(15, valid=_prefix(0)),
    "all_slots_used": _make_case(16, points=[(0, 0), (5, 1), (9, 0), (14, 1), (23, 0)]),
    "high_me_only_me_points": _make_case(17, valid=_prefix(18), high_class=0,
                                         points=[(3, 0), (9, 0)]),
    "high_mae_no_point": _make_case(18, valid=_NON_PREFIX, high_class=1),
    "identical_features_flat_similarity": None,  # Filled below.
    "zero_feature_at_a_point": None,  # Filled below.
}
_flat = _make_case(19, valid=_prefix(20), points=[(2, 0), (7, 1)])
_flat["features"][:] = 1.0  # cos == 1 everywhere: m max == min -> all 1.
CASES["identical_features_flat_similarity"] = _flat
_zero = _make_case(20, valid=_prefix(22), points=[(4, 0), (12, 1)])
_zero["features"][4] = 0.0  # cos(0, .) == 0, so only "m = 1 at point snippets" lifts it.
_zero["attention"][4] = 0.99
CASES["zero_feature_at_a_point"] = _zero

CASE_NAMES = list(CASES)


def _stack(cases):
  return {key: np.stack([c[key] for c in cases]) for key in cases[0]}


BATCH = _stack([CASES[name] for name in CASE_NAMES])
ARG_ORDER = ("probs", "attention", "features", "point_index", "point_label", "point_valid",
             "valid")


@functools.lru_cache(maxsize=None)
def _batched(**options):
  return jax.jit(jax.vmap(functools.partial(mplg.pseudo_labels, **options)))


def _run(batch, **options):
  full = dict(variant="full", threshold_mode="relative")
  full.update(options)  # One cache key per distinct configuration.
  return np.asarray(_batched(**full)(*(batch[k] for k in ARG_ORDER)))


def _check_structure(out, batch):
  assert out.dtype == np.float32
  assert set(np.unique(out)).issubset({0.0, 1.0})
  assert np.all(out.sum(-1) <= 1.0), "a row has more than one label"
  padded = batch["valid"] == 0
  assert np.all(out[padded] == 0.0), "a padded row has a label"


OPTION_GRID = [dict(variant=v, threshold_mode=m) for v in mplg.VARIANTS
               for m in mplg.THRESHOLD_MODES] + [
                   dict(variant=v, threshold_mode=m, point_classes_only=True)
                   for v in mplg.VARIANTS for m in mplg.THRESHOLD_MODES]


# ------------------------------------------------------------------------------------------------
# Tests.


@pytest.mark.parametrize("options", OPTION_GRID,
                         ids=[f"{o['variant']}_{o['threshold_mode']}"
                              f"{'_point_classes_only' if o.get('point_classes_only') else ''}"
                              "_matches_loop_reference" for o in OPTION_GRID])
def test_every_variant_matches_the_loop_reference_on_all_named_cases(options):
  out = _run(BATCH, **options)
  _check_structure(out, BATCH)
  for b, name in enumerate(CASE_NAMES):
    want = ref_pseudo_labels(CASES[name], **options)
    np.testing.assert_array_equal(out[b], want, err_msg=f"case {name}, options {options}")


def test_the_cases_exercise_every_label_kind():
  out = _run(BATCH, variant="full", threshold_mode="absolute")
  assert out[..., 0].sum() > 0 and out[..., 1].sum() > 0 and out[..., 2].sum() > 0
  # The absolute mode labels some non-point snippet as foreground.
  pts = np.zeros(out.shape[:2], bool)
  for b, name in enumerate(CASE_NAMES):
    for p, _ in _ref_points(CASES[name]):
      pts[b, p] = True
  assert out[..., :C][~pts].sum() > 0


@pytest.mark.parametrize("options", [dict(variant="full"), dict(variant="c"),
                                     dict(variant="caf2", threshold_mode="absolute")],
                         ids=["full", "c", "caf2_absolute"])
def test_padding_values_never_change_the_result(options):
  rng = np.random.default_rng(123)
  noisy = {k: v.copy() for k, v in BATCH.items()}
  pad = noisy["valid"] == 0
  noisy["probs"][pad] = rng.random((pad.sum(), C + 1)).astype(np.float32) * 50 - 25
  noisy["attention"][pad] = rng.normal(size=pad.sum()).astype(np.float32) * 9
  noisy["features"][pad] = rng.normal(size=(pad.sum(), D)).astype(np.float32) * 9
  slot = noisy["point_valid"] == 0
  noisy["point_index"][slot] = rng.integers(-50, 50, slot.sum())
  noisy["point_label"][slot] = rng.integers(-5, 5, slot.sum())
  np.testing.assert_array_equal(_run(noisy, **options), _run(BATCH, **options))


def test_bool_masks_give_the_same_labels_as_float_masks():
  as_bool = dict(BATCH)
  as_bool["valid"] = BATCH["valid"] > 0
  as_bool["point_valid"] = BATCH["point_valid"] > 0
  f = jax.jit(jax.vmap(mplg.pseudo_labels))
  np.testing.assert_array_equal(f(*(as_bool[k] for k in ARG_ORDER)), _run(BATCH))


@pytest.mark.parametrize("shape", [(1, 1, 3), (7, 2, 4), (41, 7, 5)],
                         ids=["one_snippet", "seven_snippets", "forty_one_snippets"])
def test_other_sizes_match_the_loop_reference(shape):
  t_len, n_slots, dim = shape
  cases = []
  for seed in range(3):
    rng = np.random.default_rng(100 + seed)
    tv = [t_len, max(1, t_len - 3), t_len // 2][seed]
    n_pts = [min(2, n_slots), 0, 1][seed]
    idx = rng.choice(tv, size=min(n_pts, tv), replace=False) if tv else []
    pts = [(int(p), int(rng.integers(0, C))) for p in idx]
    cases.append(_make_case(200 + seed, t_len=t_len, n_slots=n_slots, dim=dim,
                            valid=_prefix(tv, t_len), points=pts))
  batch = _stack(cases)
  out = _run(batch, variant="full")
  _check_structure(out, batch)
  for b, case in enumerate(cases):
    np.testing.assert_array_equal(out[b], ref_pseudo_labels(case), err_msg=f"case {b}")


def test_unusual_ratios_follow_python_floor_and_half_even_round():
  # top_ratio 0.7 * 10 is 7.000000000000001 in Python (float32 would give 6.9999995) and 0.7 * 90
  # is 62.99999999999999 (9-decimal rounding makes it 63); neg_ratio 0.5 makes round(0.5 * k) hit
  # half-way points (k odd), which Python rounds to even.
  options = dict(variant="ca", top_ratio=0.7, neg_ratio=0.5)
  cases = [_make_case(300 + i, valid=_prefix(tv), points=[(0, 1)])
           for i, tv in enumerate([10, 7, 5, 13, 24, 3])]
  batch = _stack(cases)
  out = _run(batch, **options)
  _check_structure(out, batch)
  for b, case in enumerate(cases):
    np.testing.assert_array_equal(out[b], ref_pseudo_labels(case, **options), err_msg=f"{b}")
  assert mplg.count_table(10, 0.7)[10] == 7 and mplg.count_table(90, 0.7)[90] == 63
  assert list(mplg.count_table(5, 0.5, use_round=True)) == [0, 0, 1, 2, 2, 2]


def test_no_point_slots_at_all_is_supported():
  case = dict(CASES["no_point"])
  for key in ("point_index", "point_label", "point_valid"):
    case[key] = case[key][:0]
  out = jax.jit(mplg.pseudo_labels)(*(case[k] for k in ARG_ORDER))
  np.testing.assert_array_equal(out, ref_pseudo_labels(case))


def test_jitted_vmapped_batch_is_traced_once_for_new_values():
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(*args):
    return jax.vmap(mplg.pseudo_labels)(*args)

  small = {k: v[:4, ...] for k, v in BATCH.items()}
  first = step(*(small[k] for k in ARG_ORDER))
  changed = dict(small)
  changed["attention"] = small["attention"][:, ::-1].copy()
  changed["valid"] = small["valid"][::-1].copy()
  second = step(*(changed[k] for k in ARG_ORDER))
  assert first.shape == second.shape == (4, T, C + 1)


def test_pplm_labels_match_the_loop_reference():
  f = jax.jit(jax.vmap(mplg.pplm_labels))
  keys = [k for k in ARG_ORDER if k != "features"]
  batch = dict(BATCH)
  batch["attention"] = BATCH["attention"] * 1.0  # Copy.
  batch["attention"][::2] = 1.0 - 0.9 * batch["attention"][::2]  # Spread attention over [0.1, 1].
  out = np.asarray(f(*(batch[k] for k in keys)))
  _check_structure(out, batch)
  assert out[..., 2].sum() > 0 and out[..., :2].sum() > 0
  for b, name in enumerate(CASE_NAMES):
    case = {k: batch[k][b] for k in ARG_ORDER}
    np.testing.assert_array_equal(out[b], ref_pplm_labels(case), err_msg=name)


@pytest.mark.parametrize("bad", [dict(variant="cf"), dict(threshold_mode="percent"),
                                 dict(top_ratio=0.0), dict(theta=1.5), dict(neg_ratio=-1.0)],
                         ids=["unknown_variant", "unknown_threshold_mode", "zero_top_ratio",
                              "theta_above_one", "negative_neg_ratio"])
def test_bad_options_raise_value_error_before_any_jax_op(bad):
  with pytest.raises(ValueError, match="mplg"):
    # None inputs: nothing is touched before the options are checked.
    mplg.pseudo_labels(None, None, None, None, None, None, None, **bad)


def test_unknown_variant_message_lists_the_valid_ones():
  with pytest.raises(ValueError, match="c, ca, caf1, caf2, full"):
    mplg.pseudo_labels(None, None, None, None, None, None, None, variant="xyz")


def test_wrong_shapes_fail_at_entry():
  case = CASES["one_point"]
  args = [case[k] for k in ARG_ORDER]
  args[1] = args[1][:-1]  # attention [T-1]
  with pytest.raises(AssertionError):
    mplg.pseudo_labels(*args)


def test_label_quality_counts_precision_and_coverage():
  gt = np.zeros((4, 3), np.float32)
  gt[[0, 1, 2, 3], [0, 0, 1, 2]] = 1.0
  labels = np.zeros((4, 3), np.float32)
  labels[[0, 2, 3], [0, 0, 2]] = 1.0
  q = mplg.label_quality(labels, gt)
  np.testing.assert_allclose(q["labelled"], [2, 0, 1])
  np.testing.assert_allclose(q["correct"], [1, 0, 1])
  np.testing.assert_allclose(q["precision"], [0.5, 0, 1])
  np.testing.assert_allclose(q["coverage"], [0.5, 0, 1])


@pytest.mark.parametrize("miner", list(mplg.VARIANTS) + ["pplm"])
@pytest.mark.parametrize("threshold_mode", mplg.THRESHOLD_MODES)
def test_with_point_classes_only_no_variant_labels_a_class_the_points_do_not_name(
    miner, threshold_mode):
  """Hand cases: a video whose only points are MaE gets no ME label; a video with no point gets
  no foreground label, only background; without the option the same videos do get them."""
  t_len = 12
  probs = np.full((t_len, C + 1), 0.9, np.float32)  # every class passes every threshold
  probs[:, 2] = 0.05
  att = np.linspace(1.0, 0.05, t_len).astype(np.float32)
  feats = np.random.default_rng(0).normal(size=(t_len, D)).astype(np.float32)
  valid = np.ones(t_len, np.float32)

  def labels(points, restrict):
    pidx = np.zeros(N, np.int32)
    plab = np.zeros(N, np.int32)
    pval = np.zeros(N, np.float32)
    for n, (p, lab) in enumerate(points):
      pidx[n], plab[n], pval[n] = p, lab, 1.0
    if miner == "pplm":
      return np.asarray(mplg.pplm_labels(probs, att, pidx, plab, pval, valid,
                                         point_classes_only=restrict))
    return np.asarray(mplg.pseudo_labels(probs, att, feats, pidx, plab, pval, valid,
                                         variant=miner, threshold_mode=threshold_mode,
                                         point_classes_only=restrict))

  only_mae = labels([(1, 1)], True)
  assert only_mae[:, 0].sum() == 0, "an ME label in a video whose only point is an MaE"
  assert only_mae[:, 1].sum() >= 1
  none = labels([], True)
  assert none[:, :C].sum() == 0, "a foreground label in a video without a point"
  if miner != "pplm":  # PPLM's background needs attention below its threshold
    assert none[:, C].sum() > 0, "a video without a point still gets background labels"
  # Without the option the absent classes are labelled (the test can fail): a video without a
  # point in every miner (W = 1 there), and ME beside an MaE point where no W is applied.
  assert labels([], False)[:, :C].sum() > 0
  if miner not in ("caf2", "full"):  # these apply W, which is already 0 for an absent class
    assert labels([(1, 1)], False)[:, 0].sum() > 0


def test_pplm_with_point_classes_only_matches_the_loop_reference():
  f = jax.jit(jax.vmap(functools.partial(mplg.pplm_labels, point_classes_only=True)))
  keys = [k for k in ARG_ORDER if k != "features"]
  batch = dict(BATCH)
  batch["attention"] = BATCH["attention"] * 1.0
  batch["attention"][::2] = 1.0 - 0.9 * batch["attention"][::2]
  out = np.asarray(f(*(batch[k] for k in keys)))
  for b, name in enumerate(CASE_NAMES):
    case = {k: batch[k][b] for k in ARG_ORDER}
    np.testing.assert_array_equal(out[b], ref_pplm_labels(case, point_classes_only=True),
                                  err_msg=name)
