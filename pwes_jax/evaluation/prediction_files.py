r"""Prediction files in the field's formats: our JSON, MEGC CSV, the PWES authors' text files.

* ``json``: ``{"videos": {"<video>": [{"onset": int, "offset": int, "score": float}]}}``,
  0-based inclusive frames (:func:`load_predictions`).
* ``csv`` (MEGC submissions): a header naming the columns ``vid`` (or ``video``), ``onset``,
  ``offset`` and optionally ``type``, ``subject``, ``score`` in any order, or no header and the
  columns ``vid,onset,offset[,type[,subject]]`` in that order. ``type`` (``me``/``mae``,
  also ``micro``/``macro``, any case) is the submitter's label: it is validated and reported
  (:func:`submitted_type_report`) but the evaluator classes a prediction by its duration. A
  row without ``score`` scores 1 (every row counts at any threshold below 1).
  A row with more cells than the header (or than the first row, without a header) is an error
  when an extra cell holds anything (the columns can no longer be trusted); empty extra cells
  (trailing commas) are ignored, with a warning and a count.
* ``lab_txt``: a folder of the authors' lab's per-subject ``*.txt`` files (or one such file),
  one prediction a line: ``video<TAB>start<TAB>end<TAB>score`` with float, 1-based frames.

Frames of CSV and text files are converted with ``frame_rounding`` when a value is not a whole
number (``half_up``, also spelt ``round``: nearest frame, halves up; ``floor``: down, which is
what the authors' scorer does with ``astype(float).astype(np.int64)`` for the non-negative
frames it reads), then ``frame_base`` (the file's first frame number, ``>= 0``) is subtracted.
Defaults: :data:`DEFAULT_FRAME_BASE` (0 CSV, 1 text) and :data:`DEFAULT_FRAME_ROUNDING`
(``half_up`` CSV, ``floor`` text); the names are those of the dataset importer
(:mod:`pwes_jax.data.conventions`). An onset before the first frame (the STRS repository's own
``data/pred.csv`` has ``-3``) is clipped to the first frame, with a warning and a count
(``clipped_onsets``); an offset before it is an error. Files must be UTF-8 text. Errors are
:class:`layout.DatasetError` naming the file, the line, the video and the field.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import numbers
import os
from typing import Mapping, NamedTuple, Optional

from absl import logging
import numpy as np

from pwes_jax.evaluation import protocols
from pwes_jax.workdir import fileio
from pwes_jax.data import duration
from pwes_jax.data import layout

FORMATS = ("auto", "json", "csv", "lab_txt")
ROUNDINGS = ("half_up", "floor")  # as pwes_jax.data.conventions.FRAME_ROUNDINGS
ROUNDING_ALIASES = {"round": "half_up"}
DEFAULT_FRAME_BASE = {"json": 0, "csv": 0, "lab_txt": 1}
DEFAULT_FRAME_ROUNDING = {"csv": "half_up", "lab_txt": "floor"}
CSV_COLUMNS = ("vid", "onset", "offset", "type", "subject", "score")  # what write_csv writes
_ALIASES = {"vid": "vid", "video": "vid", "onset": "onset", "offset": "offset", "type": "type",
            "subject": "subject", "score": "score"}
_TYPES = {"me": "ME", "micro": "ME", "micro-expression": "ME", "mae": "MaE", "macro": "MaE",
          "macro-expression": "MaE"}


class VideoPredictions(NamedTuple):
  """One video's validated predictions: ``[N]`` int64 onset/offset, ``[N]`` float64 score."""
  onset: np.ndarray
  offset: np.ndarray
  score: np.ndarray



# ------------------------------------------------------------------------------------------------
# JSON predictions: reading and validation.


def _no_duplicate_keys(path):
  def hook(pairs):
    seen = set()
    for k, _ in pairs:
      if k in seen:
        raise layout.error(path, k, None, "duplicate JSON key (a video or field listed twice)")
      seen.add(k)
    return dict(pairs)
  return hook


def _json_frame(source, video, field, i, value) -> int:
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
    raise layout.error(source, video, field, f"prediction {i}: not a number: {value!r}")
  if not math.isfinite(value) or value != int(value):
    raise layout.error(source, video, field, f"prediction {i}: not an integer frame: {value!r}")
  if value < 0:
    raise layout.error(source, video, field, f"prediction {i}: negative frame {int(value)}")
  return int(value)


