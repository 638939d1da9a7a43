"""Distribution-guided Feature Contrastive Learning (DFCL), paper Sections 3.4 and 3.5 (eq. 17).

Three pieces, all pure and jittable with fixed shapes:

* :func:`region_vectors` (DFS module, eqs. 10-11): one video's fused features are split by
  class (ME, MaE, background) and each class's member snippets, in time order, are cut into
  ``regions[c]`` contiguous, nearly equal parts whose means are the region-level vectors. Every
  video yields the same ``R = sum(regions)`` slots: ME slots first, then MaE, then background.
* :class:`MemoryBank` with :func:`init_bank` / :func:`update_bank`: one row of ``R`` L2-normalised
  slots per training video, replaced whenever that video is seen again.
* :func:`contrastive_loss` (eq. 17): InfoNCE of each foreground region vector of the batch
  against the bank slots of *other* videos; same class = positives, every other class
  (the other foreground class and background) = negatives.

Slot classes are static (``slot_classes(regions)``) and never live in the pytree.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import chex
from flax import struct
import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_REGIONS = (2, 3, 10)  # (ME, MaE, background), paper Section 4.3 / Table VII.
_EPS = 1e-12  # Floor on the squared norm in L2 normalisation (zero vectors stay zero).
_NEG = -1e9  # Fill for masked logits; finite so nothing turns into NaN.


def _check_regions(regions: Sequence[int]) -> Tuple[int, ...]:
  """Validates a static ``regions`` tuple and returns it as a tuple of Python ints."""
  try:
    out = tuple(int(r) for r in regions)
  except (TypeError, ValueError) as e:
    raise ValueError(f"dfcl: regions must be a sequence of positive ints, got {regions!r}") from e
  if len(out) < 2 or any(r <= 0 for r in out) or any(int(r) != r for r in regions):
    raise ValueError(
        f"dfcl: regions must hold >= 2 positive ints (foreground classes, then background), "
        f"got {regions!r}")
  return out


def slot_classes(regions: Sequence[int] = DEFAULT_REGIONS) -> np.ndarray:
  """Class of every region slot, e.g. ``(2, 3, 10)`` -> ``[0, 0, 1, 1, 1, 2, ..., 2]``.

  Args:
    regions: regions per class, foreground classes first, background last.

  Returns:
    ``np.ndarray`` int32 ``[R]`` with ``R = sum(regions)``; static (numpy, not traced).
  """
  regions = _check_regions(regions)
  return np.repeat(np.arange(len(regions), dtype=np.int32), regions)


def slot_counts(regions: Sequence[int] = DEFAULT_REGIONS, main_region: bool = False
                ) -> Tuple[int, ...]:
  """Memory-bank slots per class: ``R_c``, plus one for the class's main region-level space
  when ``main_region`` (paper Section 3.4: "we treat all feature set for the c-th class as a
  main region-level space"). Pass the result as ``regions`` to :func:`slot_classes`,
  :func:`init_bank`, :func:`bank_nbytes` and :func:`contrastive_loss`."""
  return tuple(r + int(bool(main_region)) for r in _check_regions(regions))


def _l2_normalize(x: jax.Array) -> jax.Array:
  """L2-normalises the last axis; all-zero vectors stay zero (finite gradient)."""
  sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, _EPS))


def _class_weights(member: jax.Array, num_regions: int) -> jax.Array:
  """Region membership weights of one class.

  Args:
    member: float32 ``[T]``, 1 for the class's member snippets.
    num_regions: static ``R_c``.

  Returns:
    float32 ``[R_c, T]``: ``w[j, t] = 1`` iff snippet ``t`` is a member whose rank ``k``
    (0-based, time order) satisfies ``start_j <= k < end_j``.
  """
  n = jnp.sum(member).astype(jnp.int32)  # []
  rank = jnp.cumsum(member).astype(jnp.int32) - 1  # [T]; rank of member t, garbage elsewhere.
  j = jnp.arange(num_regions, dtype=jnp.int32)  # [R_c]
  start = (j * n) // num_regions  # [R_c]
  end = jnp.maximum(((j + 1) * n) // num_regions, start + 1)  # [R_c]
  inside = (rank[None, :] >= start[:, None]) & (rank[None, :] < end[:, None])  # [R_c, T]
  return inside.astype(jnp.float32) * member[None, :]


def region_vectors(features: jax.Array, labels: jax.Array, valid: jax.Array, *,
                   regions: Sequence[int] = DEFAULT_REGIONS, main_region: bool = False
                   ) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """Region-level vectors of ONE video (DFS module, paper eqs. 10-11).

  For class ``c`` the members are the valid snippets with ``labels[t, c] = 1``, in time order,
  ``n`` of them. Region ``j`` of ``R_c`` averages members ``start_j .. end_j - 1`` with
  ``start_j = floor(j n / R_c)`` and ``end_j = max(floor((j + 1) n / R_c), start_j + 1)``; with
  fewer members than regions a member serves several regions; a class without members gives
  invalid regions (zeros, valid 0). Padded snippets (``valid = 0``) never contribute, whatever
  their feature values. Use ``jax.vmap`` for a batch.

  Args:
    features: float ``[T, D]`` fused snippet features (gradients flow through).
    labels: ``[T, C + 1]`` in {0, 1}, background last (e.g. pseudo labels of eq. 15).
    valid: ``[T]`` 1 for real snippets, 0 for padding.
    regions: static, regions per class in label-column order; ``len(regions) == C + 1``.
    main_region: also one vector per class averaging ALL its members (the class's main
      region-level space), placed before its ``R_c`` splits.

  Returns:
    ``(vectors, vector_valid, vector_class)``: float32 ``[R, D]`` (not normalised), float32
    ``[R]``, int32 ``[R]``; ``R = sum(slot_counts(regions, main_region))``, slots ordered class
    by class.
  """
  regions = _check_regions(regions)
  chex.assert_rank([features, labels, valid], [2, 2, 1])
  num_t = features.shape[0]
  chex.assert_shape(labels, (num_t, len(regions)))
  chex.assert_shape(valid, (num_t,))

  valid = (valid > 0.5).astype(jnp.float32)  # [T]
  member = (labels > 0.5).astype(jnp.float32) * valid[:, None]  # [T, C+1]
  rows = []
  for c, r in enumerate(regions):
    if main_region:
      rows.append(member[None, :, c])  # [1, T]: the whole class
    rows.append(_class_weights(member[:, c], r))  # [R_c, T]
  weights = jnp.concatenate(rows, axis=0)  # [R, T]
  counts = jnp.sum(weights, axis=1)  # [R]
  # Zero padded snippets so NaN/Inf padding cannot leak through 0 * x.
  feats = jnp.where(valid[:, None] > 0, features, 0).astype(jnp.float32)  # [T, D]
  sums = jnp.einsum("rt,td->rd", weights, feats, precision=jax.lax.Precision.HIGHEST)  # [R, D]
  vectors = sums / jnp.maximum(counts, 1.0)[:, None]  # [R, D]
  vector_valid = (counts > 0).astype(jnp.float32)  # [R]
  vector_class = jnp.asarray(slot_classes(slot_counts(regions, main_region)))  # [R]
  return vectors, vector_valid, vector_class


@struct.dataclass
class MemoryBank:
  """Region-level vectors of every training video of a fold (immutable pytree).

  Attributes:
    vectors: float32 ``[V, R, D]``, L2-normalised (zeros where invalid).
    valid: float32 ``[V, R]``, 1 where the slot holds a vector.

  Row ``v`` belongs to training video index ``v`` of the fold. Slot classes are static:
  ``slot_classes(regions)``.
  """
  vectors: jax.Array
  valid: jax.Array

  @property
  def num_videos(self) -> int:
    return self.vectors.shape[0]

  @property
  def num_slots(self) -> int:
    return self.vectors.shape[1]


def init_bank(num_videos: int, regions: Sequence[int] = DEFAULT_REGIONS,
              dim: int = 2048) -> MemoryBank:
  """An empty bank: all vectors zero, all slots invalid.

  Args:
    num_videos: ``V``, training videos of the fold.
    regions: static regions per class; ``R = sum(regions)``.
    dim: ``D``, feature dimension.

  Returns:
    :class:`MemoryBank` with ``vectors [V, R, D]`` and ``valid [V, R]``, float32.
  """
  regions = _check_regions(regions)
  if int(num_videos) < 1 or int(dim) < 1:
    raise ValueError(f"dfcl.init_bank: num_videos and dim must be >= 1, got {num_videos}, {dim}")
  num_slots = sum(regions)
  return MemoryBank(
      vectors=jnp.zeros((num_videos, num_slots, dim), jnp.float32),
      valid=jnp.zeros((num_videos, num_slots), jnp.float32))


def bank_nbytes(num_videos: int, regions: Sequence[int] = DEFAULT_REGIONS,
                dim: int = 2048) -> int:
  """Bytes held by a float32 bank: ``V * R * (D + 1) * 4`` (vectors plus valid mask)."""
  num_slots = sum(_check_regions(regions))
  return int(num_videos) * num_slots * (int(dim) + 1) * 4


def _last_occurrence(video_ids: jax.Array, row_ok: jax.Array) -> jax.Array:
  """Keeps a row iff it is ok and no LATER ok row has the same video id.

  Args:
    video_ids: int32 ``[B]``.
    row_ok: bool ``[B]``.

  Returns:
    bool ``[B]``; among ok rows the kept ids are unique.
  """
  b = video_ids.shape[0]
  later = jnp.arange(b)[None, :] > jnp.arange(b)[:, None]  # [B, B]; later[i, j] = j > i.
  same = video_ids[:, None] == video_ids[None, :]  # [B, B]
  shadowed = jnp.any(later & same & row_ok[None, :], axis=1)  # [B]
  return row_ok & ~shadowed


def update_bank(bank: MemoryBank, video_ids: jax.Array, vectors: jax.Array,
                vector_valid: jax.Array, row_valid: jax.Array) -> MemoryBank:
  """Replaces the bank rows of the batch's videos (vectors and validity).

  Vectors are L2-normalised, zeroed where invalid and put under ``stop_gradient``. A written
  row's invalid regions become invalid in the bank. Rows with ``row_valid = 0``, a negative id
  or an id ``>= V`` write nothing. If one video occurs several times among the writing rows,
  the LAST occurrence (highest batch index) wins; duplicates are resolved before the scatter,
  so the scatter indices are unique and the result is deterministic on every backend.
  No host sync: safe to jit with the bank (or the train state holding it) donated.

  Args:
    bank: :class:`MemoryBank` ``[V, R, D]``.
    video_ids: int ``[B]`` row of each batch element in the bank.
    vectors: float ``[B, R, D]`` region vectors (e.g. ``vmap(region_vectors)``).
    vector_valid: ``[B, R]`` 1 for valid regions.
    row_valid: ``[B]`` 1 for real batch rows, 0 for padding.

  Returns:
    The new :class:`MemoryBank` (same shapes and dtypes).
  """
  num_v, num_r, dim = bank.vectors.shape
  chex.assert_shape(bank.valid, (num_v, num_r))
  chex.assert_rank([video_ids, vectors, vector_valid, row_valid], [1, 3, 2, 1])
  b = video_ids.shape[0]
  chex.assert_shape(vectors, (b, num_r, dim))
  chex.assert_shape(vector_valid, (b, num_r))
  chex.assert_shape(row_valid, (b,))

  ids = video_ids.astype(jnp.int32)  # [B]
  row_ok = (row_valid > 0.5) & (ids >= 0) & (ids < num_v)  # [B]
  keep = _last_occurrence(ids, row_ok)  # [B]
  # Dropped rows get distinct out-of-range indices (never negative: those would wrap).
  index = jnp.where(keep, ids, num_v + jnp.arange(b, dtype=jnp.int32))  # [B]
  slot_valid = (vector_valid > 0.5).astype(jnp.float32)  # [B, R]
  new_vecs = jax.lax.stop_gradient(
      _l2_normalize(vectors.astype(jnp.float32)) * slot_valid[..., None])  # [B, R, D]
  return bank.replace(
      vectors=bank.vectors.at[index].set(new_vecs, mode="drop", unique_indices=True),
      valid=bank.valid.at[index].set(slot_valid, mode="drop", unique_indices=True))


def _masked_logsumexp(logits: jax.Array, mask: jax.Array) -> jax.Array:
  """``log sum_k mask * exp(logits)`` over the last axis; 0 where the mask is empty.

  Args:
    logits: float32 ``[..., K]``.
    mask: bool ``[..., K]``.

  Returns:
    float32 ``[...]``, finite everywhere, with finite gradients.
  """
  filled = jnp.where(mask, logits, _NEG)
  top = jax.lax.stop_gradient(jnp.max(filled, axis=-1, keepdims=True))  # [..., 1]
  total = jnp.sum(jnp.where(mask, jnp.exp(filled - top), 0.0), axis=-1)  # [...]
  nonempty = total > 0
  return jnp.where(nonempty, top[..., 0] + jnp.log(jnp.where(nonempty, total, 1.0)), 0.0)


def contrastive_loss(vectors: jax.Array, vector_valid: jax.Array, video_ids: jax.Array,
                     row_valid: jax.Array, bank: MemoryBank,
                     regions: Sequence[int] = DEFAULT_REGIONS, *, tau: float = 1.0
                     ) -> Tuple[jax.Array, dict]:
  """Feature contrastive learning loss, paper eq. 17.

  Anchors are the valid foreground slots (ME or MaE) of the valid batch rows, L2-normalised,
  gradient flowing to them. For an anchor ``v`` of class ``c``: positives ``P`` = valid bank
  slots of class ``c`` in rows ``!= video_ids[b]``; negatives ``N`` = valid bank slots of every
  other class (other foreground class and background) in those rows;
  ``L_v = -1/|P| sum_{p in P} log(exp(v.p / tau) / sum_{k in P u N} exp(v.k / tau))``.
  Anchors without positives are skipped; the loss is the mean over the remaining anchors (0 when
  there is none, e.g. with an empty bank). The bank is under ``stop_gradient``.

  Memory: one ``[B, R_fg, V R]`` float32 logit block (casme3: 8 x 5 x 14190, ~2.3 MB).

  Args:
    vectors: float ``[B, R, D]`` region vectors of the batch (not necessarily normalised).
    vector_valid: ``[B, R]`` 1 for valid regions.
    video_ids: int ``[B]`` bank row of each batch video (its own row is excluded).
    row_valid: ``[B]`` 1 for real batch rows.
    bank: :class:`MemoryBank` ``[V, R, D]``.
    regions: static regions per class, matching the bank's ``R``.
    tau: temperature (paper: 1.0).

  Returns:
    ``(loss, aux)``: float32 scalar and ``{"num_anchors": float32 scalar}``.
  """
  classes = slot_classes(regions)  # [R] static
  num_v, num_r, dim = bank.vectors.shape
  if num_r != classes.shape[0]:
    raise ValueError(f"dfcl.contrastive_loss: bank has {num_r} slots but regions={regions!r} "
                     f"gives {classes.shape[0]}")
  chex.assert_shape(bank.valid, (num_v, num_r))
  chex.assert_rank([vectors, vector_valid, video_ids, row_valid], [3, 2, 1, 1])
  b = vectors.shape[0]
  chex.assert_shape(vectors, (b, num_r, dim))
  chex.assert_shape(vector_valid, (b, num_r))
  chex.assert_shape([video_ids, row_valid], (b,))

  fg = np.nonzero(classes < classes.max())[0]  # static foreground slot indices [R_fg]
  anchors = _l2_normalize(vectors[:, fg].astype(jnp.float32))  # [B, R_fg, D]
  anchor_ok = (vector_valid[:, fg] > 0.5) & (row_valid[:, None] > 0.5)  # [B, R_fg]

  keys = jax.lax.stop_gradient(bank.vectors).reshape(num_v * num_r, dim)  # [K, D]
  key_ok = jax.lax.stop_gradient(bank.valid).reshape(num_v * num_r) > 0.5  # [K]
  key_video = np.repeat(np.arange(num_v, dtype=np.int32), num_r)  # [K] static
  key_class = np.tile(classes, num_v)  # [K] static

  logits = jnp.einsum("bad,kd->bak", anchors, keys) / tau  # [B, R_fg, K]
  other = key_ok[None, :] & (key_video[None, :] != video_ids.astype(jnp.int32)[:, None])  # [B, K]
  same = key_class[None, :] == classes[fg][:, None]  # [R_fg, K] static
  pos = other[:, None, :] & same[None, :, :]  # [B, R_fg, K]
  denom = jnp.broadcast_to(other[:, None, :], pos.shape)  # [B, R_fg, K]; P u N

  log_denom = _masked_logsumexp(logits, denom)  # [B, R_fg]
  num_pos = jnp.sum(pos, axis=-1).astype(jnp.float32)  # [B, R_fg]
  pos_logit_sum = jnp.sum(jnp.where(pos, logits, 0.0), axis=-1)  # [B, R_fg]
  per_anchor = log_denom - pos_logit_sum / jnp.maximum(num_pos, 1.0)  # [B, R_fg]
  used = anchor_ok & (num_pos > 0)  # [B, R_fg]
  num_anchors = jnp.sum(used).astype(jnp.float32)
  loss = jnp.sum(jnp.where(used, per_anchor, 0.0)) / jnp.maximum(num_anchors, 1.0)
  return loss, {"num_anchors": num_anchors}
