"""Padding variable-length videos into a few length buckets, with validity masks.

Videos keep their original number of snippets (paper Section 4.3: no resampling). To give the
jitted step a few static shapes only, every batch is padded to one of a handful of bucket
lengths chosen once from the dataset-wide lengths (:func:`make_buckets`), so all LOSO folds share
them and each bucket compiles once. A video belongs to the smallest bucket that holds it.

A batch (:func:`pad_batch`) is a plain dict of numpy arrays (a pytree):

* ``rgb``, ``flow``: ``[B, Tb, F]`` float32, zero past each video's end;
* ``valid``: ``[B, Tb]`` float32, 1 on the first ``T`` snippets of a video, else 0;
* ``point_index``, ``point_label``: ``[B, N]`` int32 snippet index and class of each point,
  ``point_valid``: ``[B, N]`` float32 (``N = max_points``, static);
* ``video_label``: ``[B, C]`` float32 multi-hot;
* ``video_id``: ``[B]`` int32 index into the sampler's (or caller's) video list, -1 on padded
  rows; ``row_valid``: ``[B]`` float32, 1 on real rows;
* ``truth``: ``[B, Tb]`` int32 ground-truth class of each snippet (0..C-1, C = background), -1
  where unknown or padded: only for measuring pseudo labels, never a training label.

Every padded entry is 0 (``video_id`` and ``truth`` -1).

:class:`BatchSampler` draws training batches whose content depends only on ``(seed, step)`` and
its videos, so a run resumed at step ``s`` sees the same batches; :func:`iterate_padded` yields
every video once for inference.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Optional, Sequence

import numpy as np

from pwes_jax.data import layout
from pwes_jax.data import points as points_lib

BATCH_KEYS = ("rgb", "flow", "valid", "point_index", "point_label", "point_valid",
              "video_label", "video_id", "row_valid", "truth")


@dataclasses.dataclass(frozen=True, eq=False)
class VideoArrays:
  """One video's features and labels, ready for batching.

  Attributes:
    name: video name.
    subject: its subject.
    rgb: ``[T, F]`` float32 RGB features.
    flow: ``[T, F]`` float32 optical-flow features.
    points: its :class:`~pwes_jax.data.points.PointLabels` (snippet indices ``< T``).
    video_label: ``[C]`` float32 multi-hot video label.
    truth: optional ``[T]`` int ground-truth class of each snippet (0..C-1, C = background), for
      measuring pseudo labels only (never a training label); None when unknown.
  """
  name: str
  subject: str
  rgb: np.ndarray  # [T, F]
  flow: np.ndarray  # [T, F]
  points: points_lib.PointLabels
  video_label: np.ndarray  # [C]
  truth: Optional[np.ndarray] = None  # [T]

  def __post_init__(self):
    rgb = np.asarray(self.rgb, np.float32)
    flow = np.asarray(self.flow, np.float32)
    label = np.asarray(self.video_label, np.float32)
    if rgb.ndim != 2 or rgb.shape[0] < 1:
      raise ValueError(f"video {self.name!r}: rgb must be [T, F] with T >= 1, got {rgb.shape}")
    if flow.shape != rgb.shape:
      raise ValueError(f"video {self.name!r}: flow shape {flow.shape} != rgb shape {rgb.shape}")
    if label.ndim != 1:
      raise ValueError(f"video {self.name!r}: video_label must be [C], got {label.shape}")
    if not isinstance(self.points, points_lib.PointLabels):
      raise ValueError(f"video {self.name!r}: points must be PointLabels, got "
                       f"{type(self.points).__name__}")
    if len(self.points) and self.points.snippets.max() >= rgb.shape[0]:
      raise ValueError(f"video {self.name!r}: point snippet {int(self.points.snippets.max())} "
                       f"is past the video's {rgb.shape[0]} snippets")
    if len(self.points) and self.points.labels.max() >= label.shape[0]:
      raise ValueError(f"video {self.name!r}: point label {int(self.points.labels.max())} "
                       f">= number of classes {label.shape[0]}")
    if self.truth is not None:
      truth = np.asarray(self.truth, np.int32)
      if truth.shape != (rgb.shape[0],):
        raise ValueError(f"video {self.name!r}: truth must be [T] = [{rgb.shape[0]}], got "
                         f"{truth.shape}")
      object.__setattr__(self, "truth", truth)
    object.__setattr__(self, "rgb", rgb)
    object.__setattr__(self, "flow", flow)
    object.__setattr__(self, "video_label", label)

  @property
  def length(self) -> int:
    """``T``, the number of snippets."""
    return int(self.rgb.shape[0])


def load_video_arrays(dataset: layout.Dataset, points: dict,
                      names: Optional[Sequence[str]] = None,
                      num_classes: int = layout.NUM_CLASSES) -> list:
  """Loads features (validated by :func:`layout.load_features`) into :class:`VideoArrays`.

  Args:
    dataset: the dataset.
    points: ``{video_name: PointLabels}`` from :func:`points.sample_points`.
    names: the videos to load, in this order; default every video in file order.
    num_classes: ``C`` of the video labels.

  Returns:
    ``list[VideoArrays]`` in the order of ``names``.
  """
  by_name = {v.video: v for v in dataset.videos}
  names = [v.video for v in dataset.videos] if names is None else list(names)
  out = []
  for n in names:
    if n not in by_name:
      raise ValueError(f"dataset {dataset.root}: unknown video {n!r}")
    if n not in points:
      raise ValueError(f"dataset {dataset.root}: no point labels for video {n!r}")
    rgb, flow = layout.load_features(dataset, by_name[n])
    p = points[n]
    out.append(VideoArrays(n, by_name[n].subject, rgb, flow, p, p.video_label(num_classes)))
  return out


# ----------------------------------------------------------------------------------------------
# Buckets.


def _check_lengths(lengths) -> np.ndarray:
  a = np.asarray(lengths)
  if a.ndim != 1 or a.size == 0:
    raise ValueError(f"lengths must be a non-empty 1-D sequence, got shape {a.shape}")
  if not np.issubdtype(a.dtype, np.integer):
    if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
      raise ValueError(f"lengths must be integers, got {a[:5].tolist()}...")
  a = a.astype(np.int64)
  if a.min() < 1:
    raise ValueError(f"lengths must be >= 1, got minimum {int(a.min())}")
  return a


def _check_buckets(buckets) -> np.ndarray:
  b = np.asarray(buckets)
  if b.ndim != 1 or b.size == 0 or not np.issubdtype(b.dtype, np.integer):
    raise ValueError(f"buckets must be a non-empty 1-D sequence of integers, got {buckets!r}")
  b = b.astype(np.int64)
  if b.min() < 1 or np.any(np.diff(b) <= 0):
    raise ValueError(f"buckets must be positive and strictly increasing, got {b.tolist()}")
  return b


def _positive_int(name: str, value, minimum: int = 1) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
  return int(value)


def assign_buckets(lengths, buckets) -> np.ndarray:
  """Index of the smallest bucket ``>=`` each length.

  Returns:
    ``[V]`` int64 bucket indices.

  Raises:
    ValueError: if a length exceeds the largest bucket.
  """
  lengths, buckets = _check_lengths(lengths), _check_buckets(buckets)
  idx = np.searchsorted(buckets, lengths, side="left")
  if np.any(idx >= len(buckets)):
    raise ValueError(f"length {int(lengths.max())} exceeds the largest bucket "
                     f"{int(buckets[-1])}")
  return idx


def make_buckets(lengths, batch_size: int = 8, max_buckets: int = 6,
                 multiple: int = 8) -> tuple:
  """Bucket lengths minimising the total padding of the given (dataset-wide) lengths.

  Exact dynamic programme over the sorted distinct rounded lengths: every bucket is a multiple
  of ``multiple``, the last one holds the longest video, there are at most ``max_buckets`` and
  each holds at least ``min(batch_size, len(lengths))`` videos (so a batch rarely needs videos
  from a smaller bucket). The cost is ``sum_v (bucket(v) - length(v))``, which is proportional
  to the expected padded snippets per batch when buckets are drawn in proportion to their video
  counts. Among equal costs the fewest buckets win (fewer compilations).

  Args:
    lengths: ``[V]`` snippet counts of every video of the dataset.
    batch_size: videos per batch.
    max_buckets: the most buckets (compiled shapes).
    multiple: every bucket length is a multiple of this.

  Returns:
    Sorted tuple of bucket lengths (python ints).
  """
  lengths = _check_lengths(lengths)
  batch_size = _positive_int("batch_size", batch_size)
  max_buckets = _positive_int("max_buckets", max_buckets)
  multiple = _positive_int("multiple", multiple)
  rounded = -(-lengths // multiple) * multiple
  values, inverse = np.unique(rounded, return_inverse=True)
  k = len(values)
  count = np.zeros(k + 1, np.int64)
  total = np.zeros(k + 1, np.int64)
  np.add.at(count, inverse + 1, 1)
  np.add.at(total, inverse + 1, lengths)
  count, total = np.cumsum(count), np.cumsum(total)  # prefix sums over distinct values
  min_count = min(batch_size, len(lengths))
  big = np.iinfo(np.int64).max // 4
  # dp[m, j]: least padding covering distinct values [0, j) with m buckets, the last ending
  # at value j - 1; arg[m, j] the start of that last bucket.
  dp = np.full((max_buckets + 1, k + 1), big, np.int64)
  arg = np.zeros((max_buckets + 1, k + 1), np.int64)
  dp[0, 0] = 0
  for m in range(1, max_buckets + 1):
    for j in range(1, k + 1):
      i = np.arange(j)
      n = count[j] - count[i]
      cost = dp[m - 1, i] + values[j - 1] * n - (total[j] - total[i])
      cost = np.where((n >= min_count) & (dp[m - 1, i] < big), cost, big)
      best = int(np.argmin(cost))
      dp[m, j], arg[m, j] = cost[best], best
  m = int(np.argmin(dp[1:, k])) + 1  # first minimum: fewest buckets among ties
  if dp[m, k] >= big:  # cannot happen: one bucket holding everything is always feasible
    raise AssertionError("make_buckets: no feasible bucketing")
  out, j = [], k
  while m > 0:
    out.append(int(values[j - 1]))
    j = int(arg[m, j])
    m -= 1
  return tuple(sorted(out))


def bucket_probs(lengths, buckets) -> np.ndarray:
  """Share of the given videos assigned to each bucket.

  Compute it from the dataset-wide lengths and pass it to every fold's :class:`BatchSampler`
  so that, with the same seed, all folds draw the same bucket at every step.

  Returns:
    ``[K]`` float64 probabilities summing to 1.
  """
  idx = assign_buckets(lengths, buckets)
  counts = np.bincount(idx, minlength=len(np.asarray(buckets))).astype(np.float64)
  return counts / counts.sum()


def padding_share(lengths, buckets) -> float:
  """Expected fraction of padded snippets in a batch.

  Assumes buckets are drawn in proportion to their video counts and videos uniformly within a
  bucket: then ``E[padded] / E[snippets] = sum_v (bucket(v) - length(v)) / sum_v bucket(v)``.
  """
  lengths = _check_lengths(lengths)
  buckets = _check_buckets(buckets)
  padded_to = buckets[assign_buckets(lengths, buckets)]
  return float((padded_to - lengths).sum() / padded_to.sum())


# ----------------------------------------------------------------------------------------------
# Batches.


def pad_batch(videos: Sequence[VideoArrays], length: int, batch_size: int, max_points: int,
              ids: Optional[Sequence[int]] = None) -> dict:
  """Pads videos into one batch of static shape ``[batch_size, length, ...]``.

  Args:
    videos: at most ``batch_size`` videos, each at most ``length`` snippets long, with the
      same feature width and number of classes.
    length: ``Tb``, the padded length.
    batch_size: ``B``; rows beyond ``len(videos)`` are padded invalid rows.
    max_points: ``N``; no video may have more points.
    ids: ``[len(videos)]`` ids written to ``video_id``; default ``0..len(videos)-1``.

  Returns:
    The batch dict described in the module docstring.
  """
  length = _positive_int("length", length)
  batch_size = _positive_int("batch_size", batch_size)
  max_points = _positive_int("max_points", max_points)
  videos = list(videos)
  if not videos:
    raise ValueError("pad_batch: no videos (need at least one to know the feature width)")
  if len(videos) > batch_size:
    raise ValueError(f"pad_batch: {len(videos)} videos > batch_size {batch_size}")
  ids = np.arange(len(videos)) if ids is None else np.asarray(ids, np.int64).reshape(-1)
  if ids.shape[0] != len(videos):
    raise ValueError(f"pad_batch: {ids.shape[0]} ids for {len(videos)} videos")
  f, c = videos[0].rgb.shape[1], videos[0].video_label.shape[0]
  for v in videos:
    if v.length > length:
      raise ValueError(f"video {v.name!r}: {v.length} snippets do not fit the bucket length "
                       f"{length}")
    if len(v.points) > max_points:
      raise ValueError(f"video {v.name!r}: {len(v.points)} points > max_points {max_points}; "
                       "raise the max_points setting")
    if v.rgb.shape[1] != f or v.video_label.shape[0] != c:
      raise ValueError(f"video {v.name!r}: feature width {v.rgb.shape[1]} / classes "
                       f"{v.video_label.shape[0]} differ from video {videos[0].name!r}'s "
                       f"{f} / {c}")
  batch = {
      "rgb": np.zeros([batch_size, length, f], np.float32),
      "flow": np.zeros([batch_size, length, f], np.float32),
      "valid": np.zeros([batch_size, length], np.float32),
      "point_index": np.zeros([batch_size, max_points], np.int32),
      "point_label": np.zeros([batch_size, max_points], np.int32),
      "point_valid": np.zeros([batch_size, max_points], np.float32),
      "video_label": np.zeros([batch_size, c], np.float32),
      "video_id": np.full([batch_size], -1, np.int32),
      "row_valid": np.zeros([batch_size], np.float32),
      "truth": np.full([batch_size, length], -1, np.int32),
  }
  for row, (v, i) in enumerate(zip(videos, ids)):
    t, n = v.length, len(v.points)
    batch["rgb"][row, :t] = v.rgb
    batch["flow"][row, :t] = v.flow
    batch["valid"][row, :t] = 1.0
    batch["point_index"][row, :n] = v.points.snippets
    batch["point_label"][row, :n] = v.points.labels
    batch["point_valid"][row, :n] = 1.0
    batch["video_label"][row] = v.video_label
    batch["video_id"][row] = i
    batch["row_valid"][row] = 1.0
    if v.truth is not None:
      batch["truth"][row, :t] = v.truth
  return batch


def _assign_videos(videos: Sequence[VideoArrays], buckets: np.ndarray) -> np.ndarray:
  idx = np.searchsorted(buckets, [v.length for v in videos], side="left")
  for v, i in zip(videos, idx):
    if i >= len(buckets):
      raise ValueError(f"video {v.name!r}: {v.length} snippets exceed the largest bucket "
                       f"{int(buckets[-1])}; build the buckets from the dataset-wide lengths")
  return idx


def _check_videos(videos: Sequence[VideoArrays], max_points: int) -> list:
  videos = list(videos)
  if not videos:
    raise ValueError("no videos given")
  names = [v.name for v in videos]
  if len(set(names)) != len(names):
    dup = next(n for n in names if names.count(n) > 1)
    raise ValueError(f"video {dup!r} given more than once")
  for v in videos:
    if len(v.points) > max_points:
      raise ValueError(f"video {v.name!r}: {len(v.points)} points > max_points {max_points}; "
                       "raise the max_points setting")
  return videos


def draw_bucket(seed: int, step: int, probs: Sequence[float]) -> int:
  """The length bucket of training step ``step``: a function of ``(seed, step, probs)`` only.

  Drawn from the stream ``numpy.random.default_rng([seed, step, 0xB0C])`` with
  ``choice(len(probs), p=probs)``; so with one seed every fold of a run, trained alone, side by
  side or resumed, pads step ``step`` to the same length.

  Args:
    seed: the run's seed.
    step: the 0-based step.
    probs: ``[K]`` bucket probabilities summing to 1.

  Returns:
    The bucket index in ``[0, K)``.
  """
  rng = np.random.default_rng([seed, step, 0xB0C])
  return int(rng.choice(len(probs), p=probs))


class BatchSampler:
  """Deterministic training batches from length buckets.

  The batch of step ``s`` depends only on ``(seed, s)``, the sampler's videos (and their
  order) and ``bucket_probs``, never on earlier calls, so a run resumed from a checkpoint at
  step ``s`` sees exactly the batches it would have seen.

  Unless the caller passes the bucket (the trainer passes one draw shared by all folds), it is
  :func:`draw_bucket` of ``(seed, step, bucket_probs)``: with the same ``seed`` and the same
  ``bucket_probs`` (e.g. :func:`bucket_probs` of the dataset-wide lengths) every LOSO fold picks
  the same bucket at every step, whatever its training videos. By default the probabilities are
  proportional to the number of the sampler's videos in each bucket.

  Videos are then drawn with ``default_rng([seed, step, 1])``: without replacement from the
  bucket's own videos; if it holds fewer than ``batch_size``, all of them plus videos of the
  next smaller buckets (nearest first, a random subset of the last one needed); if even all
  videos that fit are too few, every one of them plus draws with replacement. Rows are shuffled.

  Attributes:
    video_names: names of the sampler's videos; ``video_id`` indexes this list.
    buckets: the bucket lengths.
    bucket_of: ``[V]`` bucket index of each video.
    probs: ``[K]`` bucket probabilities in use.
  """

  def __init__(self, videos: Sequence[VideoArrays], buckets: Sequence[int], batch_size: int,
               max_points: int, seed: int, bucket_probs: Optional[Sequence[float]] = None):
    self.batch_size = _positive_int("batch_size", batch_size)
    self.max_points = _positive_int("max_points", max_points)
    self.seed = _positive_int("seed", seed, minimum=0)
    self._videos = _check_videos(videos, self.max_points)
    self.buckets = tuple(int(b) for b in _check_buckets(buckets))
    self.video_names = [v.name for v in self._videos]
    self.bucket_of = _assign_videos(self._videos, np.asarray(self.buckets))
    k = len(self.buckets)
    self._members = [np.flatnonzero(self.bucket_of == b) for b in range(k)]
    counts = np.array([len(m) for m in self._members], np.float64)
    if bucket_probs is None:
      probs = counts
    else:
      probs = np.asarray(bucket_probs, np.float64)
      if probs.shape != (k,):
        raise ValueError(f"bucket_probs has shape {probs.shape}, expected ({k},) for buckets "
                         f"{self.buckets}")
      if not np.all(np.isfinite(probs)) or np.any(probs < 0) or probs.sum() <= 0:
        raise ValueError(f"bucket_probs must be finite, >= 0 and not all 0, got "
                         f"{probs.tolist()}")
    self.probs = probs / probs.sum()
    for b in np.flatnonzero(self.probs > 0):
      self._check_fits(int(b))

  def __len__(self) -> int:
    return len(self._videos)

  @property
  def videos(self) -> list:
    return list(self._videos)

  def _check_fits(self, b: int) -> None:
    if not 0 <= b < len(self.buckets):
      raise ValueError(f"bucket index {b} out of range for buckets {self.buckets}")
    if not any(len(m) for m in self._members[:b + 1]):
      shortest = min(v.length for v in self._videos)
      raise ValueError(f"bucket {b} (length {self.buckets[b]}) has probability "
                       f"{self.probs[b]:.3g} but none of the sampler's {len(self._videos)} "
                       f"videos fits it (shortest: {shortest} snippets); give it probability 0")

  def _step(self, step) -> int:
    return _positive_int("step", step, minimum=0)

  def bucket_for_step(self, step: int) -> int:
    """The bucket index drawn for ``step``: :func:`draw_bucket` of ``(seed, step, probs)``."""
    return draw_bucket(self.seed, self._step(step), self.probs)

  def indices_for_step(self, step: int, bucket: Optional[int] = None) -> tuple:
    """``(bucket, [B] video indices)`` of step ``step``; see the class docstring."""
    step = self._step(step)
    b = self.bucket_for_step(step) if bucket is None else int(bucket)
    self._check_fits(b)
    rng = np.random.default_rng([self.seed, step, 1])
    bs = self.batch_size
    own = self._members[b]
    if len(own) >= bs:
      return b, rng.choice(own, bs, replace=False)
    chosen, need = [own], bs - len(own)
    for smaller in range(b - 1, -1, -1):
      pool = self._members[smaller]
      if len(pool) <= need:
        chosen.append(pool)
        need -= len(pool)
      else:
        chosen.append(rng.choice(pool, need, replace=False))
        need = 0
      if need == 0:
        break
    chosen = np.concatenate(chosen)
    if need:
      chosen = np.concatenate([chosen, rng.choice(chosen, need, replace=True)])
    return b, rng.permutation(chosen)

  def sample(self, step: int, bucket: Optional[int] = None) -> dict:
    """The padded batch of ``step`` (optionally forcing the bucket index)."""
    b, idx = self.indices_for_step(step, bucket)
    return pad_batch([self._videos[i] for i in idx], self.buckets[b], self.batch_size,
                     self.max_points, idx)


def iterate_padded(videos: Sequence[VideoArrays], buckets: Sequence[int], batch_size: int,
                   max_points: int) -> Iterator[dict]:
  """Every video exactly once, in batches grouped by bucket (for inference).

  Buckets in increasing order; within a bucket, videos in the given order; the last batch of a
  bucket has padded invalid rows. ``video_id`` is the index in ``videos``.

  Inputs are validated before the first batch is produced (errors raise at the call).
  """
  batch_size = _positive_int("batch_size", batch_size)
  max_points = _positive_int("max_points", max_points)
  videos = _check_videos(videos, max_points)
  buckets = tuple(int(b) for b in _check_buckets(buckets))
  assigned = _assign_videos(videos, np.asarray(buckets))

  def generate():
    for b, length in enumerate(buckets):
      members = np.flatnonzero(assigned == b)
      for start in range(0, len(members), batch_size):
        ids = members[start:start + batch_size]
        yield pad_batch([videos[i] for i in ids], length, batch_size, max_points, ids)

  return generate()


def num_padded_batches(lengths, buckets, batch_size: int) -> int:
  """How many batches :func:`iterate_padded` yields for videos of these lengths."""
  idx = assign_buckets(lengths, buckets)
  counts = np.bincount(idx, minlength=len(np.asarray(buckets)))
  return int(sum(-(-c // batch_size) for c in counts))