def _parse_video_fast(entries) -> Optional[VideoPredictions]:
  """Plain ``int``/``float`` values with every check passing, in bulk; else ``None``."""
  try:
    onsets = [d["onset"] for d in entries]
    offsets = [d["offset"] for d in entries]
    scores = [d["score"] for d in entries]
  except (KeyError, TypeError, IndexError):
    return None
  if not (set(map(type, onsets)) | set(map(type, offsets))) <= {int}:
    return None
  if not set(map(type, scores)) <= {int, float}:
    return None
  on = np.asarray(onsets, np.int64)
  off = np.asarray(offsets, np.int64)
  sc = np.asarray(scores, np.float64)
  if (on < 0).any() or (on > off).any() or not np.isfinite(sc).all():
    return None
  return VideoPredictions(on, off, sc)


def _parse_video(source: str, video: str, entries) -> VideoPredictions:
  if isinstance(entries, VideoPredictions):
    entries = [dict(onset=a, offset=b, score=c) for a, b, c in
               zip(entries.onset.tolist(), entries.offset.tolist(), entries.score.tolist())]
  if not isinstance(entries, (list, tuple)):
    raise layout.error(source, video, None,
                       f"expected a list of predictions, got {type(entries).__name__}")
  fast = _parse_video_fast(entries)
  if fast is not None:
    return fast
  # Slow path: other numeric types, or an error to locate and name.
  onsets, offsets, scores = [], [], []
  for i, d in enumerate(entries):
    if not isinstance(d, Mapping):
      raise layout.error(source, video, None, f"prediction {i}: expected an object with "
                         f"onset, offset, score, got {d!r}")
    for key in ("onset", "offset", "score"):
      if key not in d:
        raise layout.error(source, video, key, f"prediction {i}: missing")
    onset = _json_frame(source, video, "onset", i, d["onset"])
    offset = _json_frame(source, video, "offset", i, d["offset"])
    score = d["score"]
    if isinstance(score, (bool, np.bool_)) or not isinstance(score, numbers.Real):
      raise layout.error(source, video, "score", f"prediction {i}: not a number: {score!r}")
    if not math.isfinite(score):
      raise layout.error(source, video, "score", f"prediction {i}: not finite: {score!r}")
    if onset > offset:
      raise layout.error(source, video, "offset",
                         f"prediction {i}: onset {onset} > offset {offset}")
    onsets.append(onset)
    offsets.append(offset)
    scores.append(float(score))
  return VideoPredictions(np.asarray(onsets, np.int64), np.asarray(offsets, np.int64),
                          np.asarray(scores, np.float64))


def parse_predictions(predictions: Mapping, source: str = "<predictions>") -> dict:
  """Validates ``{video: [{onset, offset, score}, ...]}``; returns ``{video: VideoPredictions}``.

  Raises:
    layout.DatasetError: naming ``source``, the video and the field of the first bad entry.
  """
  if not isinstance(predictions, Mapping):
    raise layout.error(source, None, "videos", f"expected a mapping video -> predictions, "
                       f"got {type(predictions).__name__}")
  out = {}
  for video, entries in predictions.items():
    if not isinstance(video, str):
      raise layout.error(source, str(video), "videos", "video names must be strings")
    out[video] = _parse_video(source, video, entries)
  return out


def read_text(path: str, advice: str = "; save the file as UTF-8)") -> str:
  """A file's text as UTF-8 (a leading BOM dropped).

  Raises:
    layout.DatasetError: naming the file and the line of the first byte that is not UTF-8,
      followed by ``advice``.
  """
  with open(path, "rb") as f:
    data = f.read()
  try:
    return data.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    line = data.count(b"\n", 0, e.start) + 1
    raise layout.error(path, None, None, f"line {line}: not UTF-8 text (byte "
                       f"0x{data[e.start]:02x}{advice}") from None


