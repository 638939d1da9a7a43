"""Expression proposals from one video's attention and suppressed TCAM (paper Section 3.6).

Pipeline, all in numpy (it runs once per held-out video, outside any jitted code):

1. :func:`multi_top_runs`: for every ``k`` in a range (default ``1 .. ceil(0.3 * T)``) take the
   ``k`` snippets with the largest attention, sort them by time and cut them into runs of
   consecutive snippets; every distinct run ``(s, e)`` (inclusive) over all ``k`` is a proposal.
2. :func:`outer_inner_scores`: AutoLoc's outer-inner contrast of the suppressed TCAM per class.
3. The proposal's class follows its duration (:func:`pwes_jax.data.duration.is_me`: ME when
   ``offset - onset <= 0.5 * fps`` in frames); its score is that class's contrast.
4. :func:`nms`: class-agnostic non-maximum suppression, IoU threshold 0.01 (Section 4.3).

:func:`generate_proposals` chains the four and maps snippets to frames:
snippets ``s .. e`` cover frames ``s * L .. (e + 1) * L - 1`` (``L`` the snippet length).
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import numpy as np

from pwes_jax.evaluation import intervals
from pwes_jax.data import duration
from pwes_jax.data import layout

KRange = Union[None, range, Sequence[int]]


def _check_finite(name: str, x: np.ndarray) -> None:
  bad = ~np.isfinite(x)
  if bad.any():
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    raise ValueError(f"{name}: {int(bad.sum())} NaN/Inf values (first at index {first})")


def default_k_max(num_snippets: int, top_ratio: float = 0.3) -> int:
  """``ceil(top_ratio * T)``, at least 1 (rounded to 9 decimals first so 0.3 * 10 gives 3)."""
  if not 0 < top_ratio <= 1:
    raise ValueError(f"top_ratio must be in (0, 1], got {top_ratio!r}")
  return max(1, math.ceil(round(top_ratio * num_snippets, 9)))


def _k_values(k_range: KRange, num_snippets: int, top_ratio: float) -> np.ndarray:
  """The sorted distinct ``k`` values to try, clipped to ``T``; ``[K]`` int64."""
  if k_range is None:
    ks = np.arange(1, default_k_max(num_snippets, top_ratio) + 1)
  elif isinstance(k_range, range):
    ks = np.asarray(list(k_range), np.int64)
  else:
    pair = tuple(k_range)
    if len(pair) != 2:
      raise ValueError(f"k_range must be a (k_min, k_max) pair or a range, got {k_range!r}")
    k_min, k_max = (int(v) for v in pair)
    if k_max < k_min:
      raise ValueError(f"k_range {k_range!r}: k_max < k_min")
    ks = np.arange(k_min, k_max + 1)
  if ks.size == 0:
    raise ValueError(f"k_range {k_range!r} holds no k")
  if ks.min() < 1:
    raise ValueError(f"k_range {k_range!r}: every k must be >= 1")
  return np.unique(np.minimum(ks, num_snippets)).astype(np.int64)


def multi_top_runs(attention: np.ndarray, *, k_range: KRange = None,
                   top_ratio: float = 0.3) -> np.ndarray:
  """All distinct runs of consecutive snippets among the top-``k`` attention snippets.

  The top-``k`` sets are nested prefixes of one ordering (a stable argsort of ``-attention``,
  so ties go to the lower index). Adding the ``k``-th snippet ``t`` creates exactly one run,
  the maximal run of already-selected snippets around ``t``; it lives until a snippet next to
  it is added. A run is kept when it is alive at some ``k`` in the range. All steps are
  computed at once from the ``[K, T]`` matrix ``rank[j] > k``.

  Args:
    attention: ``[T]`` attention scores.
    k_range: ``(k_min, k_max)`` inclusive, or a ``range``; default ``1 .. ceil(top_ratio*T)``.
      ``k`` above ``T`` is clipped to ``T``.
    top_ratio: used only for the default range.

  Returns:
    ``[P, 2]`` int64 ``(start, end)`` snippet indices, inclusive, sorted by start then end.
  """
  attention = np.asarray(attention)
  if attention.ndim != 1:
    raise ValueError(f"attention must be [T], got shape {attention.shape}")
  _check_finite("attention", attention)
  t_len = attention.shape[0]
  if t_len == 0:
    return np.zeros((0, 2), np.int64)
  ks = _k_values(k_range, t_len, top_ratio)
  k_max = int(ks[-1])
  order = np.argsort(-attention, kind="stable")  # [T]
  rank = np.empty(t_len, np.int64)
  rank[order] = np.arange(1, t_len + 1)  # step at which each snippet joins
  steps = np.arange(1, k_max + 1)  # [K]
  added = order[:k_max]  # [K] snippet added at each step
  idx = np.arange(t_len)  # [T]
  unselected = rank[None, :] > steps[:, None]  # [K, T] not yet selected after step k
  left = unselected & (idx[None, :] < added[:, None])
  right = unselected & (idx[None, :] > added[:, None])
  start = np.where(left, idx[None, :], -1).max(axis=1) + 1  # [K]
  end = np.where(right, idx[None, :], t_len).min(axis=1) - 1  # [K]
  padded = np.concatenate([[np.iinfo(np.int64).max], rank, [np.iinfo(np.int64).max]])
  death = np.minimum(padded[start], padded[end + 2])  # step when a neighbour joins
  # Alive on steps [k, death - 1]: keep when some k' in ks falls there.
  pos = np.searchsorted(ks, steps, side="left")
  nxt = np.where(pos < ks.size, ks[np.minimum(pos, ks.size - 1)], np.iinfo(np.int64).max)
  keep = nxt < death
  runs = np.stack([start[keep], end[keep]], axis=1)
  runs = runs[np.lexsort((runs[:, 1], runs[:, 0]))]
  return runs.astype(np.int64)


def flank_length(length: np.ndarray, flank_ratio: float = 0.25) -> np.ndarray:
  """``max(1, round(flank_ratio * length))``; rounds half to even, like Python's ``round``."""
  return np.maximum(1, np.round(flank_ratio * np.asarray(length))).astype(np.int64)


