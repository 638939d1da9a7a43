"""Inclusive integer intervals (frames or snippets): overlap and IoU, the one implementation.

An interval ``[on, off]`` holds ``off - on + 1`` frames (or snippets). For two intervals,
``inter = min(off) - max(on) + 1`` (<= 0 when disjoint) and ``span = max(off) - min(on) + 1``;
``IoU = inter / span`` when they overlap, else 0. Used by NMS (``proposals.nms``, paper
Section 3.6) and by matching predictions to ground truth (``protocols``, Section 4.2).
"""

from __future__ import annotations

import numpy as np


def overlap(on_a, off_a, on_b, off_b) -> tuple:
  """``(inter, span)`` of inclusive integer intervals (broadcasting), exact integers.

  ``inter <= 0`` means the intervals share no frame. For an exact test of
  ``IoU >= num / den`` compare ``inter > 0 and inter * den >= span * num``.
  """
  inter = np.minimum(off_a, off_b) - np.maximum(on_a, on_b) + 1
  span = np.maximum(off_a, off_b) - np.minimum(on_a, on_b) + 1
  return inter, span


def iou(on_a, off_a, on_b, off_b) -> np.ndarray:
  """IoU of inclusive integer intervals (broadcasting); 0 when they do not overlap."""
  inter, span = overlap(on_a, off_a, on_b, off_b)
  return np.where(inter > 0, inter / span, 0.0)