def load_predictions(path: str) -> dict:
  """Reads and validates a predictions file ``{"videos": {"<video>": [...]}}`` (UTF-8 JSON)."""
  if not os.path.isfile(path):
    raise layout.error(path, None, None, "predictions file missing")
  text = read_text(path, advice="); JSON files are UTF-8")
  if not text.strip():
    raise layout.error(path, None, None, 'empty file (expected {"videos": {...}})')
  try:
    doc = json.loads(text, object_pairs_hook=_no_duplicate_keys(path))
  except json.JSONDecodeError as e:
    raise layout.error(path, None, None, f"not valid JSON ({e})") from None
  if not isinstance(doc, dict) or "videos" not in doc:
    raise layout.error(path, None, "videos", 'missing (expected {"videos": {...}})')
  if not isinstance(doc["videos"], dict):
    raise layout.error(path, None, "videos", "must be an object mapping video -> predictions")
  if not doc["videos"]:
    raise layout.error(path, None, "videos", "holds no videos")
  return parse_predictions(doc["videos"], path)


@dataclasses.dataclass(frozen=True)
class PredictionFile:
  """Predictions read from one file or folder.

  ``videos`` is ``{video: VideoPredictions}`` (0-based inclusive frames);
  ``labels`` ``{video: (ME/MaE, ...)}`` the submitter's types when the file has them;
  ``subjects`` ``{video: subject}`` when the file names subjects; ``lines`` ``{video:
  ((file, line), ...)}`` where each prediction was read (CSV and text files);
  ``clipped_onsets`` how many onsets before the first frame were clipped to it.
  """
  path: str
  format: str
  videos: Mapping
  labels: Optional[Mapping] = None
  subjects: Optional[Mapping] = None
  lines: Optional[Mapping] = None
  clipped_onsets: int = 0
  frame_base: int = 0


def detect_format(path: str) -> str:
  """``lab_txt`` for a folder (``json`` if it holds a run's ``predictions.json`` and no
  ``.txt``) or a ``*.txt`` file, ``csv`` for ``*.csv``, else ``json``."""
  if os.path.isdir(path):
    names = os.listdir(path)
    if "predictions.json" in names and not any(n.endswith(".txt") for n in names):
      return "json"
    return "lab_txt"
  lower = path.lower()
  return "csv" if lower.endswith(".csv") else "lab_txt" if lower.endswith(".txt") else "json"


def rounding_name(frame_rounding: str) -> str:
  """The canonical name of a rounding rule (``round`` is ``half_up``)."""
  name = ROUNDING_ALIASES.get(frame_rounding, frame_rounding)
  if name not in ROUNDINGS:
    raise ValueError(f"frame_rounding must be one of {ROUNDINGS} (or 'round' = 'half_up'), "
                     f"got {frame_rounding!r}")
  return name


def load(path: str, *, fmt: str = "auto", frame_base: Optional[int] = None,
         frame_rounding: Optional[str] = None) -> PredictionFile:
  """Reads and validates predictions in any supported format.

  Args:
    path: a JSON or CSV file, a folder of text files, or a run directory (its
      ``predictions.json``).
    fmt: the format, one of :data:`FORMATS`.
    frame_base: the file's first frame number, ``>= 0`` (default :data:`DEFAULT_FRAME_BASE`).
    frame_rounding: ``half_up`` (or ``round``) or ``floor`` for frames that are not whole
      numbers (default :data:`DEFAULT_FRAME_ROUNDING`).

  Raises:
    layout.DatasetError: naming the file, line, video and field of the first bad entry.
    ValueError: a bad setting.
  """
  if fmt not in FORMATS:
    raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
  if frame_rounding is not None:
    frame_rounding = rounding_name(frame_rounding)
  if frame_base is not None and (int(frame_base) != frame_base or frame_base < 0):
    raise ValueError(f"frame_base must be a whole number >= 0 (the file's first frame "
                     f"number), got {frame_base!r}")
  if not os.path.exists(path):
    raise layout.error(path, None, None, "predictions file or folder missing")
  fmt = detect_format(path) if fmt == "auto" else fmt
  base = DEFAULT_FRAME_BASE[fmt] if frame_base is None else int(frame_base)
  if fmt != "json" and frame_rounding is None:
    frame_rounding = DEFAULT_FRAME_ROUNDING[fmt]
  if fmt == "json":
    if os.path.isdir(path):
      path = os.path.join(path, "predictions.json")
    if base != 0:
      raise ValueError("JSON predictions are 0-based: --frame_base applies to CSV and text files")
    return PredictionFile(path, "json", load_predictions(path))
  if fmt == "csv":
    return read_csv(path, frame_base=base, frame_rounding=frame_rounding)
  return read_lab_folder(path, frame_base=base, frame_rounding=frame_rounding)


