"""Cutting a stream of frames and flows into fixed-length snippets, without holding the video.

A video of ``F`` frames has ``F - 1`` flows (flow ``k`` is frame ``k`` -> ``k + 1``); the last frame
is dropped from the RGB stream so both streams index the same ``F - 1`` positions (paper Section
3.2). Snippet ``t`` covers positions ``t * stride ... t * stride + length - 1`` of both streams, for
``t < T = (F - 1) // stride``. With the default ``stride == length`` snippets do not overlap and
``T = (F - 1) // length``, the dataset layout's count; a smaller stride gives overlapping windows
whose positions past ``F - 2`` repeat position ``F - 2`` (edge padding), so the count stays
``(F - 1) // stride`` and snippet ``t`` still starts at frame ``t * stride``.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np


def num_snippets(num_frames: int, stride: int) -> int:
  """Snippets of a video of ``num_frames`` frames: ``(num_frames - 1) // stride``."""
  return max(int(num_frames) - 1, 0) // stride


def snippet_positions(num_frames: int, length: int, stride: int) -> np.ndarray:
  """Frame/flow positions of every snippet, the reference for :class:`SnippetAssembler`.

  Returns:
    ``int64 [T, length]``: position ``min(t * stride + j, F - 2)``.
  """
  t = num_snippets(num_frames, stride)
  pos = np.arange(t)[:, None] * stride + np.arange(length)[None, :]
  return np.minimum(pos, max(num_frames - 2, 0)).astype(np.int64)


class SnippetAssembler:
  """Buffers frames and flows as they arrive and hands out complete snippets.

  Feed RGB frames and flows in order with :meth:`add`; :meth:`ready` yields the snippets whose
  positions have all arrived; after the last frame :meth:`finish` yields the rest (edge-padded).
  Only the positions a future snippet still needs are kept.
  """

  def __init__(self, length: int, stride: int):
    if not 1 <= stride <= length:
      raise ValueError(f"snippet stride must be in [1, length={length}], got {stride}")
    self.length, self.stride = length, stride
    self._rgb, self._flow = [], []  # positions base, base + 1, ...
    self._base = 0  # position of _rgb[0] / _flow[0]
    self._frames = 0  # frames received
    self._flows = 0  # flows received
    self._next = 0  # next snippet index to hand out

  @property
  def frames(self) -> int:
    return self._frames

  def add(self, frames, flows) -> None:
    """Appends frames (``[n, S, S, 3]``) and the flows (``[m, S, S, 2]``) now computable."""
    self._rgb.extend(frames)
    self._flow.extend(flows)
    self._frames += len(frames)
    self._flows += len(flows)
    if self._flows > max(self._frames - 1, 0):
      raise ValueError(f"{self._flows} flows for {self._frames} frames")

  def _take(self, positions) -> tuple:
    rgb = np.stack([self._rgb[p - self._base] for p in positions])
    flow = np.stack([self._flow[p - self._base] for p in positions])
    return rgb, flow

  def _trim(self) -> None:
    drop = self._next * self.stride - self._base
    if drop > 0:
      del self._rgb[:drop]
      del self._flow[:drop]
      self._base += drop

  def ready(self) -> Iterator:
    """Yields ``(rgb [L, S, S, 3], flow [L, S, S, 2])`` of each snippet now complete.

    A snippet is complete when its last position has a flow, i.e. its frame after that arrived;
    until the stream ends the RGB frame at a position is used only once its flow exists, which is
    what makes the last frame drop out.
    """
    while self._next * self.stride + self.length <= self._flows:
      start = self._next * self.stride
      yield self._take(range(start, start + self.length))
      self._next += 1
      self._trim()

  def finish(self) -> Iterator:
    """After the last frame: yields the remaining snippets, positions clamped to ``F - 2``."""
    yield from self.ready()
    last = self._frames - 2
    total = num_snippets(self._frames, self.stride)
    while self._next < total:
      start = self._next * self.stride
      yield self._take([min(start + j, last) for j in range(self.length)])
      self._next += 1
      self._trim()
