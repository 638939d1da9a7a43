"""Multi-refined pseudo label generation (MPLG, paper Section 3.3) and a PPLM-style comparator.

Everything here works on ONE video with fixed shapes; callers ``jax.vmap`` over a batch. Arrays:

* ``probs``       ``# [T, C+1]`` sigmoid TCAM, background last (C=2: ME=0, MaE=1, bg=2).
* ``attention``   ``# [T]``      class-agnostic attention scores.
* ``features``    ``# [T, D]``   fused features X.
* ``point_index`` ``# [N]``      int32 snippet index of each point-level label.
* ``point_label`` ``# [N]``      int32 class of each point (0..C-1).
* ``point_valid`` ``# [N]``      float or bool; nonzero marks a real point.
* ``valid``       ``# [T]``      float or bool; nonzero marks a real snippet (any pattern, not only a
  prefix).

Only valid snippets and *effective* points take part anywhere. A point is effective when its slot is
valid, its index lies in ``[0, T)`` and hits a valid snippet, and its label lies in ``[0, C)``;
anything else is ignored (nothing can be raised under ``jit``). ``Tv`` is the number of valid
snippets.

Each MPLG step is its own small pure function below, so another reading of the paper is a switch
in :func:`pseudo_labels`, not a copy of it. Ties are resolved exactly: rankings use a lexicographic
sort on (invalid, key, index), so equal scores go to the lower snippet index; equal class scores go
to the lower class index. ``k`` and the background count come from host-side tables built with
Python's ``math.floor`` and ``round`` (round-half-even) for every possible ``Tv`` (products first
rounded to 9 decimals, see :func:`count_table`), so they match a plain-Python computation exactly.
"""

from __future__ import annotations

import math
from typing import Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

VARIANTS = ("c", "ca", "caf1", "caf2", "full")
THRESHOLD_MODES = ("relative", "absolute")
_EPS = 1e-8


# ------------------------------------------------------------------------------------------------
# Option checks (host side, before any JAX op).


def _check_options(*, top_ratio, theta, neg_ratio, variant, threshold_mode) -> None:
  """Raises ValueError naming the bad option."""
  if variant not in VARIANTS:
    raise ValueError(f"mplg: unknown variant {variant!r}; valid variants are {', '.join(VARIANTS)}")
  if threshold_mode not in THRESHOLD_MODES:
    raise ValueError(f"mplg: unknown threshold_mode {threshold_mode!r}; valid modes are "
                     f"{', '.join(THRESHOLD_MODES)}")
  if not 0.0 < float(top_ratio) <= 1.0:
    raise ValueError(f"mplg: top_ratio must be in (0, 1], got {top_ratio!r}")
  if not 0.0 <= float(theta) <= 1.0:
    raise ValueError(f"mplg: theta must be in [0, 1], got {theta!r}")
  if not float(neg_ratio) >= 0.0:
    raise ValueError(f"mplg: neg_ratio must be >= 0, got {neg_ratio!r}")


check_options = _check_options  # public: configs are validated with it before training


def _check_shapes(probs, attention, features, point_index, point_label, point_valid, valid):
  """Asserts the documented shapes; returns (T, C, N)."""
  chex.assert_rank(probs, 2)
  t, c1 = probs.shape
  if c1 < 2:
    raise ValueError(f"mplg: probs must be [T, C+1] with at least one foreground class, "
                     f"got shape {probs.shape}")
  chex.assert_rank([point_index, point_label, point_valid], 1)
  n = point_index.shape[0]
  chex.assert_shape(attention, (t,))
  chex.assert_shape(valid, (t,))
  if features is not None:
    chex.assert_shape(features, (t, None))
  chex.assert_shape([point_index, point_label, point_valid], (n,))
  return t, c1 - 1, n


# ------------------------------------------------------------------------------------------------
# Shared helpers.


def _as_mask(x) -> jax.Array:
  """Float or bool mask -> bool (nonzero is True)."""
  return jnp.asarray(x).astype(bool)