def _frame(text: str, where: tuple, field: str, base: int, rounding: str) -> int:
  path, line, video = where
  try:
    value = float(text)
  except ValueError:
    raise layout.error(path, video, field, f"line {line}: not a number: {text!r}") from None
  if not math.isfinite(value):
    raise layout.error(path, video, field, f"line {line}: not finite: {text!r}")
  frame = math.floor(value) if rounding == "floor" else math.floor(value + 0.5)
  return frame - base  # negative: before the first frame (see _Collector.add)


def _score(text: str, where: tuple) -> float:
  path, line, video = where
  try:
    value = float(text)
  except ValueError:
    raise layout.error(path, video, "score", f"line {line}: not a number: {text!r}") from None
  if not math.isfinite(value):
    raise layout.error(path, video, "score", f"line {line}: not finite: {text!r}")
  return value


class _Collector:
  """Rows in file order, grouped by video."""

  def __init__(self, base: int, fields=("onset", "offset")):
    self.rows, self.labels, self.subjects, self.lines = {}, {}, {}, {}
    self.base, self.clipped, self.first_clipped = base, 0, None
    self.fields = fields

  def add(self, where, onset, offset, score, label=None, subject=None):
    path, line, video = where
    if offset < 0:
      raise layout.error(path, video, self.fields[1], f"line {line}: frame {offset + self.base} "
                         f"is before the first frame ({self.base}; see --frame_base)")
    if onset > offset:
      raise layout.error(path, video, self.fields[1],
                         f"line {line}: onset {onset} > offset {offset}")
    if onset < 0:  # e.g. STRS-Metric's data/pred.csv: 1,EP04_03,-3,65,others
      self.clipped += 1
      if self.first_clipped is None:
        self.first_clipped = (path, line, video, onset + self.base)
      onset = 0
    self.rows.setdefault(video, []).append((onset, offset, score))
    self.lines.setdefault(video, []).append((path, line))
    if label is not None:
      self.labels.setdefault(video, []).append(label)
    if subject is not None:
      self.subjects.setdefault(video, subject)

  def result(self, path, fmt, with_labels) -> PredictionFile:
    videos = {v: VideoPredictions(
        np.asarray([r[0] for r in rows], np.int64), np.asarray([r[1] for r in rows], np.int64),
        np.asarray([r[2] for r in rows], np.float64)) for v, rows in self.rows.items()}
    labels = {v: tuple(x) for v, x in self.labels.items()} if with_labels else None
    if self.clipped:
      file, line, video, onset = self.first_clipped
      logging.warning("%s: %d prediction(s) start before the first frame (%d); their onsets "
                      "were clipped to it (e.g. %s line %d, video %s, onset %s)", path,
                      self.clipped, self.base, file, line, video, onset)
    return PredictionFile(path, fmt, videos, labels, dict(self.subjects) or None,
                          {v: tuple(x) for v, x in self.lines.items()}, self.clipped, self.base)


def _csv_columns(first: list, path: str) -> tuple:
  """``(column -> index, has_header)`` from the first row."""
  lowered = [c.strip().lower() for c in first]
  if "onset" in lowered or "vid" in lowered or "video" in lowered:
    cols = {}
    for i, name in enumerate(lowered):
      key = _ALIASES.get(name)
      if key is None:
        logging.warning("%s: column %r ignored", path, first[i])
      elif key in cols:
        raise layout.error(path, None, key, "line 1: column given twice")
      else:
        cols[key] = i
    for need in ("vid", "onset", "offset"):
      if need not in cols:
        raise layout.error(path, None, need, f"line 1: header lacks the column (has {first})")
    return cols, True
  if not 3 <= len(first) <= 5:
    raise layout.error(path, None, None, f"line 1: expected a header or the columns "
                       f"vid,onset,offset[,type[,subject]], got {len(first)} cells")
  return {k: i for i, k in enumerate(("vid", "onset", "offset", "type", "subject")[:len(first)])
          }, False


