"""The video-level and snippet-level losses of Section 3.5, over masked, fixed-shape batches.

All functions take batched arrays with a snippet mask ``valid [B, T]`` (1 = real snippet) and a row
mask ``row_valid [B]`` (1 = real video; padded batch rows contribute nothing). Averages are over
valid snippets of each video, then over valid videos.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import chex
import jax
import jax.numpy as jnp

_EPS = 1e-6


def _row_mean(per_row: jax.Array, row_valid: jax.Array) -> jax.Array:
  """Mean of ``per_row [B]`` over valid rows (0 when there is none)."""
  return jnp.sum(per_row * row_valid) / jnp.maximum(jnp.sum(row_valid), 1.0)


def _snippet_mean(x: jax.Array, valid: jax.Array) -> jax.Array:
  """Per-row mean of ``x [B, T]`` over valid snippets: ``[B]``."""
  return jnp.sum(x * valid, axis=1) / jnp.maximum(jnp.sum(valid, axis=1), 1.0)


def topk_k(num_valid: jax.Array, ratio: float) -> jax.Array:
  """The MIL pooling size ``k = ceil(T_valid / r)`` (at least 1)."""
  return jnp.maximum(jnp.ceil(num_valid / ratio), 1.0).astype(jnp.int32)


def static_max_k(length: int, ratios: Sequence[float]) -> int:
  """The largest ``k`` any video of a ``length``-snippet bucket can need: a static top-k size."""
  return max(1, max(math.ceil(length / r) for r in ratios))


def masked_topk_mean(x: jax.Array, valid: jax.Array, k: jax.Array, k_max: int) -> jax.Array:
  """Mean of the ``k`` largest valid entries per row, with a static maximum ``k_max``.

  Args:
    x: [B, T] scores.
    valid: [B, T] snippet mask.
    k: [B] int, the dynamic k per row (clipped to [1, min(k_max, T_valid)]).
    k_max: static upper bound on k.

  Returns:
    [B] the masked top-k means (0 for a row without valid snippets).
  """
  chex.assert_rank(x, 2)
  chex.assert_equal_shape([x, valid])
  chex.assert_shape(k, (x.shape[0],))
  k_max = min(int(k_max), x.shape[1])
  top, _ = jax.lax.top_k(jnp.where(valid > 0, x, -jnp.inf), k_max)  # [B, k_max]
  n_valid = jnp.sum(valid > 0, axis=1)
  k = jnp.clip(k, 1, jnp.maximum(jnp.minimum(k_max, n_valid), 1))
  # Only the first min(k, T_valid) entries are real; a row with no valid snippet pools to 0.
  take = jnp.arange(k_max)[None, :] < jnp.minimum(k, n_valid)[:, None]  # [B, k_max]
  top = jnp.where(take, top, 0.0)
  return jnp.sum(top, axis=1) / k.astype(x.dtype)


def _bce(p: jax.Array, y: jax.Array) -> jax.Array:
  p = jnp.clip(p, _EPS, 1.0 - _EPS)
  return -(y * jnp.log(p) + (1.0 - y) * jnp.log1p(-p))


def mil_loss(scores: jax.Array, labels: jax.Array, valid: jax.Array, row_valid: jax.Array,
             ratios: Sequence[float], k_max: int,
             fixed_k: Optional[Sequence[int]] = None) -> jax.Array:
  """Video-level MIL loss: class-wise masked top-k mean pooling, then binary cross-entropy.

  ``k_c = ceil(T_valid / r_c)`` per class (MC-WES's video-level distribution consistency), or
  ``k_c = fixed_k[c]`` snippets where that is positive (a class's typical length: an ME lasts
  2-3 snippets, so ``ceil(T / 16)`` = 23 at T = 367 pools mostly background).

  Args:
    scores: [B, T, K] snippet probabilities.
    labels: [B, K] video-level labels in {0, 1}.
    valid: [B, T]; row_valid: [B].
    ratios: K pooling ratios r_c.
    k_max: static top-k bound (see :func:`static_max_k`).
    fixed_k: optional K ints; ``fixed_k[c] > 0`` replaces class c's ratio by that many
      snippets (clipped to the video's valid snippets).

  Returns:
    Scalar: BCE averaged over classes and valid videos.
  """
  b, t, k_classes = scores.shape
  chex.assert_shape(labels, (b, k_classes))
  chex.assert_shape(valid, (b, t))
  if len(ratios) != k_classes:
    raise ValueError(f"{len(ratios)} MIL ratios for {k_classes} classes")
  fixed_k = tuple(fixed_k) if fixed_k is not None else (0,) * k_classes
  if len(fixed_k) != k_classes:
    raise ValueError(f"{len(fixed_k)} fixed MIL k for {k_classes} classes")
  n_valid = jnp.sum(valid, axis=1)

  def k_of(c):
    if fixed_k[c] > 0:
      return jnp.full((b,), int(fixed_k[c]), jnp.int32)
    return topk_k(n_valid, ratios[c])

  pooled = jnp.stack([masked_topk_mean(scores[..., c], valid, k_of(c), k_max)
                      for c in range(k_classes)], axis=-1)  # [B, K]
  return _row_mean(jnp.mean(_bce(pooled, labels), axis=-1), row_valid)


def guide_loss(attention, bg_prob, valid, row_valid):
  """``mean |1 - A - P_bg|`` over valid snippets: attention and background exclude each other."""
  return _row_mean(_snippet_mean(jnp.abs(1.0 - attention - bg_prob), valid), row_valid)


def sparsity_loss(attention, valid, row_valid):
  """``mean A`` over valid snippets: few snippets are foreground."""
  return _row_mean(_snippet_mean(attention, valid), row_valid)


def mutual_loss(a_rgb, a_flow, valid, row_valid):
  """CO-Net mutual learning: ``(MSE(a_rgb, sg(a_flow)) + MSE(a_flow, sg(a_rgb))) / 2``."""
  sg = jax.lax.stop_gradient
  mse = (_snippet_mean(jnp.square(a_rgb - sg(a_flow)), valid)
         + _snippet_mean(jnp.square(a_flow - sg(a_rgb)), valid))
  return _row_mean(0.5 * mse, row_valid)


def snippet_probabilities(suppressed: jax.Array, probs: jax.Array) -> jax.Array:
  """The (C+1)-vector of eq. 16: suppressed foreground and background probabilities, normalised.

  Args:
    suppressed: [B, T, C] ``A * P[:, :C]``.
    probs: [B, T, C+1] ``P``.

  Returns:
    [B, T, C+1], rows summing to one.
  """
  q = jnp.concatenate([suppressed, probs[..., -1:]], axis=-1)
  return q / jnp.maximum(jnp.sum(q, axis=-1, keepdims=True), _EPS)


def snippet_loss(suppressed, probs, labels, valid, row_valid):
  """Snippet-level cross-entropy (eq. 16) at labelled snippets.

  Args:
    suppressed: [B, T, C]; probs: [B, T, C+1].
    labels: [B, T, C+1] one-hot rows at labelled snippets, zero rows elsewhere.
    valid: [B, T]; row_valid: [B].

  Returns:
    Scalar: per video the summed cross-entropy over labelled snippets divided by their number,
    averaged over videos that have a labelled snippet.
  """
  chex.assert_equal_shape([labels, probs])
  q = snippet_probabilities(suppressed, probs)
  labels = labels * valid[..., None]
  ce = -jnp.sum(labels * jnp.log(jnp.clip(q, _EPS, 1.0)), axis=(1, 2))  # [B]
  n = jnp.sum(labels, axis=(1, 2))
  has = (n > 0).astype(ce.dtype) * row_valid
  return _row_mean(ce / jnp.maximum(n, 1.0), has)


def point_labels_dense(point_index, point_label, point_valid, length, num_classes):
  """Scatters padded point labels into dense one-hot snippet rows.

  Args:
    point_index: [N] snippet indices; point_label: [N] classes; point_valid: [N].
    length: T; num_classes: C (background excluded).

  Returns:
    [T, C+1] with a one-hot row at each valid point (a later point wins a shared snippet).
  """
  onehot = jax.nn.one_hot(point_label, num_classes + 1) * point_valid[:, None]  # [N, C+1]
  at = jax.nn.one_hot(point_index, length) * point_valid[:, None]  # [N, T]
  # Last valid point wins at a shared snippet: keep point n only if no later valid point hits t.
  later = jnp.cumsum(at[::-1], axis=0)[::-1] - at  # [N, T] valid points after n at t
  keep = at * (later == 0)
  return jnp.einsum("nt,nc->tc", keep, onehot)