def outer_inner_scores(suppressed: np.ndarray, runs: np.ndarray, *,
                       flank_ratio: float = 0.25) -> np.ndarray:
  """AutoLoc outer-inner contrast of every run and class, with prefix sums.

  ``inner`` is the mean of ``suppressed[s..e, c]``; ``outer`` the mean over the two flanks
  ``[s - f, s - 1]`` and ``[e + 1, e + f]`` with ``f = max(1, round(flank_ratio * len))``,
  clipped at the video's ends (``outer = 0`` when both flanks are empty).

  Args:
    suppressed: ``[T, C]`` suppressed TCAM.
    runs: ``[P, 2]`` inclusive ``(start, end)`` snippet indices.
    flank_ratio: flank length relative to the run's length.

  Returns:
    ``[P, C]`` float64 ``inner - outer``.
  """
  suppressed = np.asarray(suppressed, np.float64)
  runs = np.asarray(runs, np.int64).reshape(-1, 2)
  if suppressed.ndim != 2:
    raise ValueError(f"suppressed must be [T, C], got shape {suppressed.shape}")
  t_len = suppressed.shape[0]
  s, e = runs[:, 0], runs[:, 1]
  if runs.size and (s.min() < 0 or e.max() >= t_len or (s > e).any()):
    raise ValueError(f"runs must satisfy 0 <= start <= end < T={t_len}")
  csum = np.concatenate([np.zeros((1, suppressed.shape[1])), np.cumsum(suppressed, 0)])  # [T+1, C]
  length = e - s + 1
  inner = (csum[e + 1] - csum[s]) / length[:, None]  # [P, C]
  f = flank_length(length, flank_ratio)
  ls, re_ = np.maximum(0, s - f), np.minimum(t_len - 1, e + f)
  outer_sum = (csum[s] - csum[ls]) + (csum[re_ + 1] - csum[e + 1])  # [P, C]
  outer_n = (s - ls) + (re_ - e)  # [P]
  outer = np.where(outer_n[:, None] > 0, outer_sum / np.maximum(outer_n, 1)[:, None], 0.0)
  return inner - outer


def nms(runs: np.ndarray, scores: np.ndarray, *, threshold: float = 0.01) -> np.ndarray:
  """Class-agnostic greedy NMS on inclusive snippet intervals.

  Highest score first (equal scores keep their input order); a proposal is dropped when its
  IoU with an already-kept one is ``> threshold``.

  Args:
    runs: ``[P, 2]`` inclusive ``(start, end)``.
    scores: ``[P]``.
    threshold: IoU above which the lower-scored proposal goes.

  Returns:
    ``[K]`` int64 indices into ``runs`` of the kept proposals, highest score first.
  """
  runs = np.asarray(runs, np.int64).reshape(-1, 2)
  scores = np.asarray(scores, np.float64)
  if scores.shape != (runs.shape[0],):
    raise ValueError(f"scores shape {scores.shape} does not match runs {runs.shape}")
  order = np.argsort(-scores, kind="stable")
  s, e = runs[order, 0], runs[order, 1]
  over = intervals.iou(s[:, None], e[:, None], s[None, :], e[None, :]) > threshold  # [P, P]
  dropped = np.zeros(order.size, bool)
  keep = []
  for i in range(order.size):
    if dropped[i]:
      continue
    keep.append(i)
    dropped |= over[i]
  return order[np.asarray(keep, np.int64)]


