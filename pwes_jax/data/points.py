"""Point-level labels: one frame per ground-truth interval (paper Section 3.1).

``"random"`` mode draws the frame uniformly from ``[onset, offset]`` (both inclusive), the
paper's arbitrary single-frame supervision; ``"apex"`` mode takes the apex frame (Section 4.5),
falling back to the interval midpoint ``(onset + offset) // 2`` where the apex is unknown.

A frame ``f`` maps to the snippet whose frames hold it (:mod:`pwes_jax.data.snippet_time`):
``min(f // snippet_length, T - 1)`` with ``T = info.num_snippets(num_frames)`` for
non-overlapping snippets (the frames of the dropped tail belong to the last snippet); with
overlapping windows, the snippet whose window is centred on ``f``.

Each video's random draw uses its own generator seeded by ``(seed, crc32(video name))``, so a
video's points depend only on the seed and its own annotations, never on which other videos are
in the dataset (a LOSO fold or a subset sees the same points as the full dataset).
"""

from __future__ import annotations

import dataclasses
from typing import Optional
import zlib

from absl import logging
import numpy as np

from pwes_jax.data import layout
from pwes_jax.data import snippet_time

MODES = ("random", "apex")


@dataclasses.dataclass(frozen=True, eq=False)
class PointLabels:
  """The point labels of one video, one per ground-truth interval in annotation-file order.

  Attributes:
    frames: ``[N]`` int64, the labelled frame of each interval (0-based).
    snippets: ``[N]`` int32, its snippet index in ``[0, T)``.
    labels: ``[N]`` int32, its class (``layout.ME`` = 0, ``layout.MAE`` = 1).
  """
  frames: np.ndarray  # [N] int64
  snippets: np.ndarray  # [N] int32
  labels: np.ndarray  # [N] int32

  def __post_init__(self):
    for name, dtype in (("frames", np.int64), ("snippets", np.int32), ("labels", np.int32)):
      a = np.array(getattr(self, name), dtype=dtype).reshape(-1)  # a read-only copy
      a.flags.writeable = False
      object.__setattr__(self, name, a)
    n = {self.frames.shape[0], self.snippets.shape[0], self.labels.shape[0]}
    if len(n) != 1:
      raise ValueError(f"PointLabels: frames/snippets/labels lengths differ: "
                       f"{self.frames.shape}, {self.snippets.shape}, {self.labels.shape}")
    if (self.snippets < 0).any():
      raise ValueError(f"PointLabels: negative snippet index in {self.snippets.tolist()}")

  @classmethod
  def empty(cls) -> "PointLabels":
    """The points of a negative video (``N = 0``)."""
    return cls(np.zeros([0], np.int64), np.zeros([0], np.int32), np.zeros([0], np.int32))

  def __len__(self) -> int:
    return int(self.frames.shape[0])

  def video_label(self, num_classes: int = layout.NUM_CLASSES) -> np.ndarray:
    """Multi-hot video-level label: 1 where the class has at least one point.

    Returns:
      ``[C]`` float32.
    """
    if len(self) and (self.labels.max() >= num_classes or self.labels.min() < 0):
      raise ValueError(f"PointLabels: labels {self.labels.tolist()} outside [0, {num_classes})")
    out = np.zeros([num_classes], np.float32)
    out[self.labels] = 1.0
    return out


def video_rng(seed: int, video: str) -> np.random.Generator:
  """The generator for one video's draw: depends only on ``seed`` and the video's name."""
  return np.random.default_rng([int(seed), zlib.crc32(video.encode("utf-8"))])


def frame_to_snippet(frames: np.ndarray, snippet_length: int, num_snippets: int,
                     window: Optional[int] = None) -> np.ndarray:
  """Maps frames to snippet indices: ``min(f // snippet_length, T - 1)`` without overlap.

  Args:
    frames: ``[N]`` integer frames.
    snippet_length: frames per snippet (the stride between snippets).
    num_snippets: ``T`` of the video (>= 1).
    window: frames per window when windows overlap (``snippet_time.frame_to_snippet``: the
      snippet whose window is centred on the frame); None for ``snippet_length``.

  Returns:
    ``[N]`` int32 snippet indices.
  """
  return snippet_time.frame_to_snippet(frames, stride=snippet_length,
                                       window=snippet_length if window is None else window,
                                       num_snippets=num_snippets)


def missing_apex(dataset: layout.Dataset) -> list:
  """Annotations whose apex is unknown (``apex == -1``): ``"apex"`` mode uses their midpoint."""
  return [a for a in dataset.annotations if a.apex < 0]


def _check_seed(seed) -> int:
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
  return int(seed)


def points_of_video(dataset: layout.Dataset, video: layout.Video, annotations,
                    mode: str = "random", seed: int = 0) -> PointLabels:
  """Point labels of one video.

  Args:
    dataset: the dataset (for ``snippet_length``).
    video: the video.
    annotations: its annotations (``dataset.annotations_of(video.video)``), in file order.
    mode: ``"random"`` or ``"apex"``.
    seed: non-negative integer; only used by ``"random"``.

  Returns:
    The video's :class:`PointLabels` (empty for a negative video).
  """
  if mode not in MODES:
    raise ValueError(f"unknown point mode {mode!r}, expected one of {MODES}")
  seed = _check_seed(seed)
  if not annotations:
    return PointLabels.empty()
  onset = np.array([a.onset for a in annotations], np.int64)
  offset = np.array([a.offset for a in annotations], np.int64)
  if mode == "random":
    frames = video_rng(seed, video.video).integers(onset, offset, endpoint=True)
  else:
    apex = np.array([a.apex for a in annotations], np.int64)
    frames = np.where(apex >= 0, apex, (onset + offset) // 2)
  frames = np.asarray(frames, np.int64).reshape(-1)
  labels = np.array([a.label for a in annotations], np.int32)
  t = dataset.info.num_snippets(video.num_frames)
  return PointLabels(frames, frame_to_snippet(frames, dataset.info.snippet_length, t,
                                              snippet_time.window_of(dataset.info)), labels)


def sample_points(dataset: layout.Dataset, mode: str = "random", seed: int = 0) -> dict:
  """Point labels of every video.

  Args:
    dataset: a loaded dataset.
    mode: ``"random"`` (uniform frame in each interval) or ``"apex"`` (apex frame, midpoint
      when the apex is unknown; the number of such fallbacks is logged as a warning and given
      by :func:`missing_apex`).
    seed: non-negative integer; same seed, same points.

  Returns:
    ``{video_name: PointLabels}`` for every video of the dataset, in ``dataset.videos`` order.
  """
  if mode not in MODES:
    raise ValueError(f"unknown point mode {mode!r}, expected one of {MODES}")
  seed = _check_seed(seed)
  by_video = {v.video: [] for v in dataset.videos}
  for a in dataset.annotations:
    by_video[a.video].append(a)
  out = {v.video: points_of_video(dataset, v, by_video[v.video], mode, seed)
         for v in dataset.videos}
  if mode == "apex":
    fallbacks = missing_apex(dataset)
    if fallbacks:
      logging.warning("apex points: %d of %d intervals have no apex; using the interval "
                      "midpoint for them (first: video %r, [%d, %d])", len(fallbacks),
                      len(dataset.annotations), fallbacks[0].video, fallbacks[0].onset,
                      fallbacks[0].offset)
  return out


def max_points(points: dict) -> int:
  """The largest number of points of any video (a lower bound for the batch's ``max_points``)."""
  return max((len(p) for p in points.values()), default=0)