def count_table(num_snippets: int, ratio: float, *, use_round: bool = False) -> np.ndarray:
  """Host-side table ``f(i)`` for ``i = 0..num_snippets``.

  ``f(i) = max(1, floor(ratio * i))`` (the top-k size), or ``round(ratio * i)`` with Python's
  round-half-even when ``use_round``. The product is first rounded to 9 decimals so that a decimal
  ratio is not undone by binary representation (``0.7 * 90`` is ``62.99999999999999`` in doubles;
  this gives 63), as in ``pwes_jax.evaluation.proposals``. Indexing the table with a traced count
  keeps this host arithmetic exact under ``jit``.

  Returns:
    ``# [num_snippets + 1]`` int32.
  """
  products = [round(ratio * i, 9) for i in range(num_snippets + 1)]
  if use_round:
    vals = [round(x) for x in products]
  else:
    vals = [max(1, math.floor(x)) for x in products]
  return np.asarray(vals, dtype=np.int32)


def rank(key: jax.Array, valid: jax.Array) -> jax.Array:
  """Ascending rank of each valid entry of ``key``; ties to the lower index; invalid entries last.

  Args:
    key: ``# [T]`` float.
    valid: ``# [T]`` bool.

  Returns:
    ``# [T]`` int32; valid entries get ``0..Tv-1``, invalid ones ``Tv..T-1``.
  """
  t = key.shape[0]
  iota = jnp.arange(t, dtype=jnp.int32)
  invalid = jnp.logical_not(valid).astype(jnp.int32)
  key = jnp.where(valid, key, 0.0)
  _, _, order = lax.sort((invalid, key, iota), num_keys=3)
  return jnp.zeros((t,), jnp.int32).at[order].set(iota)


def effective_points(point_index, point_label, point_valid, valid, num_classes: int):
  """Which point slots take part, and which snippet each valid snippet's last point sets.

  Args:
    point_index: ``# [N]`` int.
    point_label: ``# [N]`` int.
    point_valid: ``# [N]`` float or bool.
    valid: ``# [T]`` bool.
    num_classes: C (foreground classes).

  Returns:
    ``(pv, idx, hit, point_class)``: ``pv # [N]`` bool effective points; ``idx # [N]`` int32
    indices clipped into range (safe for gathers); ``hit # [T, N]`` bool, point n sits on snippet
    t; ``point_class # [T]`` int32 class of the LAST effective point on each snippet, -1 if none.
  """
  t = valid.shape[0]
  raw = jnp.asarray(point_index).astype(jnp.int32)
  lab = jnp.asarray(point_label).astype(jnp.int32)
  idx = jnp.clip(raw, 0, t - 1)
  pv = (_as_mask(point_valid) & (raw >= 0) & (raw < t) & (lab >= 0) & (lab < num_classes)
        & valid[idx])
  hit = (idx[None, :] == jnp.arange(t, dtype=jnp.int32)[:, None]) & pv[None, :]  # [T, N]
  n = raw.shape[0]
  last = jnp.max(jnp.where(hit, jnp.arange(n, dtype=jnp.int32)[None, :], -1), axis=1,
                 initial=-1)  # [T]
  point_class = jnp.where(last >= 0, lab[jnp.clip(last, 0, max(n - 1, 0))] if n else -1, -1)
  return pv, idx, hit, point_class.astype(jnp.int32)


def _unit(x: jax.Array) -> jax.Array:
  """L2-normalises the last axis (zero vectors stay zero)."""
  norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
  return x / jnp.maximum(norm, _EPS)


# ------------------------------------------------------------------------------------------------
# The seven steps.