def _nms_and_caps(runs: np.ndarray, score: np.ndarray, label: np.ndarray, *, threshold: float,
                  class_wise: bool, max_per_class: Sequence[int]) -> np.ndarray:
  """Indices of the proposals kept by NMS (class-agnostic or within each class) and the
  per-class caps, highest score first (equal scores keep their input order)."""
  caps = tuple(int(c) for c in max_per_class)
  if len(caps) != layout.NUM_CLASSES or any(c < 0 for c in caps):
    raise ValueError(f"max_per_class must hold {layout.NUM_CLASSES} counts >= 0, got "
                     f"{max_per_class!r}")
  if not class_wise:
    keep = nms(runs, score, threshold=threshold)
  else:
    parts = [np.flatnonzero(label == c) for c in range(layout.NUM_CLASSES)]
    keep = np.concatenate([p[nms(runs[p], score[p], threshold=threshold)] for p in parts])
    keep = keep[np.lexsort((keep, -score[keep]))]  # by score; equal scores in input order
  if any(caps):
    seen = np.zeros(layout.NUM_CLASSES, np.int64)
    out = []
    for i in keep:
      c = int(label[i])
      if caps[c] and seen[c] >= caps[c]:
        continue
      seen[c] += 1
      out.append(i)
    keep = np.asarray(out, np.int64)
  return keep


def generate_proposals(attention: np.ndarray, suppressed: np.ndarray, *, snippet_length: int,
                       fps: float, k_range: KRange = None, top_ratio: float = 0.3,
                       nms_threshold: float = 0.01, me_max_seconds: float = 0.5,
                       flank_ratio: float = 0.25, class_wise_nms: bool = False,
                       max_per_class: Sequence[int] = (0, 0)) -> list:
  """Proposals of one video: multi-top runs, outer-inner scores, duration class, NMS.

  Args:
    attention: ``[T]`` class-agnostic attention.
    suppressed: ``[T, C]`` suppressed TCAM, ``C = 2`` (``ME = 0``, ``MaE = 1``), no background.
    snippet_length: frames per snippet ``L``.
    fps: the video's frame rate.
    k_range: see :func:`multi_top_runs`.
    top_ratio: default ``k_max = ceil(top_ratio * T)``.
    nms_threshold: see :func:`nms`.
    me_max_seconds: a proposal is ME when its frames ``onset .. offset`` satisfy
      ``offset - onset = (e - s + 1) * L - 1 <= me_max_seconds * fps`` (the field's rule,
      :mod:`pwes_jax.data.duration`); with ``L = 8`` at 30 fps runs of 1 and 2 snippets are ME.
    flank_ratio: see :func:`outer_inner_scores`.
    class_wise_nms: NMS within each class only (an ME proposal is suppressed only by ME
      proposals); else class-agnostic (paper Section 4.3: one NMS at 0.01), where a 1-2 snippet
      ME run nested in a longer, higher-scored run is removed.
    max_per_class: ``(ME, MaE)``: keep at most that many proposals of the class per video,
      highest scores first (0 = no cap).

  Returns:
    ``[{onset, offset, score, type, start_snippet, end_snippet}]``, highest score first;
    ``onset``/``offset`` are 0-based inclusive frames, ``type`` is ``"ME"`` or ``"MaE"``.
  """
  attention = np.asarray(attention)
  suppressed = np.asarray(suppressed)
  if attention.ndim != 1:
    raise ValueError(f"attention must be [T], got shape {attention.shape}")
  if suppressed.shape != (attention.shape[0], layout.NUM_CLASSES):
    raise ValueError(f"suppressed must be [T, {layout.NUM_CLASSES}] = "
                     f"[{attention.shape[0]}, {layout.NUM_CLASSES}] (ME, MaE; drop any "
                     f"background column), got shape {suppressed.shape}")
  _check_finite("suppressed", suppressed)
  if int(snippet_length) != snippet_length or snippet_length < 1:
    raise ValueError(f"snippet_length must be a positive integer, got {snippet_length!r}")
  if not fps > 0:
    raise ValueError(f"fps must be positive, got {fps!r}")
  runs = multi_top_runs(attention, k_range=k_range, top_ratio=top_ratio)  # [P, 2]
  if runs.shape[0] == 0:
    return []
  contrast = outer_inner_scores(suppressed, runs, flank_ratio=flank_ratio)  # [P, C]
  onsets = runs[:, 0] * int(snippet_length)  # [P] frames
  offsets = (runs[:, 1] + 1) * int(snippet_length) - 1  # [P]
  me = duration.is_me(onsets, offsets, fps, me_max_seconds)
  label = np.where(me, layout.ME, layout.MAE)  # [P]
  score = contrast[np.arange(runs.shape[0]), label]
  keep = _nms_and_caps(runs, score, label, threshold=nms_threshold,
                       class_wise=class_wise_nms, max_per_class=max_per_class)
  return [dict(onset=int(onsets[i]), offset=int(offsets[i]),
               score=float(score[i]), type=layout.CLASS_NAMES[int(label[i])],
               start_snippet=int(runs[i, 0]), end_snippet=int(runs[i, 1]))
          for i in keep]
