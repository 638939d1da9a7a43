"""The on-disk dataset layout shared by every loader, importer and the generator.

A dataset directory ``DIR`` holds:

* ``DIR/dataset.json``: ``name``, ``fps``, ``snippet_length``, ``feature_dim`` (plus free-form
  extras such as ``source`` or ``preset``).
* ``DIR/videos.csv``: ``subject,video,num_frames``.
* ``DIR/annotations.csv``: ``subject,video,onset,apex,offset,type``; frames 0-based and inclusive,
  ``apex`` may be empty, ``type`` is ``ME`` or ``MaE``.
* ``DIR/features/<video>.npz``: float32 ``rgb`` and ``flow``, each ``[T, feature_dim]`` with
  ``T = (num_frames - 1) // snippet_length`` (the last frame is dropped, paper Section 3.2);
  files written by the extractor or the importer also carry the settings they were made with
  (:mod:`pwes_jax.data.feature_settings`), checked against ``dataset.json`` when loaded.

``snippet_length`` is the stride between snippets; with overlapping windows ``dataset.json``'s
``snippet_window`` is the window (:mod:`pwes_jax.data.snippet_time` places each snippet at its
window's centre).

Every reader here validates what it reads and raises :class:`DatasetError` naming the file, the
video and the field; readers never write into the dataset directory.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import Iterable, Optional, Sequence

from absl import logging
import numpy as np

from pwes_jax.data import feature_settings
from pwes_jax.data import snippet_time

# Class indices used everywhere: foreground classes first, background last.
CLASS_NAMES = ("ME", "MaE")
ME, MAE, BACKGROUND = 0, 1, 2
NUM_CLASSES = len(CLASS_NAMES)  # C, without background.

VIDEOS_HEADER = ("subject", "video", "num_frames")
ANNOTATIONS_HEADER = ("subject", "video", "onset", "apex", "offset", "type")


# The flags of launch.import_dataset that convert features made with other settings.
IMPORT_REMEDY = {"fps": "--resample_fps={}", "snippet_stride": "--snippet_length={}",
                 "snippet_window": "--snippet_window={}"}


class DatasetError(ValueError):
  """A dataset file is malformed. The message names the file, the video and the field."""


def error(path: str, video: Optional[str], field: Optional[str], message: str) -> DatasetError:
  """Builds a :class:`DatasetError` with a uniform ``file / video / field`` prefix."""
  parts = [f"file {path}"]
  if video is not None:
    parts.append(f"video {video!r}")
  if field is not None:
    parts.append(f"field {field!r}")
  return DatasetError(f"{', '.join(parts)}: {message}")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Contents of ``dataset.json``."""
  name: str
  fps: float
  snippet_length: int
  feature_dim: int = 1024
  extras: dict = dataclasses.field(default_factory=dict)

  def num_snippets(self, num_frames: int) -> int:
    """Snippets of a video with ``num_frames`` frames (the last frame is dropped)."""
    return (int(num_frames) - 1) // self.snippet_length


@dataclasses.dataclass(frozen=True)
class Video:
  subject: str
  video: str
  num_frames: int


@dataclasses.dataclass(frozen=True)
class Annotation:
  """One ground-truth interval; frames 0-based and inclusive; ``apex`` is -1 when unknown."""
  subject: str
  video: str
  onset: int
  apex: int
  offset: int
  type: str  # "ME" or "MaE"

  @property
  def label(self) -> int:
    return CLASS_NAMES.index(self.type)


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A dataset directory's metadata, videos and annotations (features are loaded lazily)."""
  root: str
  info: DatasetInfo
  videos: tuple  # tuple[Video, ...] in file order
  annotations: tuple  # tuple[Annotation, ...]

  @property
  def subjects(self) -> list:
    """Subjects in first-appearance order."""
    return list(dict.fromkeys(v.subject for v in self.videos))

  def annotations_of(self, video: str) -> list:
    return [a for a in self.annotations if a.video == video]

  def feature_path(self, video: str) -> str:
    return feature_path(self.root, video)

  def videos_without_annotation(self) -> list:
    """Names of the negative videos (no ground-truth interval), in file order."""
    annotated = {a.video for a in self.annotations}
    return [v.video for v in self.videos if v.video not in annotated]

  def summary(self) -> dict:
    """Counts for logs and reports.

    Returns:
      ``videos``, ``subjects``, ``ME``, ``MaE`` (interval counts), ``videos_without_annotation``,
      ``annotations_without_apex``, ``mean_frames`` and ``mean_snippets``.
    """
    frames = np.array([v.num_frames for v in self.videos], np.float64)
    snippets = np.array([self.info.num_snippets(v.num_frames) for v in self.videos], np.float64)
    counts = {name: sum(a.type == name for a in self.annotations) for name in CLASS_NAMES}
    return {
        "videos": len(self.videos),
        "subjects": len(self.subjects),
        **counts,
        "videos_without_annotation": len(self.videos_without_annotation()),
        "annotations_without_apex": sum(a.apex < 0 for a in self.annotations),
        "mean_frames": float(frames.mean()) if len(frames) else 0.0,
        "mean_snippets": float(snippets.mean()) if len(snippets) else 0.0,
    }