def foreground_similarity(features, idx, pv, hit, valid) -> jax.Array:
  """Step 1 (eqs. 1-2): min-max normalised foreground-level modulation factor m.

  ``S[t, n] = cos(X_t, X_{p_n})``; ``m_t = max_n S[t, n]`` over effective points; m is min-max
  normalised over valid snippets (all 1 when max == min) and set to 1 at point snippets. With no
  effective point m is all 1 (no modulation).

  Args:
    features: ``# [T, D]`` float32.
    idx: ``# [N]`` int32 clipped point indices.
    pv: ``# [N]`` bool effective points.
    hit: ``# [T, N]`` bool.
    valid: ``# [T]`` bool.

  Returns:
    ``# [T]`` float32 m.
  """
  xn = _unit(features)  # [T, D]
  sim = xn @ xn[idx].T  # [T, N]
  m = jnp.max(jnp.where(pv[None, :], sim, -jnp.inf), axis=1, initial=-jnp.inf)  # [T]
  m = jnp.where(valid, m, 0.0)
  lo = jnp.min(jnp.where(valid, m, jnp.inf))
  hi = jnp.max(jnp.where(valid, m, -jnp.inf))
  span = hi - lo
  m = jnp.where(span > 0, (m - lo) / jnp.where(span > 0, span, 1.0), 1.0)
  m = jnp.where(jnp.any(hit, axis=1), 1.0, m)
  return jnp.where(jnp.any(pv), m, 1.0).astype(jnp.float32)


def top_k_mask(score, valid, k) -> jax.Array:
  """Step 2 (eq. 3): 1 for the k valid snippets with the largest score (ties to lower index).

  Args:
    score: ``# [T]`` float32.
    valid: ``# [T]`` bool.
    k: int32 scalar (may be traced).

  Returns:
    ``# [T]`` float32 mask M.
  """
  r = rank(0.0 - score, valid)  # 0.0 - x turns -0.0 into +0.0.
  return (valid & (r < k)).astype(jnp.float32)


def class_similarity_weights(features, idx, pv, point_label, num_classes: int) -> jax.Array:
  """Step 3 (eqs. 4-6): class-level modulation weights W.

  ``f_c`` = mean of X at the effective points of class c; ``W[t, :]`` = softmax over the classes
  present in the video of ``cos(X_t, f_c)``; absent classes get 0 (a single present class gets 1).
  With no effective point W is all 1.

  Args:
    features: ``# [T, D]`` float32.
    idx: ``# [N]`` int32 clipped point indices.
    pv: ``# [N]`` bool effective points.
    point_label: ``# [N]`` int.
    num_classes: C.

  Returns:
    ``# [T, C]`` float32 W.
  """
  onehot = (jax.nn.one_hot(jnp.asarray(point_label).astype(jnp.int32), num_classes)
            * pv[:, None])  # [N, C]
  counts = jnp.sum(onehot, axis=0)  # [C]
  present = counts > 0
  centers = (onehot.T @ features[idx]) / jnp.maximum(counts, 1.0)[:, None]  # [C, D]
  cos = _unit(features) @ _unit(centers).T  # [T, C]
  logits = jnp.where(present[None, :], cos, -jnp.inf)
  top = jnp.max(logits, axis=1, keepdims=True)
  top = jnp.where(jnp.isfinite(top), top, 0.0)
  e = jnp.where(present[None, :], jnp.exp(logits - top), 0.0)
  w = e / jnp.maximum(jnp.sum(e, axis=1, keepdims=True), _EPS)
  return jnp.where(jnp.any(present), w, 1.0).astype(jnp.float32)


def drop_low(ptil, probs_fg, valid) -> jax.Array:
  """Step 4 (eq. 7): zero ``ptil[t, c]`` below the mean of the original ``probs[:, c]``.

  Args:
    ptil: ``# [T, C]`` float32.
    probs_fg: ``# [T, C]`` float32 original TCAM without background.
    valid: ``# [T]`` bool.

  Returns:
    ``# [T, C]`` float32.
  """
  tv = jnp.sum(valid.astype(jnp.float32))
  mean = jnp.sum(jnp.where(valid[:, None], probs_fg, 0.0), axis=0) / jnp.maximum(tv, 1.0)  # [C]
  return jnp.where(ptil < mean[None, :], 0.0, ptil)


