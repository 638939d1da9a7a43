"""Face cropping before flow and I3D: one fixed square box per video, moved only when needed.

Public spotting pipelines cut the face region out of each long video before computing flow and
features, with a box that stays fixed so that the flow shows the face's motion, not the
box's. Here (``FaceConfig.mode='detect'``):

1. The first ``detect_frames`` frames are searched with OpenCV's Haar frontal-face cascade
   (``haarcascade_frontalface_default.xml``, shipped in the OpenCV wheel under
   ``cv2.data.haarcascades``; Viola and Jones 2001); the largest face of each frame counts, and
   the median of their centres and sides is the face.
2. The box is the square of side ``side * (1 + 2 * margin)`` around the face's centre, shifted
   to lie inside the frame (and no larger than the frame's shorter side).
3. Every frame is checked with the cascade inside the box grown by half on each side (a small
   region at a known scale, cheap). While the face found there lies inside the box, the box
   stays. When it does not (the face is leaving the box), or no face is found there, the whole
   frame is searched: a face outside the box gives a new box from that frame on (a
   *re-detection*); no face anywhere keeps the box (a blink, a hand, a turned head) and is
   counted.
4. Each frame is cut to its box; the caller resizes the square crops (``frames.resize``).

Frames without a face are reported, never cropped silently: their 0-based ranges (in the
order read, i.e. the source video's frames) go to the report (``frames_without_face_ranges``)
and the extractor warns about them (:func:`no_face_text`). A video whose first frames show no
face (a title, an empty chair) is searched further until a face appears (at most
:data:`LEAD_BYTES` of frames are held meanwhile); those leading frames are cut to the first
face's box and reported. A whole-frame search away from the box that finds a face less than half
the tracked face's size takes it for a false detection (a pattern in the background), not a
new box. A video where no face is found in its first frames (:data:`LEAD_BYTES`) or at all
fails with :class:`NoFaceError` naming the file; the other videos of a dataset go on. The boxes
(``x``, ``y``, ``size`` in source pixels, and the 0-based index of the first frame read that
uses it) go to ``extraction_report.json``; the settings go to ``dataset.json``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterator, Optional

import cv2
import numpy as np

from pwes_jax.extraction import video as video_lib

CASCADE = "haarcascade_frontalface_default.xml"
MODES = ("none", "detect")
_SEARCH_SIDE = 480  # whole-frame searches run on the frame shrunk to this shorter side
_CHECK_FACE = 48  # per-frame checks run with the expected face about this many pixels wide
# Frames held while the first face is searched for (a video that opens without a face).
LEAD_BYTES = 512 * 2 ** 20
_UNSEARCHED = object()  # a frame whose whole-frame search has not been run yet


class NoFaceError(video_lib.VideoReadError):
  """No face was found where one is needed; the message names the video file."""


@dataclasses.dataclass(frozen=True)
class FaceConfig:
  """Face cropping settings (recorded in ``dataset.json``).

  Attributes:
    mode: ``'none'`` (frames as they are) or ``'detect'`` (crop to the face box).
    margin: added on each side of the face, as a fraction of the face's side.
    detect_frames: the first frames searched for the face.
    min_face: the smallest face searched, as a fraction of the frame's shorter side.
    scale_factor: the cascade's scale step (``detectMultiScale``'s ``scaleFactor``).
    min_neighbors: detections that must overlap to count (``minNeighbors``).
  """
  mode: str = "none"
  margin: float = 0.2
  detect_frames: int = 5
  min_face: float = 0.1
  scale_factor: float = 1.1
  min_neighbors: int = 5

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"face mode must be one of {MODES}, got {self.mode!r}")
    if not 0 <= self.margin <= 2:
      raise ValueError(f"face margin must be in [0, 2], got {self.margin}")
    if self.detect_frames < 1:
      raise ValueError(f"face detect_frames must be >= 1, got {self.detect_frames}")
    if not 0 < self.min_face < 1:
      raise ValueError(f"face min_face must be in (0, 1), got {self.min_face}")
    if not self.scale_factor > 1:
      raise ValueError(f"face scale_factor must be > 1, got {self.scale_factor}")
    if self.min_neighbors < 1:
      raise ValueError(f"face min_neighbors must be >= 1, got {self.min_neighbors}")

  def recorded(self) -> dict:
    """The settings as written to ``dataset.json`` (with the detector, when detecting)."""
    out = dataclasses.asdict(self)
    if self.mode == "detect":
      out["detector"] = f"OpenCV {cv2.__version__} Haar cascade {CASCADE}"
    return out


def _cascade() -> cv2.CascadeClassifier:
  path = os.path.join(cv2.data.haarcascades, CASCADE)
  cascade = cv2.CascadeClassifier(path)
  if cascade.empty():
    raise ImportError(f"OpenCV's face cascade {path} cannot be loaded; reinstall "
                      "opencv-contrib-python-headless")
  return cascade


def _grey(frame: np.ndarray) -> np.ndarray:
  return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def _inside(face, box) -> bool:
  """Whether the face ``(x, y, w, h)`` lies inside the square ``(x, y, size)``."""
  fx, fy, fw, fh = face
  bx, by, bs = box
  return fx >= bx and fy >= by and fx + fw <= bx + bs and fy + fh <= by + bs


class FaceCropper:
  """Crops the frames of one video to its face box (module docstring), recording the boxes.

  Attributes:
    boxes: ``[{"frame", "x", "y", "size"}]``, one per box, ``frame`` the first frame (0-based,
      in the order read) it applies to.
    redetections: boxes after the first.
    frames_without_face: frames where no face was found anywhere (cut to the last box, or before
      the first face to the first box; listed by :meth:`report`).
    searches: whole-frame searches (the first frames', and when the per-frame check failed).
  """

  def __init__(self, config: FaceConfig, path: str):
    self.config, self.path = config, path
    self._cascade = _cascade()
    self.boxes: list = []
    self.redetections = 0
    self.frames_without_face = 0
    self.searches = 0
    self._frames = 0
    self._no_face = []  # [[first, last], ...] 0-based frames without a face

  def _detect(self, grey: np.ndarray, scale: float, min_side: float,
              max_side: Optional[float] = None) -> list:
    """Faces ``(x, y, w, h)`` in ``grey`` (coordinates of ``grey``) searched at ``scale``."""
    small = grey if scale == 1 else cv2.resize(
        grey, (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale))),
        interpolation=cv2.INTER_AREA)
    lo = max(int(min_side * scale), 20)
    kwargs = {"minSize": (lo, lo)}
    if max_side is not None:
      hi = max(int(max_side * scale), lo + 1)
      kwargs["maxSize"] = (hi, hi)
    found = self._cascade.detectMultiScale(small, scaleFactor=self.config.scale_factor,
                                           minNeighbors=self.config.min_neighbors, **kwargs)
    return [tuple(v / scale for v in f) for f in found]

  def _search(self, grey: np.ndarray) -> Optional[tuple]:
    """The largest face of the whole frame, or None."""
    self.searches += 1
    h, w = grey.shape
    scale = min(1.0, _SEARCH_SIDE / min(h, w))
    faces = self._detect(grey, scale, self.config.min_face * min(h, w))
    return max(faces, key=lambda f: f[2] * f[3]) if faces else None

  def _check(self, grey: np.ndarray, box: tuple, face_side: float) -> Optional[tuple]:
    """The face nearest the box's centre, searched in the box grown by half on each side."""
    bx, by, bs = box
    h, w = grey.shape
    x0, y0 = max(0, int(bx - bs / 2)), max(0, int(by - bs / 2))
    x1, y1 = min(w, int(bx + 1.5 * bs)), min(h, int(by + 1.5 * bs))
    scale = min(1.0, _CHECK_FACE / face_side)
    faces = self._detect(grey[y0:y1, x0:x1], scale, 0.6 * face_side, 1.6 * face_side)
    if not faces:
      return None
    cx, cy = bx + bs / 2, by + bs / 2
    faces = [(f[0] + x0, f[1] + y0, f[2], f[3]) for f in faces]
    return min(faces, key=lambda f: (f[0] + f[2] / 2 - cx) ** 2 + (f[1] + f[3] / 2 - cy) ** 2)

  def box_for(self, face: tuple, shape: tuple) -> tuple:
    """The square ``(x, y, size)`` around ``face = (x, y, w, h)`` in a frame of ``shape``."""
    h, w = shape[:2]
    side = max(face[2], face[3])
    size = int(round(min(side * (1 + 2 * self.config.margin), h, w)))
    cx, cy = face[0] + face[2] / 2, face[1] + face[3] / 2
    x = int(round(min(max(cx - size / 2, 0), w - size)))
    y = int(round(min(max(cy - size / 2, 0), h - size)))
    return x, y, size

  def _set_box(self, box: tuple) -> None:
    self.boxes.append({"frame": self._frames, "x": box[0], "y": box[1], "size": box[2]})

  def __call__(self, frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """Yields each frame ``uint8 [H, W, 3]`` cut to its box, ``uint8 [size, size, 3]``.

    Raises:
      NoFaceError: no face in the frames searched first (:meth:`_lead`), naming the video file.
    """
    head, hits, faces = self._lead(frames)
    if not head:
      return
    if not faces:
      held = sum(f.nbytes for f in head)
      where = (f"the first {len(head)} frame(s)" if held >= LEAD_BYTES else
               f"any of its {len(head)} frame(s)")
      raise NoFaceError(
          f"video {self.path}: no face found in {where} (OpenCV Haar "
          f"cascade {CASCADE}, faces of at least {self.config.min_face:g} of the frame's "
          "shorter side); use face.mode=none for this video, or a lower face.min_face")
    med = np.median(np.array([(f[0] + f[2] / 2, f[1] + f[3] / 2, max(f[2], f[3]))
                              for f in faces]), axis=0)
    face = (med[0] - med[2] / 2, med[1] - med[2] / 2, med[2], med[2])
    box = self.box_for(face, head[0].shape)
    self._set_box(box)
    face_side = med[2]
    searched = iter(hits)  # the head's whole-frame searches are not run twice
    for frame in _chain(head, frames):
      box, face_side = self._follow(frame, box, face_side, next(searched, _UNSEARCHED))
      x, y, s = box
      self._frames += 1
      yield np.ascontiguousarray(frame[y:y + s, x:x + s])

  def _lead(self, frames: Iterator[np.ndarray]) -> tuple:
    """``(head, hits, faces)``: the frames read to find the face, each one's whole-frame search,
    and the faces giving its box.

    The first ``detect_frames`` frames, when any of them shows a face; otherwise frames are read
    (at most :data:`LEAD_BYTES` of them) until ``detect_frames`` consecutive frames of which
    more than half show a face (an isolated detection in a face-less opening is not taken).
    """
    n = self.config.detect_frames
    head, hits, held = [], [], 0
    for frame in frames:
      head.append(frame)
      held += frame.nbytes
      hits.append(self._search(_grey(frame)))
      if len(head) == n and any(f is not None for f in hits):
        break
      if len(head) > n and 2 * sum(f is not None for f in hits[-n:]) > n:
        return head, hits, [f for f in hits[-n:] if f is not None]
      if held >= LEAD_BYTES:
        break
    return head, hits, [f for f in hits if f is not None]

  def _follow(self, frame: np.ndarray, box: tuple, face_side: float,
              searched=_UNSEARCHED) -> tuple:
    """``(box, face side)`` for this frame: kept while the face stays inside, else moved.

    ``searched`` is the frame's whole-frame search when it was already run (the first frames).
    """
    grey = _grey(frame)
    face = self._check(grey, box, face_side)
    if face is not None and _inside(face, box):
      return box, face_side
    face = self._search(grey) if searched is _UNSEARCHED else searched
    if face is not None and not _inside(face, box) and max(face[2], face[3]) < 0.5 * face_side:
      face = None  # far smaller than the face followed, elsewhere: a false detection
    if face is None:
      self.frames_without_face += 1
      if self._no_face and self._no_face[-1][1] == self._frames - 1:
        self._no_face[-1][1] = self._frames
      else:
        self._no_face.append([self._frames, self._frames])
      return box, face_side
    if _inside(face, box):  # Missed by the check (its size changed): the box stays.
      return box, max(face[2], face[3])
    box = self.box_for(face, frame.shape)
    self.redetections += 1
    self._set_box(box)
    return box, max(face[2], face[3])

  def report(self) -> dict:
    """What goes to ``extraction_report.json`` for this video."""
    return {"boxes": self.boxes, "redetections": self.redetections,
            "frames_without_face": self.frames_without_face,
            "frames_without_face_ranges": [list(r) for r in self._no_face],
            "frames": self._frames, "whole_frame_searches": self.searches}


def ranges_text(ranges) -> str:
  """``[[3, 5], [9, 9]]`` -> ``"3-5, 9"``."""
  return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def no_face_text(report: dict) -> str:
  """The warning for a video with frames without a face (:meth:`FaceCropper.report`)."""
  ranges = report.get("frames_without_face_ranges") or []
  shown = ranges_text(ranges[:8]) + (", ..." if len(ranges) > 8 else "")
  return (f"no face found in {report['frames_without_face']} of {report['frames']} frames "
          f"(0-based: {shown}); they were cut to the nearest face box (the last one, or before "
          "the first face the first one), so their features show no face")


def _chain(head: list, rest: Iterator) -> Iterator:
  yield from head
  yield from rest
