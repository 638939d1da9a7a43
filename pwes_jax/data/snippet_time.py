"""Where a snippet lies in its video's frames: one rule for proposals, point labels and plots.

A dataset's snippets are taken every ``stride`` frames (``dataset.json``'s ``snippet_length``),
each from a window of ``window`` frames (``dataset.json``'s ``snippet_window``; the stride when
windows do not overlap). Snippet ``t``'s window covers frames ``t * stride .. t * stride +
window - 1``; the snippet's time is the window's centre, and its own frames (its *cell*) are the
``stride`` frames around that centre::

    first frame of snippet t = t * stride + (window - stride) // 2

A run of snippets ``s .. e`` is then frames ``first(s) .. first(e) + stride - 1`` (``(e - s + 1) *
stride`` frames, as without overlap), and frame ``f`` belongs to snippet ``(f - (window - stride)
// 2) // stride``, clipped to ``[0, T - 1]``. When ``window - stride`` is odd the centre lies
between two frames and the earlier one is taken. With ``window == stride`` (the default,
non-overlapping snippets of the paper) the offset is 0 and snippet ``t`` is frames ``t * L ..
(t + 1) * L - 1``, exactly as before overlapping windows existed.

Example (``window = 8``, ``stride = 2``): snippet 10's window is frames 20..27, whose centre lies
between frames 23 and 24: its cell is frames 23..24. Read from the window's start it would be
frames 20..21, ``(window - stride) / 2 = 3`` frames early, and a run of snippets would end
``window - stride = 6`` frames before its last window does.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np


def offset(window: int, stride: int) -> int:
  """Frames between a window's first frame and its cell's first frame: ``(window - stride) // 2``.

  Raises:
    ValueError: ``stride`` or ``window`` is not a positive integer, or ``window < stride``.
  """
  window, stride = int(window), int(stride)
  if stride < 1 or window < stride:
    raise ValueError(f"snippet window {window} and stride {stride}: need 1 <= stride <= window")
  return (window - stride) // 2


def window_of(info) -> int:
  """The window length of a dataset's snippets (a ``layout.DatasetInfo``).

  ``dataset.json``'s ``snippet_window``; else, for a directory made by ``extract_features``
  before that field existed, its ``extraction.snippet_length``; else the stride (no overlap).
  """
  extras = getattr(info, "extras", None) or {}
  window = extras.get("snippet_window")
  if window is None and isinstance(extras.get("extraction"), dict):
    window = extras["extraction"].get("snippet_length")
  return int(window) if window is not None else int(info.snippet_length)


def snippet_frames(start, end, *, stride: int, window: int,
                   num_frames: Optional[int] = None) -> tuple:
  """Frames ``(onset, offset)`` (0-based, inclusive) of runs of snippets ``start .. end``.

  Args:
    start, end: snippet indices (scalars or arrays), inclusive.
    stride: frames between snippets.
    window: frames per window (``>= stride``).
    num_frames: the video's frame count; the frames are clipped to ``num_frames - 1``.

  Returns:
    ``(onset, offset)`` int64 arrays of the shape of ``start``.
  """
  shift = offset(window, stride)
  onset = np.asarray(start, np.int64) * int(stride) + shift
  end_frame = np.asarray(end, np.int64) * int(stride) + shift + int(stride) - 1
  if num_frames is not None:
    last = int(num_frames) - 1
    onset, end_frame = np.minimum(onset, last), np.minimum(end_frame, last)
  return onset, end_frame


def frame_to_snippet(frames, *, stride: int, window: int, num_snippets: int) -> np.ndarray:
  """The snippet whose cell holds each frame: ``(f - offset) // stride`` clipped to ``[0, T-1]``.

  Returns:
    ``int32`` snippet indices of the shape of ``frames``.
  """
  f = np.asarray(frames, np.int64) - offset(window, stride)
  t = np.floor_divide(f, int(stride))
  return np.clip(t, 0, max(int(num_snippets) - 1, 0)).astype(np.int32)


def snippet_slice(onset: int, offset_frame: int, *, stride: int, window: int,
                  num_snippets: int) -> slice:
  """The snippets whose cells overlap frames ``onset .. offset_frame`` (inclusive), as a slice
  of ``[0, T)`` (empty when the frames lie past the last snippet's cell)."""
  shift = offset(window, stride)
  first = max((int(onset) - shift) // int(stride), 0)
  stop = min((int(offset_frame) - shift) // int(stride), int(num_snippets) - 1) + 1
  return slice(first, max(first, stop))


def place(proposals: Sequence[Mapping], *, stride: int, window: Optional[int] = None,
          num_frames: Optional[int] = None) -> list:
  """Proposals with ``onset``/``offset`` set from their ``start_snippet``/``end_snippet``
  (:func:`snippet_frames`, clipped to ``num_frames - 1`` when given).

  Without overlap (``window`` None or equal to ``stride``) the proposals are returned as they
  are: their frames ``s * stride .. (e + 1) * stride - 1`` are already these, and never pass the
  last frame (``T * stride <= num_frames - 1``).
  """
  window = int(stride) if window is None else int(window)
  if window == int(stride):
    return list(proposals)
  out = []
  for p in proposals:
    on, off = snippet_frames(p["start_snippet"], p["end_snippet"], stride=stride,
                             window=window, num_frames=num_frames)
    out.append(dict(p, onset=int(on), offset=int(off)))
  return out