def foreground_labels(ptil, valid, *, theta: float, threshold_mode: str) -> jax.Array:
  """Step 5 (eq. 8): one foreground class per snippet, or none.

  ``relative``: ``ptil > 0`` and ``ptil >= (1 - theta) * max_t ptil[:, c]``; ``absolute``:
  ``ptil > theta``. When several classes pass, the largest ``ptil`` wins (ties to the lower class).

  Args:
    ptil: ``# [T, C]`` float32 (zero at invalid snippets).
    valid: ``# [T]`` bool.
    theta: threshold.
    threshold_mode: ``"relative"`` or ``"absolute"``.

  Returns:
    ``# [T, C]`` float32, at most one 1 per row.
  """
  if threshold_mode == "relative":
    top = jnp.max(jnp.where(valid[:, None], ptil, 0.0), axis=0)  # [C]
    passes = (ptil > 0) & (ptil >= (1.0 - theta) * top[None, :])
  else:
    passes = ptil > theta
  passes = passes & valid[:, None]
  best = jnp.argmax(jnp.where(passes, ptil, -jnp.inf), axis=1)  # first max -> lower class.
  return (jax.nn.one_hot(best, ptil.shape[1]) * jnp.any(passes, axis=1, keepdims=True)).astype(
      jnp.float32)


def background_mask(attention, valid, n_bg, exclude) -> jax.Array:
  """Step 6 (eq. 9): the n_bg valid snippets of lowest attention, minus the excluded ones.

  The n_bg lowest are chosen first (ties to the lower index) and excluded snippets are then
  dropped, not replaced.

  Args:
    attention: ``# [T]`` float32 original attention.
    valid: ``# [T]`` bool.
    n_bg: int32 scalar.
    exclude: ``# [T]`` bool (point snippets and foreground-labelled snippets).

  Returns:
    ``# [T]`` float32.
  """
  r = rank(attention + 0.0, valid)
  return (valid & (r < n_bg) & jnp.logical_not(exclude)).astype(jnp.float32)


def apply_points(labels, point_class) -> jax.Array:
  """Step 7 (eq. 15): rows at point snippets become one-hot of the point's class.

  Args:
    labels: ``# [T, C+1]`` float32.
    point_class: ``# [T]`` int32 (-1 where no point; the later point in the array wins).

  Returns:
    ``# [T, C+1]`` float32.
  """
  onehot = jax.nn.one_hot(point_class, labels.shape[1], dtype=jnp.float32)  # -1 -> zeros.
  return jnp.where((point_class >= 0)[:, None], onehot, labels)


# ------------------------------------------------------------------------------------------------
# Public entry points.