def feature_path(root: str, video: str) -> str:
  return os.path.join(root, "features", f"{video}.npz")


# ----------------------------------------------------------------------------------------------
# Writing.


def write_dataset(root: str, info: DatasetInfo, videos: Sequence[Video],
                  annotations: Sequence[Annotation], *, overwrite: bool = False) -> None:
  """Writes ``dataset.json``, ``videos.csv`` and ``annotations.csv`` into ``root``.

  Refuses to replace existing files unless ``overwrite`` (nothing the user wrote is lost).
  """
  os.makedirs(root, exist_ok=True)
  targets = [os.path.join(root, n) for n in ("dataset.json", "videos.csv", "annotations.csv")]
  if not overwrite:
    for t in targets:
      if os.path.exists(t):
        raise FileExistsError(f"{t} exists; refusing to overwrite it")
  meta = {"name": info.name, "fps": info.fps, "snippet_length": info.snippet_length,
          "feature_dim": info.feature_dim, **info.extras}
  with open(targets[0], "w") as f:
    json.dump(meta, f, indent=2)
  with open(targets[1], "w", newline="") as f:
    write_videos_rows(f, videos)
  with open(targets[2], "w", newline="") as f:
    write_annotation_rows(f, annotations)


def write_videos_rows(f, videos: Sequence[Video], extra: Optional[dict] = None) -> None:
  """Writes ``videos.csv``'s header and rows to the open text file ``f``.

  ``extra`` (``{video: {column: value}}``) adds columns after the three of the layout, in order
  of first appearance (readers ignore them; the extractor records ``first_frame_number`` and
  ``filled_frames`` so); a video without an entry gets empty cells.
  """
  extra = extra or {}
  columns = list(dict.fromkeys(c for cols in extra.values() for c in cols))
  w = csv.writer(f)
  w.writerow(VIDEOS_HEADER + tuple(columns))
  for v in videos:
    more = extra.get(v.video, {})
    w.writerow([v.subject, v.video, int(v.num_frames)] + [more.get(c, "") for c in columns])


def write_annotation_rows(f, annotations: Sequence[Annotation]) -> None:
  """Writes ``annotations.csv``'s header and rows to the open text file ``f``."""
  w = csv.writer(f)
  w.writerow(ANNOTATIONS_HEADER)
  for a in annotations:
    w.writerow([a.subject, a.video, int(a.onset), "" if a.apex < 0 else int(a.apex),
                int(a.offset), a.type])


def write_features(root: str, video: str, rgb: np.ndarray, flow: np.ndarray,
                   *, overwrite: bool = False, settings: Optional[dict] = None) -> str:
  """Writes ``features/<video>.npz`` (float32 ``rgb`` and ``flow``); returns the path.

  ``settings`` (:func:`feature_settings.arrays`: ``num_frames``, ``fps``, ``snippet_stride``,
  ``snippet_window``) are written beside them, so the file says how it was made.
  """
  path = feature_path(root, video)
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(f"{path} exists; refusing to overwrite it")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  np.savez(path, rgb=np.asarray(rgb, np.float32), flow=np.asarray(flow, np.float32),
           **(settings or {}))
  return path


# ----------------------------------------------------------------------------------------------
# Reading, with validation.


