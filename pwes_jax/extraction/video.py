"""Finding the videos of a dataset tree and reading their frames, resized, as uint8 RGB.

The datasets ship long videos as files (CAS(ME)^2 ``rawvideo/s15/15_0101....avi``) or as folders
of frame images (SAMM-LV ``006_1/006_1_0001.jpg``, CAS(ME)^3 ``spNO.1/a/color/0.jpg``). Both are
handled here, with OpenCV:

* :func:`discover` walks a directory: every video file is a video, and so is every folder that
  directly holds image files; a leaf folder with neither is reported as a problem.
* :func:`iter_frames` yields a video's frames, in order, as ``uint8 [S, S, 3]`` RGB after
  :func:`preprocess_frame` (resize, centre crop), optionally resampled to another frame rate.
* Numbered frame folders (every image name ends in a number: ``7.jpg``, ``006_1_0001.jpg``): the
  frames are ordered by that number, and a number missing between the first and the last (a lost
  frame; CAS(ME)^3's owners say some are) is filled with the previous frame, so a frame's
  position in the extracted video is always ``number - first_frame_number``
  (:func:`frame_numbering`; the extractor records the first number and the filled gaps, and the
  importer maps the annotations' jpg numbers through them). Folders whose names carry no number
  keep the natural order of the names.

A video file's decoded frames are counted against the frame count its container states
(:class:`Decoding`): a file that stops decoding early (damaged, truncated) is caught by the
extractor, not analysed as a shorter video.

Errors are :class:`VideoReadError`, whose message names the file (for a frame folder, the frame
file) and says what is wrong: an unreadable video, a folder without frames, a frame whose size
differs from the first frame's, a frame image that cannot be decoded.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Callable, Iterator, Optional, Sequence

import cv2
import numpy as np

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mov", ".mkv", ".wmv", ".mpg", ".mpeg", ".m4v", ".webm")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


class VideoReadError(ValueError):
  """A video cannot be read as frames. The message names the file."""


@dataclasses.dataclass(frozen=True)
class VideoSource:
  """One video found under the videos directory.

  Attributes:
    path: the video file, or the folder of frame images.
    relpath: ``path`` relative to the videos directory, with ``/`` separators.
    name: the dataset's video name (``features/<name>.npz``).
    subject: the subject, for leave-one-subject-out folds.
    is_folder: whether ``path`` is a folder of frame images.
  """
  path: str
  relpath: str
  name: str
  subject: str
  is_folder: bool


@dataclasses.dataclass(frozen=True)
class Naming:
  """How a video's relative path (without extension, ``/`` separators) becomes name and subject.

  ``name_regex`` / ``subject_regex`` are searched in the relative path; the match is expanded with
  ``name_template`` / ``subject_template`` (``re`` back-references such as ``\\1_\\2``). With no
  ``name_regex`` the name is the relative path with ``/`` replaced by ``_``. The default subject is
  the first path component, or the part of a top-level name before its first ``_``. With
  ``include_regex`` only relative paths it matches (``re.search``) are videos; the others are
  skipped silently (e.g. CAS(ME)^3's ``depth`` folders beside ``color``).
  """
  include_regex: Optional[str] = None
  name_regex: Optional[str] = None
  name_template: str = r"\1"
  subject_regex: str = r"^([^/_]+)"
  subject_template: str = r"\1"

  def includes(self, relpath: str) -> bool:
    """Whether ``include_regex`` (if any) keeps this relative path."""
    return not self.include_regex or bool(re.search(self.include_regex, relpath.rstrip("/")))

  def apply(self, relpath: str) -> tuple:
    """Returns ``(name, subject)``; raises ``ValueError`` if a regex does not match."""
    stem = os.path.splitext(relpath)[0] if not relpath.endswith("/") else relpath.rstrip("/")
    if self.name_regex:
      m = re.search(self.name_regex, stem)
      if not m:
        raise ValueError(f"name_regex {self.name_regex!r} does not match {stem!r}")
      name = m.expand(self.name_template)
    else:
      name = stem.replace("/", "_")
    m = re.search(self.subject_regex, stem)
    if not m:
      raise ValueError(f"subject_regex {self.subject_regex!r} does not match {stem!r}")
    subject = m.expand(self.subject_template)
    if not name or "/" in name or name in (".", ".."):
      raise ValueError(f"video name {name!r} from {stem!r} is not a valid file name")
    if not subject:
      raise ValueError(f"empty subject from {stem!r}")
    return name, subject


def _natural_key(name: str) -> list:
  """Sort key putting ``img2.jpg`` before ``img10.jpg``."""
  return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name)]


def frame_files(folder: str) -> list:
  """The image files directly inside ``folder``, in natural order (``img2`` before ``img10``)."""
  names = [n for n in os.listdir(folder)
           if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, n))]
  return [os.path.join(folder, n) for n in sorted(names, key=_natural_key)]


_TRAILING_NUMBER = re.compile(r"(\d+)\D*$")


@dataclasses.dataclass(frozen=True)
class FrameNumbering:
  """The numbers in a frame folder's file names.

  Attributes:
    first: ``first_frame_number``, the smallest number (position 0 of the extracted video).
    last: the largest number.
    gaps: ``((start, end), ...)`` inclusive ranges of missing numbers, each filled with the frame
      before it.
  """
  first: int
  last: int
  gaps: tuple = ()

  @property
  def num_frames(self) -> int:
    """Frames of the extracted video, filled ones included: ``last - first + 1``."""
    return self.last - self.first + 1

  @property
  def filled(self) -> int:
    """How many frames were filled."""
    return sum(b - a + 1 for a, b in self.gaps)

  def gaps_text(self) -> str:
    """The gaps as ``"12-14;30"`` (``videos.csv``'s ``filled_frames``); empty when none."""
    return ";".join(str(a) if a == b else f"{a}-{b}" for a, b in self.gaps)


def frame_numbering(files: Sequence[str]) -> Optional[FrameNumbering]:
  """The numbering of frame files (the last run of digits of each name without extension).

  Returns:
    ``None`` when some name carries no number (the folder keeps its natural name order).

  Raises:
    VideoReadError: two files carry the same number (naming both).
  """
  numbers = {}
  for path in files:
    m = _TRAILING_NUMBER.search(os.path.splitext(os.path.basename(path))[0])
    if not m:
      return None
    n = int(m.group(1))
    if n in numbers:
      raise VideoReadError(f"frame {path}: number {n} is also the number of {numbers[n]}; "
                           "frames cannot be ordered")
    numbers[n] = path
  if not numbers:
    return None
  ordered = sorted(numbers)
  gaps = tuple((a + 1, b - 1) for a, b in zip(ordered, ordered[1:]) if b > a + 1)
  return FrameNumbering(ordered[0], ordered[-1], gaps)


def numbering_of(source: "VideoSource") -> Optional[FrameNumbering]:
  """A frame folder's :class:`FrameNumbering` (None for video files and unnumbered folders)."""
  if not source.is_folder:
    return None
  return frame_numbering(frame_files(source.path))


def discover(videos_dir: str, naming: Naming = Naming()) -> tuple:
  """Finds the videos under ``videos_dir``.

  Args:
    videos_dir: the root of the dataset's videos.
    naming: how relative paths become video names and subjects.

  Returns:
    ``(sources, problems)``: the :class:`VideoSource` list in natural path order, and a list of
    ``(path, message)`` for what could not be taken as a video (a leaf folder with no frames, a
    path the naming regexes do not match, two paths giving the same video name).

  Raises:
    VideoReadError: if ``videos_dir`` is not a directory.
  """
  if not os.path.isdir(videos_dir):
    raise VideoReadError(f"videos directory {videos_dir}: not a directory")
  found, problems = [], []
  for root, dirs, files in os.walk(videos_dir):
    dirs.sort(key=_natural_key)
    rel_root = os.path.relpath(root, videos_dir).replace(os.sep, "/")
    rel_root = "" if rel_root == "." else rel_root + "/"
    images = [f for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
    videos = sorted((f for f in files if f.lower().endswith(VIDEO_EXTENSIONS)), key=_natural_key)
    if images and root != videos_dir:
      found.append((root, rel_root, True))
      dirs[:] = []  # A frame folder is one video; do not look inside it.
      continue
    if images:
      problems.append((root, "image files directly in the videos directory are ignored; put "
                             "each video's frames in a folder of its own"))
    for f in videos:
      found.append((os.path.join(root, f), rel_root + f, False))
    if not dirs and not videos and root != videos_dir and naming.includes(rel_root):
      problems.append((root, "folder with no frames (no image or video files)"))
  sources, names = [], {}
  for path, relpath, is_folder in found:
    if not naming.includes(relpath):
      continue
    try:
      name, subject = naming.apply(relpath)
    except ValueError as e:
      problems.append((path, str(e)))
      continue
    if name in names:
      problems.append((path, f"gives the video name {name!r} that {names[name]} also gives"))
      continue
    names[name] = path
    sources.append(VideoSource(path, relpath.rstrip("/"), name, subject, is_folder))
  return sources, problems


@dataclasses.dataclass(frozen=True)
class FrameConfig:
  """Frame preprocessing.

  Attributes:
    resize: size in pixels. ``resize_mode='square'`` resizes every frame to ``resize x resize``;
      ``'shorter_side'`` scales the shorter side to ``resize`` keeping the aspect ratio.
    resize_mode: ``'square'`` or ``'shorter_side'``.
    crop: centre crop to ``crop x crop`` after resizing; 0 for none (``'square'`` needs none).
    fps: resample to this frame rate (nearest earlier source frame); ``None`` keeps every frame.
    source_fps: the frame rate of frame folders (video files carry their own); needed with ``fps``.
  """
  resize: int = 224
  resize_mode: str = "square"
  crop: int = 0
  fps: Optional[float] = None
  source_fps: Optional[float] = None

  def __post_init__(self):
    if self.resize_mode not in ("square", "shorter_side"):
      raise ValueError(f"resize_mode must be 'square' or 'shorter_side', got {self.resize_mode!r}")
    if self.resize < 8:
      raise ValueError(f"resize must be at least 8 pixels, got {self.resize}")
    if self.crop < 0 or (self.crop and self.crop > self.resize):
      raise ValueError(f"crop must be in [0, resize={self.resize}], got {self.crop}")
    if self.resize_mode == "shorter_side" and not self.crop:
      raise ValueError("resize_mode='shorter_side' needs a crop (frames must be square)")
    for k in ("fps", "source_fps"):
      v = getattr(self, k)
      if v is not None and not v > 0:
        raise ValueError(f"{k} must be positive, got {v}")

  @property
  def size(self) -> int:
    """Side of the square output frames."""
    return self.crop or self.resize


def preprocess_frame(frame: np.ndarray, config: FrameConfig) -> np.ndarray:
  """Resizes (area interpolation when shrinking, bilinear when growing) and centre-crops.

  Args:
    frame: ``uint8 [H, W, 3]``.
    config: the preprocessing.

  Returns:
    ``uint8 [S, S, 3]`` with ``S = config.size``.
  """
  h, w = frame.shape[:2]
  if config.resize_mode == "square":
    nh = nw = config.resize
  else:
    scale = config.resize / min(h, w)
    nh, nw = max(config.resize, round(h * scale)), max(config.resize, round(w * scale))
  interp = cv2.INTER_AREA if nh * nw < h * w else cv2.INTER_LINEAR
  out = cv2.resize(frame, (nw, nh), interpolation=interp) if (nh, nw) != (h, w) else frame
  if config.crop:
    top, left = (nh - config.crop) // 2, (nw - config.crop) // 2
    out = out[top:top + config.crop, left:left + config.crop]
  return np.ascontiguousarray(out)


def resample_indices(source_count: int, source_fps: float, fps: float) -> np.ndarray:
  """Source frame of each output frame: ``floor(k * source_fps / fps)`` for ``k = 0, 1, ...``.

  The reference for the streaming resampler inside :func:`iter_frames` (which does not know the
  frame count in advance).
  """
  ratio = source_fps / fps
  count = math.ceil(source_count / ratio - 1e-9)
  return np.floor(np.arange(count) * ratio + 1e-9).astype(np.int64)


def _resample(frames: Iterator, source_fps: float, fps: float) -> Iterator:
  ratio, k = source_fps / fps, 0
  for i, frame in enumerate(frames):
    while math.floor(k * ratio + 1e-9) == i:
      yield frame
      k += 1


def source_fps_of(source: VideoSource, config: FrameConfig, *,
                  strict: bool = False) -> Optional[float]:
  """A video file's frame rate from its container, a frame folder's from ``config.source_fps``.

  Raises:
    VideoReadError: with ``strict``, a video file that cannot be opened (naming it).
  """
  if source.is_folder:
    return config.source_fps
  cap = cv2.VideoCapture(source.path)
  try:
    opened = cap.isOpened()
    fps = cap.get(cv2.CAP_PROP_FPS) if opened else 0.0
  finally:
    cap.release()
  if strict and not opened:
    raise VideoReadError(f"video {source.path}: cannot be opened (unreadable file or unsupported "
                         "codec)")
  return float(fps) if fps and fps > 0 else config.source_fps


def _numbered(files: list) -> list:
  """``[(path, repeats)]``: each file once, plus once per missing number after it (a filled gap)."""
  numbering = frame_numbering(files)
  if numbering is None:
    return [(p, 1) for p in files]
  num = {p: int(_TRAILING_NUMBER.search(os.path.splitext(os.path.basename(p))[0]).group(1))
         for p in files}
  ordered = sorted(files, key=num.get)
  nxt = [num[q] for q in ordered[1:]] + [num[ordered[-1]] + 1]
  return [(p, n - num[p]) for p, n in zip(ordered, nxt)]


def _raw_folder_frames(folder: str) -> Iterator:
  files = frame_files(folder)
  if not files:
    raise VideoReadError(f"frame folder {folder}: no frame images ({', '.join(IMAGE_EXTENSIONS)})")
  first = None
  for path, repeats in _numbered(files):
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
      raise VideoReadError(f"frame {path}: cannot be decoded as an image")
    if first is None:
      first = img.shape
    elif img.shape != first:
      raise VideoReadError(f"frame {path}: size {img.shape[1]}x{img.shape[0]} differs from the "
                           f"first frame's {first[1]}x{first[0]} in folder {folder}")
    rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    for _ in range(repeats):  # A lost frame is filled with the one before it.
      yield rgb


@dataclasses.dataclass
class Decoding:
  """What decoding a video file found (filled while its frames are read).

  Attributes:
    decoded: frames decoded so far (all of them once the frames are exhausted).
    container_frames: the frame count the container states (``CAP_PROP_FRAME_COUNT``), None when
      it states none (frame folders, some streams).
    finished: whether the reader reached the end of what could be decoded.
  """
  decoded: int = 0
  container_frames: Optional[int] = None
  finished: bool = False

  @property
  def stopped_early(self) -> bool:
    """Decoding ended before the container's frame count (a damaged or truncated file)."""
    return (self.finished and self.container_frames is not None
            and self.decoded < self.container_frames)

  def shortfall(self, path: str) -> str:
    """``video X: decoding stopped after 18 of the container's 33 frames (first missing frame:
    18, 0-based)``."""
    return (f"video {path}: decoding stopped after {self.decoded} of the container's "
            f"{self.container_frames} frames (first missing frame: {self.decoded}, 0-based); "
            "the file is damaged or truncated")

  def record(self) -> dict:
    """What goes to the extraction report."""
    return {"decoded_frames": self.decoded, "container_frames": self.container_frames,
            "first_missing_frame": self.decoded}


def _raw_file_frames(path: str, decoding: Optional[Decoding] = None) -> Iterator:
  if not os.path.isfile(path):
    raise VideoReadError(f"video {path}: no such file")
  decoding = decoding if decoding is not None else Decoding()
  cap = cv2.VideoCapture(path)
  try:
    if not cap.isOpened():
      raise VideoReadError(f"video {path}: cannot be opened (unreadable file or unsupported codec)")
    stated = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    decoding.container_frames = int(stated) if stated and stated > 0 else None
    first, n = None, 0
    while True:
      ok, img = cap.read()
      if not ok:
        decoding.finished = True
        break
      if first is None:
        first = img.shape
      elif img.shape != first:
        raise VideoReadError(f"video {path}: frame {n} has size {img.shape[1]}x{img.shape[0]}, "
                             f"the first frame {first[1]}x{first[0]}")
      n += 1
      decoding.decoded = n
      yield cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if n == 0:
      raise VideoReadError(f"video {path}: no frame could be decoded (unreadable file or "
                           "unsupported codec)")
  finally:
    cap.release()


def iter_frames(source: VideoSource, config: FrameConfig,
                crop: Optional[Callable[[Iterator], Iterator]] = None,
                decoding: Optional[Decoding] = None) -> Iterator:
  """Yields the video's frames as ``uint8 [S, S, 3]`` RGB, preprocessed and resampled.

  ``crop`` (e.g. :class:`pwes_jax.extraction.face.FaceCropper`) maps the decoded frames to
  cropped ones before they are resized. ``decoding`` (a :class:`Decoding`) is filled for a video
  file: frames decoded against the container's count.

  Raises:
    VideoReadError: naming the file, when the video cannot be read (raised lazily, while
      iterating, for problems found part-way such as a frame of another size).
  """
  raw = (_raw_folder_frames(source.path) if source.is_folder
         else _raw_file_frames(source.path, decoding))
  if crop is not None:
    raw = crop(raw)
  frames = (preprocess_frame(f, config) for f in raw)
  if config.fps is None:
    return frames
  src = source_fps_of(source, config)
  if src is None:
    raise VideoReadError(f"video {source.path}: its frame rate is unknown, so it cannot be "
                         f"resampled to {config.fps} fps; pass the source frame rate (source_fps)")
  return _resample(frames, src, config.fps)


def grey(frames: Sequence[np.ndarray]) -> list:
  """``uint8 [S, S, 3]`` RGB frames -> ``uint8 [S, S]`` grey (ITU-R 601 luma, OpenCV's)."""
  return [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