def pseudo_labels(probs, attention, features, point_index, point_label, point_valid, valid, *,
                  top_ratio: float = 0.3, theta: float = 0.8, neg_ratio: float = 2.0,
                  variant: str = "full", threshold_mode: str = "relative",
                  point_classes_only: bool = False) -> jax.Array:
  """MPLG pseudo labels for one video (paper Section 3.3, Algorithm 1, Table II variants).

  Steps: (1) ``A' = attention * m`` with the foreground-level similarity m; (2) top-k mask of A',
  ``k = max(1, floor(top_ratio * Tv))``, ``Phat = M * probs[:, :C]``; (3) ``Ptil = Phat * W`` with
  the class-level similarity W; (4) drop ``Ptil`` below the mean original probability; (5)
  foreground labels by threshold; (6) ``n_bg = min(round(neg_ratio * k), Tv - k)`` lowest-attention
  valid snippets are background, except point and foreground snippets; (7) points win.

  Variants (all end with steps 4-7): ``"c"`` Ptil = probs (no mask, no similarities; k still sizes
  step 6); ``"ca"`` top-k of the raw attention; ``"caf1"`` steps 1-2; ``"caf2"`` raw-attention
  mask then step 3; ``"full"`` steps 1-3.

  With no effective point: m = 1, W = 1, and step 7 does nothing. ``round`` is Python's
  round-half-even. If two effective points of different classes share a snippet, the later slot
  wins.

  Args:
    probs: ``# [T, C+1]`` sigmoid TCAM, background last.
    attention: ``# [T]``.
    features: ``# [T, D]`` fused features.
    point_index: ``# [N]`` int32.
    point_label: ``# [N]`` int32.
    point_valid: ``# [N]`` float or bool.
    valid: ``# [T]`` float or bool.
    top_ratio: fraction of valid snippets in the top-k mask, in (0, 1].
    theta: foreground threshold, in [0, 1].
    neg_ratio: background count per top-k snippet, >= 0.
    variant: one of :data:`VARIANTS`.
    threshold_mode: ``"relative"`` (this function's default) or ``"absolute"`` (literal
      ``Ptil > theta``; the configs' default, docs/mplg.md).
    point_classes_only: ``Ptil[:, c] = 0`` for every class c that no effective point names,
      before steps 4-5 and in every variant (paper: "if a point-level label for a particular
      category is absent ... we assign a value of 0 to [W] for the current category"; the
      classes a video's points name are its video-level labels): no foreground label of an
      absent class, and a video with no point gets background labels only. Off: every class
      may be labelled, and with no point ``m = W = 1``.

  Returns:
    ``# [T, C+1]`` float32 in {0, 1}; at most one 1 per row; unlabelled and padded rows are zero.

  Raises:
    ValueError: unknown variant / threshold mode or out-of-range ratio (before any JAX op).
    AssertionError: (from chex) an input has the wrong shape.
  """
  _check_options(top_ratio=top_ratio, theta=theta, neg_ratio=neg_ratio, variant=variant,
                 threshold_mode=threshold_mode)
  t, c, _ = _check_shapes(probs, attention, features, point_index, point_label, point_valid,
                          valid)
  probs = lax.stop_gradient(jnp.asarray(probs, jnp.float32))
  attention = lax.stop_gradient(jnp.asarray(attention, jnp.float32))
  features = lax.stop_gradient(jnp.asarray(features, jnp.float32))
  valid = _as_mask(valid)
  probs_fg = jnp.where(valid[:, None], probs[:, :c], 0.0)  # [T, C]
  attention = jnp.where(valid, attention, 0.0)
  features = jnp.where(valid[:, None], features, 0.0)

  pv, idx, hit, point_class = effective_points(point_index, point_label, point_valid, valid, c)
  tv = jnp.sum(valid.astype(jnp.int32))
  k = jnp.asarray(count_table(t, top_ratio))[tv]

  if variant == "c":
    ptil = probs_fg
  else:
    score = attention
    if variant in ("caf1", "full"):
      score = attention * foreground_similarity(features, idx, pv, hit, valid)
    ptil = top_k_mask(score, valid, k)[:, None] * probs_fg
    if variant in ("caf2", "full"):
      ptil = ptil * class_similarity_weights(features, idx, pv, point_label, c)

  if point_classes_only:  # W = 0 for a category without a point, in every variant
    ptil = ptil * point_classes(point_label, pv, c)[None, :]
  ptil = drop_low(ptil, probs_fg, valid)
  fg = foreground_labels(ptil, valid, theta=float(theta), threshold_mode=threshold_mode)

  n_bg = jnp.asarray(count_table(t, neg_ratio, use_round=True))[k]
  n_bg = jnp.maximum(jnp.minimum(n_bg, tv - k), 0)
  exclude = jnp.any(hit, axis=1) | jnp.any(fg > 0, axis=1)
  bg = background_mask(attention, valid, n_bg, exclude)

  labels = jnp.concatenate([fg, bg[:, None]], axis=1)
  labels = apply_points(labels, point_class)
  return jnp.where(valid[:, None], labels, 0.0).astype(jnp.float32)


def point_classes(point_label, pv, num_classes: int) -> jax.Array:
  """The classes the effective points name (the video-level labels): ``# [C]`` float32 in
  {0, 1}; all zero for a video without an effective point.

  Args:
    point_label: ``# [N]`` int.
    pv: ``# [N]`` bool, the effective points (:func:`effective_points`).
    num_classes: C.
  """
  onehot = jax.nn.one_hot(jnp.clip(point_label, 0, num_classes - 1), num_classes) * pv[:, None]
  return (jnp.sum(onehot, axis=0) > 0).astype(jnp.float32)