def read_info(root: str) -> DatasetInfo:
  path = os.path.join(root, "dataset.json")
  if not os.path.isfile(path):
    raise error(path, None, None, "missing (is this a dataset directory?)")
  try:
    with open(path) as f:
      meta = json.load(f)
  except json.JSONDecodeError as e:
    raise error(path, None, None, f"not valid JSON ({e})") from None
  if not isinstance(meta, dict):
    raise error(path, None, None, "must hold a JSON object")
  for key in ("name", "fps", "snippet_length"):
    if key not in meta:
      raise error(path, None, key, "missing")
  try:
    fps = float(meta["fps"])
    snippet_length = int(meta["snippet_length"])
    feature_dim = int(meta.get("feature_dim", 1024))
  except (TypeError, ValueError) as e:
    raise error(path, None, None, f"non-numeric value ({e})") from None
  if not (fps > 0):
    raise error(path, None, "fps", f"must be positive, got {meta['fps']!r}")
  if snippet_length < 1:
    raise error(path, None, "snippet_length", f"must be >= 1, got {meta['snippet_length']!r}")
  if feature_dim < 1:
    raise error(path, None, "feature_dim", f"must be >= 1, got {meta.get('feature_dim')!r}")
  extras = {k: v for k, v in meta.items()
            if k not in ("name", "fps", "snippet_length", "feature_dim")}
  return DatasetInfo(str(meta["name"]), fps, snippet_length, feature_dim, extras)


def _read_csv(path: str, header: Sequence[str]) -> list:
  if not os.path.isfile(path):
    raise error(path, None, None, "missing")
  try:
    with open(path, newline="", encoding="utf-8-sig") as f:
      rows = list(csv.reader(f))
  except (UnicodeDecodeError, csv.Error) as e:
    raise error(path, None, None, f"unreadable CSV ({e})") from None
  if not rows:
    raise error(path, None, None, "empty file (expected a header row)")
  got = [h.strip() for h in rows[0]]
  missing = [h for h in header if h not in got]
  if missing:
    raise error(path, None, missing[0], f"column missing from header {got}")
  for h in header:
    if got.count(h) > 1:
      raise error(path, None, h, f"column appears {got.count(h)} times in header {got}")
  idx = {h: got.index(h) for h in header}
  out = []
  for line_no, row in enumerate(rows[1:], start=2):
    if not any(c.strip() for c in row):
      continue
    if len(row) < len(got):
      row = row + [""] * (len(got) - len(row))
    out.append((line_no, {h: row[idx[h]].strip() for h in header}))
  return out


def _int_field(path, video, field, value, line_no, *, allow_empty=False):
  if value == "" and allow_empty:
    return -1
  try:
    f = float(value)
  except ValueError:
    raise error(path, video, field, f"line {line_no}: not a number: {value!r}") from None
  if not np.isfinite(f) or f != int(f):
    raise error(path, video, field, f"line {line_no}: not an integer frame: {value!r}")
  return int(f)


def read_videos(root: str) -> tuple:
  path = os.path.join(root, "videos.csv")
  videos, seen = [], {}
  for line_no, r in _read_csv(path, VIDEOS_HEADER):
    name = r["video"]
    if not name:
      raise error(path, None, "video", f"line {line_no}: empty video name")
    if name in (".", "..") or "/" in name or "\\" in name:
      raise error(path, name, "video", f"line {line_no}: not usable as a file name "
                  "(features/<video>.npz)")
    if not r["subject"]:
      raise error(path, name, "subject", f"line {line_no}: empty subject")
    if name in seen:
      raise error(path, name, "video", f"line {line_no}: duplicate video name "
                  f"(first on line {seen[name]})")
    seen[name] = line_no
    n = _int_field(path, name, "num_frames", r["num_frames"], line_no)
    if n < 2:
      raise error(path, name, "num_frames", f"line {line_no}: must be >= 2, got {n}")
    videos.append(Video(r["subject"], name, n))
  if not videos:
    raise error(path, None, None, "no videos listed")
  return tuple(videos)


def read_annotations(root: str, videos: Sequence[Video]) -> tuple:
  path = os.path.join(root, "annotations.csv")
  by_name = {v.video: v for v in videos}
  out = []
  for line_no, r in _read_csv(path, ANNOTATIONS_HEADER):
    name = r["video"]
    if name not in by_name:
      raise error(path, name, "video", f"line {line_no}: video not listed in videos.csv")
    v = by_name[name]
    if r["subject"] != v.subject:
      raise error(path, name, "subject", f"line {line_no}: {r['subject']!r} differs from "
                  f"videos.csv's {v.subject!r}")
    onset = _int_field(path, name, "onset", r["onset"], line_no)
    offset = _int_field(path, name, "offset", r["offset"], line_no)
    apex = _int_field(path, name, "apex", r["apex"], line_no, allow_empty=True)
    if r["type"] not in CLASS_NAMES:
      raise error(path, name, "type", f"line {line_no}: unknown type {r['type']!r}, "
                  f"expected one of {CLASS_NAMES}")
    if onset < 0:
      raise error(path, name, "onset", f"line {line_no}: negative frame {onset}")
    if onset > offset:
      raise error(path, name, "offset", f"line {line_no}: onset {onset} > offset {offset}")
    if offset >= v.num_frames:
      raise error(path, name, "offset", f"line {line_no}: {offset} is past the video's end "
                  f"(num_frames {v.num_frames})")
    if apex >= 0 and not onset <= apex <= offset:
      raise error(path, name, "apex", f"line {line_no}: {apex} outside [{onset}, {offset}]")
    out.append(Annotation(v.subject, name, onset, apex, offset, r["type"]))
  return tuple(out)