def read_csv(path: str, *, frame_base: int = 0,
             frame_rounding: str = "half_up") -> PredictionFile:
  """Reads a MEGC CSV (see the module docstring)."""
  if not os.path.isfile(path):
    raise layout.error(path, None, None, "CSV file missing")
  frame_rounding = rounding_name(frame_rounding)
  try:
    rows = [(i + 1, r) for i, r in enumerate(csv.reader(io.StringIO(read_text(path),
                                                                    newline="")))
            if any(c.strip() for c in r)]
  except csv.Error as e:
    raise layout.error(path, None, None, f"not a readable CSV file ({e})") from None
  if not rows:
    raise layout.error(path, None, None, "empty file (expected vid,onset,offset,type rows)")
  cols, header = _csv_columns(rows[0][1], path)
  width = len(rows[0][1])
  out = _Collector(frame_base)
  padded = []
  for line, r in rows[1:] if header else rows:
    cells = [c.strip() for c in r]
    if len(cells) < max(cols.values()) + 1:
      raise layout.error(path, cells[0] if cells else None, None,
                         f"line {line}: {len(cells)} cells, expected {max(cols.values()) + 1}")
    if len(cells) > width:
      if any(cells[width:]):
        raise layout.error(path, cells[cols["vid"]], None, f"line {line}: {len(cells)} cells, "
                           f"but the {'header' if header else 'first row'} has {width}; "
                           "the columns cannot be trusted")
      padded.append(line)
    video = cells[cols["vid"]]
    where = (path, line, video)
    if not video:
      raise layout.error(path, None, "vid", f"line {line}: empty video name")
    label = None
    if "type" in cols:
      label = _TYPES.get(cells[cols["type"]].lower())
      if label is None:
        raise layout.error(path, video, "type", f"line {line}: {cells[cols['type']]!r} is not "
                           "me or mae")
    out.add(where, _frame(cells[cols["onset"]], where, "onset", frame_base, frame_rounding),
            _frame(cells[cols["offset"]], where, "offset", frame_base, frame_rounding),
            _score(cells[cols["score"]], where) if "score" in cols else 1.0, label,
            cells[cols["subject"]] if "subject" in cols else None)
  if not out.rows:
    raise layout.error(path, None, None, "holds no prediction rows")
  if padded:
    logging.warning("%s: %d row(s) have empty cells past the %d column(s) of the %s (e.g. "
                    "line %d); ignored", path, len(padded), width,
                    "header" if header else "first row", padded[0])
  return out.result(path, "csv", "type" in cols)


def read_lab_folder(path: str, *, frame_base: int = 1,
                    frame_rounding: str = "floor") -> PredictionFile:
  """Reads a folder of the authors' lab's ``*.txt`` files, or one such file (see the module
  docstring)."""
  frame_rounding = rounding_name(frame_rounding)
  if os.path.isfile(path):
    files = [path]
  elif os.path.isdir(path):
    files = [os.path.join(path, f) for f in sorted(os.listdir(path)) if f.endswith(".txt")]
    if not files:
      raise layout.error(path, None, None, "folder holds no .txt prediction file")
  else:
    raise layout.error(path, None, None, "not a .txt prediction file or a folder of them")
  out, owner = _Collector(frame_base, ("start", "end")), {}
  for file in files:
    lines = read_text(file).splitlines()
    for line, text in enumerate(lines, 1):
      if not text.strip():
        continue
      cells = [c.strip() for c in (text.split("\t") if "\t" in text else text.split())]
      video = cells[0]
      if len(cells) != 4:
        raise layout.error(file, video, None, f"line {line}: expected 4 fields "
                           f"video<TAB>start<TAB>end<TAB>score, got {len(cells)}")
      if line == 1 and cells[1].lower() in ("start", "onset"):
        continue  # a header
      if owner.setdefault(video, file) != file:
        raise layout.error(file, video, "video", f"line {line}: the video is also listed in "
                           f"{owner[video]}")
      where = (file, line, video)
      out.add(where, _frame(cells[1], where, "start", frame_base, frame_rounding),
              _frame(cells[2], where, "end", frame_base, frame_rounding),
              _score(cells[3], where))
  if not out.rows:
    raise layout.error(path, None, None, "the .txt files hold no prediction")
  return out.result(path, "lab_txt", False)