def pplm_labels(probs, attention, point_index, point_label, point_valid, valid, *,
                fg_threshold: float = 0.5, bg_threshold: float = 0.1,
                point_classes_only: bool = False) -> jax.Array:
  """PPLM-style pseudo labels: the "+PPLM" comparator of Table I (after CRRC-Net, ref. [37]).

  This is an APPROXIMATION of a method without public code: foreground class c where
  ``attention * probs[:, c] > fg_threshold`` (the largest wins, ties to the lower class);
  background where ``attention < bg_threshold`` and no foreground label; then points win (the
  later slot on a shared snippet). Only valid snippets and effective points take part.

  Args:
    probs: ``# [T, C+1]`` sigmoid TCAM, background last.
    attention: ``# [T]``.
    point_index: ``# [N]`` int32.
    point_label: ``# [N]`` int32.
    point_valid: ``# [N]`` float or bool.
    valid: ``# [T]`` float or bool.
    fg_threshold: foreground threshold on ``attention * probs``.
    bg_threshold: background threshold on ``attention``.
    point_classes_only: foreground only for the classes the video's points name (as in
      :func:`pseudo_labels`).

  Returns:
    ``# [T, C+1]`` float32, at most one 1 per row, padded rows zero.
  """
  t, c, _ = _check_shapes(probs, attention, None, point_index, point_label, point_valid, valid)
  probs = lax.stop_gradient(jnp.asarray(probs, jnp.float32))
  attention = lax.stop_gradient(jnp.asarray(attention, jnp.float32))
  valid = _as_mask(valid)
  pv, _, _, point_class = effective_points(point_index, point_label, point_valid, valid, c)
  score = attention[:, None] * probs[:, :c]  # [T, C]
  passes = (score > fg_threshold) & valid[:, None]
  if point_classes_only:
    passes = passes & (point_classes(point_label, pv, c) > 0)[None, :]
  best = jnp.argmax(jnp.where(passes, score, -jnp.inf), axis=1)
  is_fg = jnp.any(passes, axis=1)
  fg = jax.nn.one_hot(best, c, dtype=jnp.float32) * is_fg[:, None]
  bg = (valid & (attention < bg_threshold) & jnp.logical_not(is_fg)).astype(jnp.float32)
  labels = apply_points(jnp.concatenate([fg, bg[:, None]], axis=1), point_class)
  return jnp.where(valid[:, None], labels, 0.0).astype(jnp.float32)


def label_quality(labels, gt_mask, valid: Optional[jax.Array] = None) -> dict:
  """Precision and coverage of pseudo labels against ground truth, per class (incl. background).

  Args:
    labels: ``# [..., T, C+1]`` pseudo labels in {0, 1}.
    gt_mask: ``# [..., T, C+1]`` one-hot ground truth (background last).
    valid: optional ``# [..., T]`` snippet mask; default: rows where ``gt_mask`` has a 1.

  Returns:
    dict of ``# [C+1]`` float32 arrays: ``labelled`` (labelled snippets), ``correct`` (labelled
    with the true class), ``true`` (snippets of the class), ``precision`` (correct / labelled, 0
    when none), ``coverage`` and its alias ``recall`` (correct / true, 0 when none).
  """
  chex.assert_equal_shape([labels, gt_mask])
  labels = jnp.asarray(labels, jnp.float32)
  gt = jnp.asarray(gt_mask, jnp.float32)
  if valid is None:
    row = jnp.any(gt > 0, axis=-1)
  else:
    row = _as_mask(valid)
  w = row[..., None].astype(jnp.float32)
  axes = tuple(range(labels.ndim - 1))
  labelled = jnp.sum(labels * w, axis=axes)
  correct = jnp.sum(labels * gt * w, axis=axes)
  truth = jnp.sum(gt * w, axis=axes)
  coverage = correct / jnp.maximum(truth, 1.0)
  return {
      "labelled": labelled,
      "correct": correct,
      "true": truth,
      "precision": correct / jnp.maximum(labelled, 1.0),
      "coverage": coverage,
      "recall": coverage,
  }