def load_dataset(root: str) -> Dataset:
  """Reads and validates a dataset directory's metadata (not its features)."""
  root = os.path.abspath(root)
  info = read_info(root)
  videos = read_videos(root)
  annotations = read_annotations(root, videos)
  for v in videos:
    if info.num_snippets(v.num_frames) < 1:
      raise error(os.path.join(root, "videos.csv"), v.video, "num_frames",
                  f"{v.num_frames} frames give no snippet of {info.snippet_length} frames")
  dataset = Dataset(root, info, videos, annotations)
  negatives = dataset.videos_without_annotation()
  if negatives:
    shown = ", ".join(negatives[:5]) + (", ..." if len(negatives) > 5 else "")
    logging.warning("%s: %d of %d videos have no annotation (negative videos): %s",
                    os.path.join(root, "annotations.csv"), len(negatives), len(videos), shown)
  return dataset


def load_features(dataset: Dataset, video: Video) -> tuple:
  """Loads and validates ``features/<video>.npz``; returns float32 ``(rgb, flow)`` ``[T, D]``.

  Raises:
    DatasetError: naming the file, the video and the array when the file is missing or
      unreadable, an array is missing, not 2-D or not floating point, ``rgb`` and ``flow``
      differ in length, the width is not ``feature_dim``, the length is not
      ``info.num_snippets(num_frames)`` or a value is NaN/Inf.
  """
  path = dataset.feature_path(video.video)
  name = video.video
  if not os.path.isfile(path):
    raise error(path, name, None, "feature file missing")
  try:
    with np.load(path, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
  except Exception as e:  # noqa: BLE001 - any unreadable file becomes one clear error.
    raise error(path, name, None, f"unreadable feature file ({e})") from None
  for key in ("rgb", "flow"):
    if key not in arrays:
      raise error(path, name, key, f"array missing (has {sorted(arrays)})")
    a = arrays[key]
    if a.ndim != 2:
      raise error(path, name, key, f"expected 2-D [T, D], got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
      raise error(path, name, key, f"dtype {a.dtype} is not floating point")
  if arrays["rgb"].shape[0] != arrays["flow"].shape[0]:
    raise error(path, name, "flow", f"rgb has {arrays['rgb'].shape[0]} snippets, flow "
                f"{arrays['flow'].shape[0]}")
  info = dataset.info
  try:
    feature_settings.check(
        feature_settings.read(arrays),
        {"fps": info.fps, "snippet_stride": info.snippet_length,
         "snippet_window": snippet_time.window_of(info), "num_frames": video.num_frames},
        where=f"file {path}, video {name!r}",
        against=f"{os.path.join(dataset.root, 'dataset.json')} (and videos.csv)",
        remedy=IMPORT_REMEDY, then="to launch.import_dataset")
  except feature_settings.MismatchError as e:
    raise DatasetError(str(e)) from None
  expected_t = dataset.info.num_snippets(video.num_frames)
  out = []
  for key in ("rgb", "flow"):
    a = arrays[key]
    if a.shape[1] != dataset.info.feature_dim:
      raise error(path, name, key, f"feature width {a.shape[1]} != dataset.json feature_dim "
                  f"{dataset.info.feature_dim}")
    if a.shape[0] != expected_t:
      raise error(path, name, key, f"{a.shape[0]} snippets, expected {expected_t} = "
                  f"({video.num_frames} - 1) // {dataset.info.snippet_length}")
    bad = ~np.isfinite(a)
    if bad.any():
      t = int(np.argwhere(bad)[0][0])
      raise error(path, name, key, f"{int(bad.sum())} NaN/Inf values (first at snippet {t})")
    out.append(a.astype(np.float32))
  return out[0], out[1]


def load_all_features(dataset: Dataset, videos: Optional[Iterable[Video]] = None) -> dict:
  """Loads every (or the given) video's features: ``{video_name: (rgb, flow)}``."""
  videos = dataset.videos if videos is None else videos
  return {v.video: load_features(dataset, v) for v in videos}
