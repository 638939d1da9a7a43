"""The user's source features and the num_frames CSV: finding, checking and reading them.

Features, per video, in ``features_dir`` (exactly one form per video; the sources are only
read, never modified): ``<video>.npz`` holding ``rgb`` and ``flow``; ``<video>_rgb.npy`` and
``<video>_flow.npy``; a directory ``<video>/`` holding ``rgb.npy`` and ``flow.npy``; or LGSNet's
files ``<video>-rgb.npz`` and ``<video>-flow.npz`` (its pytorch-i3d pipeline: ``feature [1, N,
D]``, ``frame_cnt``, ``video_name``; :func:`read_lgsnet`). Each array is ``[T, feature_dim]``
(finite), the same ``T`` for both streams. With ``rgb_only`` the flow stream is not read (and
need not exist): the flow input is zeros, a choice the dataset records.

What a file says about how it was made (:mod:`pwes_jax.data.feature_settings`: ``num_frames``,
``fps``, snippet stride and window; LGSNet's ``frame_cnt`` and row count) comes back as
:attr:`SourceFeatures.settings`, for the writer to check against the import's settings. A table's video name that
matches no feature file exactly but one ignoring case (CAS(ME)^3 ``spNO.11_J`` and features
``spNO.11_j``) takes the feature file's name, with a warning (:func:`match_name`). Feature files
whose names differ only in case (``spNO.11_j`` and ``spNO.11_J``) are warned about.

``num_frames_csv`` has columns ``video,num_frames``, optional ``subject`` and
``first_frame_number`` (``launch.extract_features`` writes such a ``videos.csv``); what the
frame count and the first frame number do is :mod:`frames <pwes_jax.data.importers.frames>`'
job.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import os
import re
from typing import Optional, Sequence

import numpy as np

from pwes_jax.data import feature_settings
from pwes_jax.data import layout
from pwes_jax.data import tables
from pwes_jax.data.importers.rows import Report

FEATURE_DIM = 1024
# LGSNet's pytorch-i3d pipeline: 8-frame windows (its chunk_size) for CAS(ME)^2 and SAMM-LV.
LGSNET_WINDOW = 8


def feature_sources(features_dir: str, video: str) -> list:
  """The accepted feature forms present for ``video``: list of ``(kind, rgb_path, flow_path)``."""
  found = []
  npz = os.path.join(features_dir, f"{video}.npz")
  if os.path.isfile(npz):
    found.append(("npz", npz, npz))
  rgb, flow = (os.path.join(features_dir, f"{video}_{k}.npy") for k in ("rgb", "flow"))
  if os.path.isfile(rgb) or os.path.isfile(flow):
    found.append(("npy", rgb, flow))
  sub = os.path.join(features_dir, video)
  if os.path.isdir(sub):
    found.append(("dir", os.path.join(sub, "rgb.npy"), os.path.join(sub, "flow.npy")))
  rgb, flow = (os.path.join(features_dir, f"{video}-{k}.npz") for k in ("rgb", "flow"))
  if os.path.isfile(rgb) or os.path.isfile(flow):
    found.append(("lgsnet", rgb, flow))
  return found


def _load_array(path: str, key: Optional[str], video: str, field: str) -> np.ndarray:
  if not os.path.isfile(path):
    raise layout.error(path, video, field, "feature file missing")
  try:
    if key is None:
      return np.load(path, allow_pickle=False)
    with np.load(path, allow_pickle=False) as z:
      if key not in z.files:
        raise layout.error(path, video, field, f"array missing (has {sorted(z.files)})")
      return z[key]
  except layout.DatasetError:
    raise
  except Exception as e:  # noqa: BLE001 - any unreadable file becomes one clear error.
    raise layout.error(path, video, field, f"unreadable feature file ({e})") from None


@dataclasses.dataclass(frozen=True)
class SourceFeatures:
  """One video's source features as read.

  Attributes:
    rgb, flow: float32 ``[T, D]`` (``flow`` zeros with ``rgb_only``).
    settings: what the files say about how they were made (:mod:`feature_settings` keys).
    notes: what was done to them on reading (LGSNet's rows padded to the layout's count), for
      the import report.
    missing_flow: with ``defer_missing_flow``, the error of a missing flow stream (``flow`` is
      then None), for the caller to raise with what else it finds.
  """
  rgb: np.ndarray
  flow: Optional[np.ndarray]
  settings: dict
  notes: tuple = ()
  missing_flow: Optional[str] = None


def lgsnet_stride(frame_cnt: int, rows: int, window: int) -> Optional[int]:
  """The stride ``S`` of LGSNet's windows: ``rows == (frame_cnt - window) // S + 1`` (its
  pytorch-i3d ``extract_features.py``); None when no ``S`` in ``1 .. window`` fits."""
  fits = [s for s in range(1, int(window) + 1)
          if int(frame_cnt) >= int(window) and (int(frame_cnt) - int(window)) // s + 1 == rows]
  return fits[0] if len(fits) == 1 else None


def read_lgsnet(path: str, video: str, field: str, window: int) -> tuple:
  """One LGSNet feature file -> ``(array [N, D], settings)``.

  LGSNet saves ``feature [1, N, D]`` (one crop), ``frame_cnt`` (the video's frames after its
  last frame is dropped, so ``num_frames = frame_cnt + 1``) and ``video_name``; row ``i`` is the
  window of frames ``i * S .. i * S + window - 1``. The stride ``S`` is read from ``frame_cnt``
  and ``N`` (:func:`lgsnet_stride`); the window, which the files cannot tell from a neighbour,
  is given (LGSNet's is :data:`LGSNET_WINDOW`).

  Raises:
    layout.DatasetError: naming the file, when it is not such a file or no stride fits.
  """
  if not os.path.isfile(path):
    raise layout.error(path, video, field, "feature file missing")
  try:
    with np.load(path, allow_pickle=False) as z:
      if not {"feature", "frame_cnt"} <= set(z.files):
        raise layout.error(path, video, field, f"not an LGSNet feature file (arrays "
                           f"{sorted(z.files)}; expected feature, frame_cnt, video_name)")
      a, frame_cnt = z["feature"], int(z["frame_cnt"])
  except layout.DatasetError:
    raise
  except Exception as e:  # noqa: BLE001 - any unreadable file becomes one clear error.
    raise layout.error(path, video, field, f"unreadable feature file ({e})") from None
  if a.ndim != 3 or a.shape[0] != 1:
    raise layout.error(path, video, field, f"feature has shape {a.shape}, expected [1, N, D] "
                       "(one crop; LGSNet's sample_mode 'resize' or 'center_crop')")
  a = a[0]
  stride = lgsnet_stride(frame_cnt, a.shape[0], window)
  if stride is None:
    raise layout.error(path, video, field, f"{a.shape[0]} windows of {window} frames over "
                       f"frame_cnt {frame_cnt} frames fit no single stride in 1..{window}: "
                       "pass the windows' length with --snippet_window")
  return a, {"num_frames": frame_cnt + 1, "snippet_stride": stride, "snippet_window": window}


def load_source_features(features_dir: str, video: str, feature_dim: int = FEATURE_DIM):
  """Reads and checks one video's source features; returns float32 ``(rgb, flow)`` ``[T, D]``."""
  got = read_source_features(features_dir, video, feature_dim)
  return got.rgb, got.flow


def read_source_features(features_dir: str, video: str, feature_dim: int = FEATURE_DIM, *,
                         rgb_only: bool = False, window: Optional[int] = None,
                         defer_missing_flow: bool = False) -> SourceFeatures:
  """Reads and checks one video's source features (any accepted form).

  Args:
    features_dir: the features folder.
    video: the video's name.
    feature_dim: the width ``D`` of each stream.
    rgb_only: read the RGB stream only; the flow is zeros.
    window: the windows' length, for LGSNet files (default :data:`LGSNET_WINDOW`).
    defer_missing_flow: a missing flow stream is returned as
      :attr:`SourceFeatures.missing_flow` instead of raised.

  Returns:
    A :class:`SourceFeatures`. LGSNet's ``N`` rows are padded with the last row to the
    layout's ``(num_frames - 1) // S`` (the windows LGSNet leaves out at the end, which the
    extractor edge-pads), with a note.

  Raises:
    layout.DatasetError: naming the file, video and field (a missing flow stream says to pass
      ``--rgb_only`` for an RGB-only import).
  """
  found = feature_sources(features_dir, video)
  if not found:
    raise layout.error(features_dir, video, None, f"no features: expected {video}.npz, "
                       f"{video}_rgb.npy + {video}_flow.npy, {video}/rgb.npy + flow.npy, or "
                       f"LGSNet's {video}-rgb.npz + {video}-flow.npz")
  if len(found) > 1:
    raise layout.error(features_dir, video, None, f"ambiguous features: several forms present "
                       f"({[k for k, _, _ in found]}); keep one")
  kind, rgb_path, flow_path = found[0]
  out, settings, notes, missing = [], {}, [], None
  for field, path in (("rgb", rgb_path), ("flow", flow_path)):
    if field == "flow" and rgb_only:
      continue
    if field == "flow" and not (os.path.isfile(path) if kind != "npz" else _has(path, "flow")):
      what = "array missing" if kind == "npz" else "feature file missing"
      missing = str(layout.error(path, video, "flow", f"{what}: no flow stream; pass --rgb_only "
                                 "to import the RGB stream alone (the model's flow input is "
                                 "then zeros)"))
      if not defer_missing_flow:
        raise layout.DatasetError(missing)
      break
    if kind == "lgsnet":
      a, settings = read_lgsnet(path, video, field, window or LGSNET_WINDOW)
    else:
      a = _load_array(path, field if kind == "npz" else None, video, field)
      if kind == "npz":
        settings = _npz_settings(path)
    if a.ndim != 2:
      raise layout.error(path, video, field, f"expected 2-D [T, D], got shape {a.shape}")
    if a.shape[1] != feature_dim:
      raise layout.error(path, video, field, f"feature width {a.shape[1]} != {feature_dim}")
    if a.shape[0] < 1:
      raise layout.error(path, video, field, "no snippets (T = 0)")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
      raise layout.error(path, video, field, f"dtype {a.dtype} is not numeric")
    a = a.astype(np.float32)
    bad = ~np.isfinite(a)
    if bad.any():
      raise layout.error(path, video, field, f"{int(bad.sum())} NaN/Inf values (first at "
                         f"snippet {int(np.argwhere(bad)[0][0])})")
    out.append(a)
  if missing is not None:
    return SourceFeatures(out[0], None, settings, (), missing)
  if rgb_only:
    out.append(np.zeros_like(out[0]))
  if out[0].shape[0] != out[1].shape[0]:
    raise layout.error(flow_path, video, "flow", f"{out[1].shape[0]} snippets but rgb has "
                       f"{out[0].shape[0]}")
  if kind == "lgsnet":
    target = (settings["num_frames"] - 1) // settings["snippet_stride"]
    if target > out[0].shape[0]:
      notes.append(f"{out[0].shape[0]} LGSNet windows padded with the last one to {target} "
                   f"snippets (the layout's (num_frames - 1) // {settings['snippet_stride']})")
      out = [np.concatenate([a, np.repeat(a[-1:], target - a.shape[0], 0)]) for a in out]
  return SourceFeatures(out[0], out[1], settings, tuple(notes))


def _has(path: str, key: str) -> bool:
  """Whether the ``.npz`` at ``path`` holds ``key`` (True when unreadable: the read says why)."""
  try:
    with np.load(path, allow_pickle=False) as z:
      return key in z.files
  except Exception:  # noqa: BLE001 - reported by the read itself.
    return True


def _npz_settings(path: str) -> dict:
  """The settings a ``.npz`` feature file records (:func:`feature_settings.read`)."""
  with np.load(path, allow_pickle=False) as z:
    return feature_settings.read({k: z[k] for k in z.files if k in feature_settings.KEYS})


@dataclasses.dataclass(frozen=True)
class VideoRecord:
  """A line of ``num_frames_csv``: frame count, and optionally subject and first frame number."""
  num_frames: int
  subject: Optional[str] = None
  first_frame_number: Optional[int] = None
  line: int = 0


def read_video_records(path: str) -> dict:
  """Reads ``video,num_frames[,subject][,first_frame_number]`` into ``{video: VideoRecord}``.

  ``launch.extract_features``' ``videos.csv`` is such a file (``first_frame_number`` empty for
  video files and for frame folders without numbers).
  """
  if not os.path.isfile(path):
    raise layout.error(path, None, None, "num_frames CSV missing")
  with open(path, newline="", encoding="utf-8-sig") as f:
    rows = list(csv.reader(f))
  if not rows:
    raise layout.error(path, None, None, "empty file (expected header 'video,num_frames')")
  header = [h.strip() for h in rows[0]]
  for h in ("video", "num_frames"):
    if h not in header:
      raise layout.error(path, None, h, f"column missing from header {header}")
  col = {h: header.index(h) for h in ("video", "num_frames", "subject", "first_frame_number")
         if h in header}
  out = {}
  for line_no, row in enumerate(rows[1:], start=2):
    if not any(c.strip() for c in row):
      continue
    row = [c.strip() for c in row] + [""] * (len(header) - len(row))
    video, value = row[col["video"]], row[col["num_frames"]]
    if not video:
      raise layout.error(path, None, "video", f"line {line_no}: empty video name")
    if video in out:
      raise layout.error(path, video, "video", f"line {line_no}: listed twice")
    n = tables.as_int(value)
    if n is None or n < 2:
      raise layout.error(path, video, "num_frames", f"line {line_no}: not an integer >= 2: "
                         f"{value!r}")
    first = row[col["first_frame_number"]] if "first_frame_number" in col else ""
    first_n = tables.as_int(first) if first else None
    if first and (first_n is None or first_n < 0):
      raise layout.error(path, video, "first_frame_number", f"line {line_no}: not an integer "
                         f">= 0: {first!r}")
    subject = row[col["subject"]] if "subject" in col else ""
    out[video] = VideoRecord(n, subject or None, first_n, line_no)
  return out


def read_num_frames_csv(path: str) -> dict:
  """Reads a ``video,num_frames`` CSV into ``{video: num_frames}``."""
  return {v: r.num_frames for v, r in read_video_records(path).items()}


def feature_names(features_dir: str) -> list:
  """Video names with features in ``features_dir`` (any accepted form), sorted."""
  names = set()
  for entry in os.listdir(features_dir):
    path = os.path.join(features_dir, entry)
    if os.path.isdir(path):
      if os.path.isfile(os.path.join(path, "rgb.npy")):
        names.add(entry)
    elif entry.endswith("-rgb.npz") or entry.endswith("-flow.npz"):
      names.add(entry.rsplit("-", 1)[0])
    elif entry.endswith(".npz"):
      names.add(entry[:-4])
    elif entry.endswith("_rgb.npy") or entry.endswith("_flow.npy"):
      names.add(entry.rsplit("_", 1)[0])
  return sorted(names)


def match_name(name: str, names, what: str) -> tuple:
  """``(match, renamed)``: ``name`` itself, else the one entry of ``names`` equal ignoring case.

  Raises:
    layout.DatasetError: several entries equal ``name`` ignoring case.
  """
  if name in names:
    return name, False
  folded = [n for n in names if n.casefold() == name.casefold()]
  if len(folded) > 1:
    raise layout.DatasetError(f"video {name!r}: several {what} match it ignoring case "
                              f"({sorted(folded)}); rename them apart")
  return (folded[0], True) if folded else (None, False)


_LGSNET_CASME2 = re.compile(r"(\d+)_(\d{4})[A-Za-z]+")


def lgsnet_casme2_name(name: str) -> Optional[str]:
  """The importer's default CAS(ME)^2 name (``s30_0101``) of LGSNet's (``30_0101disgustingteeth``:
  subject number, video code, the clip's words), or None for another name."""
  m = _LGSNET_CASME2.fullmatch(name)
  return f"s{m.group(1)}_{m.group(2)}" if m else None


def warn_case_clashes(available: Sequence[str], features_dir: str, report: Report) -> None:
  """Warns about feature files whose video names differ only in case (``spNO.11_j``/``_J``)."""
  groups = collections.defaultdict(list)
  for v in available:
    groups[v.casefold()].append(v)
  for names in groups.values():
    if len(names) > 1:
      names = sorted(names)
      report.note("case_clash", None, names[0], "video", f"features exist for "
                  f"{' and '.join(repr(n) for n in names)} in {features_dir}, names that differ "
                  "only in case: each is imported as its own video and a table row goes to the "
                  "one spelled exactly as the table does; check they are not one video twice",
                  count=len(names))