def check_within(pf: PredictionFile, ground_truth) -> None:
  """Every known video's predictions end inside the video (``offset < num_frames``).

  Raises:
    layout.DatasetError: naming the file and line (CSV, text) of the first prediction past
      the end, its video and field; for JSON the prediction's index.
  """
  for video, p in pf.videos.items():
    n_frames = ground_truth.num_frames.get(video)
    if n_frames is None or not p.offset.size or p.offset.max() < n_frames:
      continue
    i = int(np.argmax(p.offset >= n_frames))
    if not pf.lines:
      raise layout.error(pf.path, video, "offset", f"prediction {i}: {int(p.offset[i])} is past "
                         f"the video's end (num_frames {n_frames}; frames are 0-based)")
    file, line = pf.lines[video][i]
    raise layout.error(file, video, "end" if pf.format == "lab_txt" else "offset",
                       f"line {line}: frame {int(p.offset[i]) + pf.frame_base} is past the "
                       f"video's end ({n_frames} frames, numbered from {pf.frame_base}; see "
                       "--frame_base)")


def submitted_type_report(pf: PredictionFile, fps: float,
                          me_seconds: float = duration.ME_MAX_SECONDS) -> Optional[dict]:
  """The submitter's ``type`` labels against the duration rule (``None`` without labels)."""
  if not pf.labels:
    return None
  n = {"ME": 0, "MaE": 0}
  agree = 0
  for video, labels in pf.labels.items():
    p = pf.videos[video]
    me = duration.is_me(p.onset, p.offset, fps, me_seconds)
    for label, is_me in zip(labels, me.tolist()):
      n[label] += 1
      agree += (label == "ME") == is_me
  total = n["ME"] + n["MaE"]
  return {"ME": n["ME"], "MaE": n["MaE"], "agree_with_duration_rule": agree,
          "differ_from_duration_rule": total - agree,
          "note": "the submitter's labels; the scores class every prediction by its duration"}


def subject_mismatches(pf: PredictionFile, subjects: Mapping) -> list:
  """Videos whose ``subject`` in the file differs from the dataset's (warned)."""
  bad = sorted(v for v, s in (pf.subjects or {}).items()
               if v in subjects and str(s) != str(subjects[v]))
  if bad:
    logging.warning("%s: %d video(s) name a subject other than the dataset's (e.g. %s: %r vs "
                    "%r); the dataset's is used", pf.path, len(bad), bad[0],
                    pf.subjects[bad[0]], subjects[bad[0]])
  return bad


def write_csv(path: str, predictions: Mapping, ground_truth, *,
              frame_base: int = 0, me_seconds: float = duration.ME_MAX_SECONDS) -> int:
  """Writes predictions as MEGC CSV (``vid,onset,offset,type,subject,score``); returns rows.

  ``type`` is ``me``/``mae`` by the duration rule; frames are written as
  ``frame + frame_base``; videos in the dataset's order (others after, subject empty),
  predictions in their given order.
  """
  parsed = parse_predictions(predictions, path) if predictions and not all(
      isinstance(v, VideoPredictions) for v in predictions.values()) else predictions
  order = [v for v in ground_truth.videos if v in parsed] + sorted(
      v for v in parsed if v not in ground_truth.num_frames)
  n = 0
  with fileio.atomic_open(os.path.abspath(path), newline="") as f:
    w = csv.writer(f)
    w.writerow(CSV_COLUMNS)
    for video in order:
      p = parsed[video]
      me = duration.is_me(p.onset, p.offset, ground_truth.fps, me_seconds)
      for on, off, score, is_me in zip(p.onset.tolist(), p.offset.tolist(), p.score.tolist(),
                                       me.tolist()):
        w.writerow([video, on + frame_base, off + frame_base, "me" if is_me else "mae",
                    ground_truth.subjects.get(video, ""), repr(float(score))])
        n += 1
  return n


def select(predictions: Mapping, protocol: str, threshold: Optional[float], *,
           max_per_video: int = protocols.MAX_PER_VIDEO) -> dict:
  """The predictions a protocol counts at ``threshold`` (``score >= threshold``; for ``paper``
  ``score > threshold`` and at most ``max_per_video`` per video, the cap applying also without
  a threshold), each video's in their given order; ``threshold=None`` keeps every score."""
  out = {}
  for video, p in predictions.items():
    keep = np.ones(p.score.size, bool)
    if threshold is not None:
      keep = p.score > threshold if protocol == "paper" else p.score >= threshold
    if protocol == "paper":
      order = np.lexsort((np.arange(p.score.size), -p.score))
      top = np.zeros(p.score.size, bool)
      top[order[:int(max_per_video)]] = True
      keep &= top
    out[video] = VideoPredictions(p.onset[keep], p.offset[keep], p.score[keep])
  return out
