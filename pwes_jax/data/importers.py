"""Importers from the official annotation spreadsheets into the project's dataset layout.

Three datasets are supported; each importer reads the spreadsheet the dataset owners ship, the
user's own per-video I3D features, and writes a dataset directory in the layout of
:mod:`pwes_jax.data.layout` (``dataset.json``, ``videos.csv``, ``annotations.csv`` with 0-based
inclusive frames, ``features/<video>.npz``).

Spreadsheets (``.xlsx`` through openpyxl, ``.xls`` through xlrd):

* **CAS(ME)^2** ``CAS(ME)^2code_final.xlsx``: three sheets, no header row.

  - sheet 1, one expression a row: ``participant, code_name_expression (e.g. "anger1_1"), onset,
    apex, offset, AUs, emotion, type ("micro-expression" / "macro-expression"), ...``. Frames are
    1-based (``frame_base=1``); an offset of 0 means "no offset coded: use the apex".
  - sheet 2, subject naming: each row holds a subject id such as ``s15`` and the participant
    number of sheet 1 (the last integer cell of the row other than the id).
  - sheet 3, video naming: each row holds a numeric video code such as ``0401`` and a code name
    such as ``anger1`` (the ``_1`` suffix in sheet 1 numbers the expressions of a video).

  A video is named ``video_name_format.format(subject=..., subject_number=..., code=...,
  code_name=...)``, by default ``"{subject}_{code}"``, e.g. ``s15_0401`` for participant 1 =
  ``s15`` and ``anger1`` = ``0401``. Name the feature files the same way, or pass another
  format (``"{subject_number}_{code}"`` gives ``15_0401``). fps 30, snippet 8.
* **SAMM-LV** ``SAMM_LongVideos_V*_Release.xlsx``: the header row is found as the first row
  holding both ``Subject`` and ``Filename``; columns ``Filename`` (``006_1_2``: the video is the
  first two parts, ``006_1``; the subject is the first part, ``006``), ``Onset``, ``Apex``,
  ``Offset``, ``Type`` (``Macro``, ``Micro - 1/2``). An apex of -1 or an empty one is unknown.
  Assumption, not verified against the image files: the frame numbers are the numbers in the
  frame file names counted from 0 (``frame_base=0``); pass ``frame_base=1`` if your copy
  numbers its first image 1. fps 200, snippet 32.
* **CAS(ME)^3** part A (``.xls`` or ``.xlsx``): header columns ``Subject`` (or ``sub``),
  ``Filename`` (or ``seq``), ``Onset``, ``Offset`` and ``Expression type`` (or ``Type``; values
  such as ``Micro-expression``, ``macro``, any case), optionally ``Apex`` (read when present,
  otherwise -1). The frame numbers are jpg indices; the annotation files hold onsets of 0, so
  ``frame_base=0``. A video is named ``<Subject>_<Filename>``, e.g. ``spNO.1_a``. fps 30,
  snippet 8.

Every type string whose lower-case form starts with ``micro`` is ``ME``, ``macro`` is ``MaE``
(``me`` / ``mae`` are accepted too); anything else, a non-numeric frame, a frame below the base
or ``onset > offset`` is a :class:`~pwes_jax.data.layout.DatasetError` naming the spreadsheet, the
sheet, the row (as Excel numbers it) and the field. An apex that is empty or below the frame
base (-1; 0 in the 1-based CAS(ME)^2 sheet) is unknown (-1 in the layout); an apex outside
``[onset, offset]`` is dropped (set to -1) with a warning listed in the summary.

Features, per video, in ``features_dir`` (exactly one form per video; the sources are only
read, never modified):

* ``<video>.npz`` holding arrays ``rgb`` and ``flow``;
* ``<video>_rgb.npy`` and ``<video>_flow.npy``;
* a directory ``<video>/`` holding ``rgb.npy`` and ``flow.npy``.

Each array is ``[T, feature_dim]`` (real numbers, finite), the same ``T`` for both streams, and
is written as float32 to ``output_dir/features/<video>.npz``.

``num_frames`` of a video comes from ``num_frames_csv`` (columns ``video,num_frames``) when given,
and must then satisfy ``(num_frames - 1) // snippet_length == T``. Otherwise it is inferred as
``T * snippet_length + 1`` (logged), raised up to ``offset + 1`` when an annotation ends in the
frames after the last full snippet (at most ``(T + 1) * snippet_length``, which keeps ``T``).
Only annotated videos are imported.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import re
from typing import Callable, Optional, Sequence

from absl import logging
import numpy as np

from pwes_jax.data import layout

FEATURE_DIM = 1024

# Per-dataset defaults: the name written to dataset.json, fps, snippet length and frame base.
DEFAULTS = {
    "casme2": dict(name="casme2", fps=30.0, snippet_length=8, frame_base=1),
    "samm_lv": dict(name="samm_lv", fps=200.0, snippet_length=32, frame_base=0),
    "casme3": dict(name="casme3", fps=30.0, snippet_length=8, frame_base=0),
}


@dataclasses.dataclass(frozen=True)
class Row:
  """One parsed annotation with the place it came from (``where`` reads "sheet 'x' row 7")."""
  annotation: layout.Annotation
  where: str


@dataclasses.dataclass(frozen=True)
class Parsed:
  """A parsed spreadsheet: annotation rows, rows skipped and warnings (each a dict)."""
  rows: tuple
  skipped: tuple
  warnings: tuple

  @property
  def annotations(self) -> list:
    return [r.annotation for r in self.rows]


# ----------------------------------------------------------------------------------------------
# Spreadsheet reading.


def _clean(value):
  """Cell value with empty strings as None and strings stripped."""
  if isinstance(value, str):
    value = value.strip()
    return value or None
  return value


def read_workbook(path: str) -> list:
  """Reads every sheet of an ``.xlsx``/``.xlsm`` (openpyxl) or ``.xls`` (xlrd) file.

  Returns:
    ``[(sheet_name, rows)]`` in workbook order; ``rows`` is a list of tuples of cell values
    (``None`` for empty cells, strings stripped); row ``i`` of the list is Excel row ``i + 1``.
  """
  if not os.path.isfile(path):
    raise layout.error(path, None, None, "spreadsheet missing")
  ext = os.path.splitext(path)[1].lower()
  try:
    if ext in (".xlsx", ".xlsm"):
      import openpyxl  # pylint: disable=g-import-not-at-top  (only .xlsx sheets need it)
      wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
      try:
        return [(ws.title, [tuple(_clean(c) for c in row)
                            for row in ws.iter_rows(values_only=True)])
                for ws in wb.worksheets]
      finally:
        wb.close()
    if ext == ".xls":
      import xlrd  # pylint: disable=g-import-not-at-top  (only .xls sheets need it)
      book = xlrd.open_workbook(path)
      out = []
      for sh in book.sheets():
        rows = []
        for r in range(sh.nrows):
          cells = []
          for c in sh.row(r):
            if c.ctype in (xlrd.XL_CELL_EMPTY, xlrd.XL_CELL_BLANK):
              cells.append(None)
            elif c.ctype == xlrd.XL_CELL_ERROR:  # An Excel error (#N/A...) is not a number.
              cells.append(xlrd.error_text_from_code.get(c.value, "#ERROR"))
            else:
              cells.append(_clean(c.value))
          rows.append(tuple(cells))
        out.append((sh.name, rows))
      return out
  except layout.DatasetError:
    raise
  except Exception as e:  # noqa: BLE001 - any unreadable workbook becomes one clear error.
    raise layout.error(path, None, None, f"unreadable spreadsheet ({type(e).__name__}: {e})") \
        from None
  raise layout.error(path, None, None, f"unsupported extension {ext!r} (expected .xlsx or .xls)")


def _where(path: str, sheet: str) -> str:
  return f"{path} [sheet {sheet!r}]"


def _cell(row: tuple, i: int):
  return row[i] if i is not None and i < len(row) else None


def _is_empty(row: tuple) -> bool:
  return all(c is None for c in row)


def _as_int(value) -> Optional[int]:
  """``value`` as an int when it is an integral number or such a string, else None."""
  if isinstance(value, bool) or value is None:
    return None
  if isinstance(value, (int, np.integer)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    return int(value) if np.isfinite(value) and float(value).is_integer() else None
  if isinstance(value, str):
    try:
      f = float(value)
    except ValueError:
      return None
    return int(f) if np.isfinite(f) and f.is_integer() else None
  return None


def _text(value) -> str:
  """A cell as text; integral numbers without a trailing ``.0``."""
  if value is None:
    return ""
  n = _as_int(value) if not isinstance(value, str) else None
  return str(n) if n is not None else str(value).strip()


class _Ctx:
  """Builds errors that name the spreadsheet, sheet, row and field."""

  def __init__(self, path: str, sheet: str):
    self.where = _where(path, sheet)
    self.sheet = sheet

  def err(self, row_no: int, field: str, msg: str, video: Optional[str] = None):
    return layout.error(self.where, video, field, f"row {row_no}: {msg}")

  def label(self, row_no: int) -> str:
    return f"sheet {self.sheet!r} row {row_no}"


def expression_type(value) -> Optional[str]:
  """Maps a spreadsheet type cell to ``"ME"`` or ``"MaE"``; None when it is neither.

  Case, spaces, ``-`` and ``_`` are ignored; ``micro...`` / ``me`` is ``ME`` and ``macro...`` /
  ``mae`` is ``MaE`` (so ``"Micro - 1/2"``, ``"micro-expression"`` and ``"MACRO"`` all map).
  """
  s = re.sub(r"[\s_\-]", "", _text(value).lower())
  if s.startswith("micro") or s == "me":
    return "ME"
  if s.startswith("macro") or s == "mae":
    return "MaE"
  return None


def _type(value, ctx: _Ctx, row_no: int, field: str, video=None) -> str:
  kind = expression_type(value)
  if kind is None:
    raise ctx.err(row_no, field, f"unknown expression type {value!r} (expected a micro- or "
                  f"macro-expression label)", video)
  return kind


def _frame(value, ctx: _Ctx, row_no: int, field: str, base: int, video=None,
           *, optional: bool = False) -> int:
  """A 0-based frame from a spreadsheet cell.

  An ``optional`` cell (the apex) that is empty or below ``base`` (-1, or 0 in a 1-based sheet)
  is unknown: -1.
  """
  n = _as_int(value)
  if n is None:
    if optional and value is None:
      return -1
    raise ctx.err(row_no, field, f"not an integer frame number: {value!r}", video)
  if optional and n < base:
    return -1
  if n < base:
    raise ctx.err(row_no, field, f"frame {n} is below the first frame number {base}", video)
  return n - base


def _finish(ctx: _Ctx, row_no: int, video: str, subject: str, onset: int, apex: int,
            offset: int, kind: str, warnings: list) -> Row:
  if onset > offset:
    raise ctx.err(row_no, "offset", f"onset {onset} > offset {offset} (0-based)", video)
  if apex >= 0 and not onset <= apex <= offset:
    warnings.append({"row": ctx.label(row_no), "video": video,
                     "reason": f"apex {apex} outside [{onset}, {offset}] (0-based); dropped"})
    apex = -1
  return Row(layout.Annotation(subject, video, onset, apex, offset, kind), ctx.label(row_no))


def _header_index(rows: list, required: Sequence[Sequence[str]], max_scan: int = 50):
  """Finds the header row: the first row holding one alias of each ``required`` group."""
  for i, row in enumerate(rows[:max_scan]):
    names = [_norm(c) for c in row]
    if all(any(a in names for a in group) for group in required):
      return i, names
  return None, None


def _norm(value) -> str:
  return re.sub(r"[\s_]+", " ", _text(value).lower()).strip()


def _column(names: list, aliases: Sequence[str]) -> Optional[int]:
  for a in aliases:
    if a in names:
      return names.index(a)
  return None


# ----------------------------------------------------------------------------------------------
# CAS(ME)^2.


def _casme2_subjects(path: str, sheet: str, rows: list) -> dict:
  """Sheet 2: participant number -> subject id (lower-case ``s<digits>``)."""
  out = {}
  for row in rows:
    ids = [i for i, c in enumerate(row) if isinstance(c, str) and re.fullmatch(r"[sS]\d+", c)]
    if not ids:
      continue
    nums = [_as_int(c) for i, c in enumerate(row) if i != ids[0] and _as_int(c) is not None]
    if nums:
      out[nums[-1]] = row[ids[0]].lower()
  if not out:
    raise layout.error(_where(path, sheet), None, None, "no subject naming rows (a cell like "
                       "'s15' beside its participant number) found")
  return out


def _casme2_codes(path: str, sheet: str, rows: list) -> dict:
  """Sheet 3: video code name (lower-case, e.g. ``anger1``) -> numeric code (``0401``)."""
  out = {}
  for row in rows:
    code, name = None, None
    for c in row:
      if c is None:
        continue
      if code is None and (_as_int(c) is not None and not isinstance(c, str)):
        code = f"{_as_int(c):04d}"  # A numeric cell lost its leading zero: 401 -> "0401".
      elif code is None and isinstance(c, str) and re.fullmatch(r"\d+", c):
        code = c.zfill(4)
      elif name is None and isinstance(c, str) and not re.fullmatch(r"[\d.]+", c):
        name = c
    if code is not None and name is not None:
      out[name.lower()] = code
  if not out:
    raise layout.error(_where(path, sheet), None, None, "no video naming rows (a numeric code "
                       "such as '0401' beside a code name such as 'anger1') found")
  return out


def read_casme2(path: str, *, frame_base: int = 1,
                video_name_format: str = "{subject}_{code}") -> Parsed:
  """Parses ``CAS(ME)^2code_final.xlsx`` (see the module docstring for the sheets)."""
  sheets = read_workbook(path)
  if len(sheets) < 3:
    raise layout.error(path, None, None, f"expected 3 sheets (codes, subject naming, video "
                       f"naming), found {len(sheets)}: {[s for s, _ in sheets]}")
  subjects = _casme2_subjects(path, *sheets[1])
  codes = _casme2_codes(path, *sheets[2])
  ctx = _Ctx(path, sheets[0][0])
  rows, skipped, warnings = [], [], []
  for row_no, row in enumerate(sheets[0][1], start=1):
    if _is_empty(row):
      continue
    if row_no == 1 and "onset" in _norm(_cell(row, 2)):
      skipped.append({"row": ctx.label(row_no), "video": None, "reason": "header row"})
      continue
    participant = _as_int(_cell(row, 0))
    if participant is None:
      raise ctx.err(row_no, "participant", f"not a participant number: {_cell(row, 0)!r}")
    if participant not in subjects:
      raise ctx.err(row_no, "participant", f"participant {participant} not in the subject "
                    f"naming sheet {sheets[1][0]!r} (knows {sorted(subjects)})")
    subject = subjects[participant]
    raw_name = _text(_cell(row, 1))
    m = re.fullmatch(r"(.+?)_\d+", raw_name)
    code_name = (m.group(1) if m else raw_name).lower()
    if code_name not in codes:
      raise ctx.err(row_no, "video", f"video code name {raw_name!r} not in the video naming "
                    f"sheet {sheets[2][0]!r}")
    code = codes[code_name]
    try:
      video = video_name_format.format(subject=subject, subject_number=subject.lstrip("s"),
                                       code=code, code_name=code_name)
    except (KeyError, IndexError, ValueError) as e:
      raise ValueError(f"bad video_name_format {video_name_format!r} ({e}); fields: subject, "
                       f"subject_number, code, code_name") from None
    onset = _frame(_cell(row, 2), ctx, row_no, "onset", frame_base, video)
    apex = _frame(_cell(row, 3), ctx, row_no, "apex", frame_base, video, optional=True)
    off_raw = _cell(row, 4)
    if _as_int(off_raw) == 0:  # CAS(ME)^2 codes a missing offset as 0: use the apex.
      if apex < 0:
        raise ctx.err(row_no, "offset", "offset is 0 (use the apex) but the apex is missing",
                      video)
      offset = apex
    else:
      offset = _frame(off_raw, ctx, row_no, "offset", frame_base, video)
    kind = _type(_cell(row, 7), ctx, row_no, "type", video)
    rows.append(_finish(ctx, row_no, video, subject, onset, apex, offset, kind, warnings))
  return Parsed(tuple(rows), tuple(skipped), tuple(warnings))


def parse_casme2(path: str, **kwargs) -> list:
  """CAS(ME)^2 spreadsheet -> ``list[layout.Annotation]`` (0-based frames)."""
  return read_casme2(path, **kwargs).annotations


# ----------------------------------------------------------------------------------------------
# SAMM-LV and CAS(ME)^3: one sheet with a header row.

_SUBJECT = ("subject", "sub")
_FILENAME = ("filename", "seq")


def _header_sheet(path: str):
  """The first sheet with a Subject/Filename header: ``(ctx, header_row_index, names, rows)``."""
  for sheet, rows in read_workbook(path):
    i, names = _header_index(rows, (_SUBJECT, _FILENAME))
    if i is not None:
      return _Ctx(path, sheet), i, names, rows
  raise layout.error(path, None, None, "no sheet has a header row with 'Subject' and "
                     "'Filename' columns")


def _required(ctx: _Ctx, header_row: int, names: list, field: str, aliases) -> int:
  i = _column(names, aliases)
  if i is None:
    raise ctx.err(header_row + 1, field, f"column missing from the header (one of {aliases}); "
                  f"header is {[n for n in names if n]}")
  return i


def _table_rows(ctx: _Ctx, start: int, rows: list, cols: dict, skipped: list):
  """Yields ``(row_no, row)`` for data rows; rows with no file name and no onset are skipped."""
  for i in range(start, len(rows)):
    row, row_no = rows[i], i + 1
    if _is_empty(row):
      continue
    if _cell(row, cols["filename"]) is None and _cell(row, cols["onset"]) is None:
      skipped.append({"row": ctx.label(row_no), "video": None,
                      "reason": "no filename and no onset (not an annotation row)"})
      continue
    if _cell(row, cols["filename"]) is None:
      raise ctx.err(row_no, "Filename", "empty file name")
    yield row_no, row


def read_samm_lv(path: str, *, frame_base: int = 0) -> Parsed:
  """Parses ``SAMM_LongVideos_V*_Release.xlsx`` (header row found by 'Subject' and 'Filename')."""
  ctx, h, names, rows = _header_sheet(path)
  cols = {"filename": _required(ctx, h, names, "Filename", _FILENAME),
          "onset": _required(ctx, h, names, "Onset", ("onset",)),
          "apex": _column(names, ("apex",)),
          "offset": _required(ctx, h, names, "Offset", ("offset",)),
          "type": _required(ctx, h, names, "Type", ("type", "expression type"))}
  out, skipped, warnings = [], [], []
  for row_no, row in _table_rows(ctx, h + 1, rows, cols, skipped):
    name = _text(_cell(row, cols["filename"]))
    parts = name.split("_")
    if len(parts) < 2 or not all(parts[:2]):
      raise ctx.err(row_no, "Filename", f"{name!r} is not <subject>_<video>[_<n>]")
    video, subject = "_".join(parts[:2]), parts[0]
    onset = _frame(_cell(row, cols["onset"]), ctx, row_no, "Onset", frame_base, video)
    apex = _frame(_cell(row, cols["apex"]), ctx, row_no, "Apex", frame_base, video,
                  optional=True)
    offset = _frame(_cell(row, cols["offset"]), ctx, row_no, "Offset", frame_base, video)
    kind = _type(_cell(row, cols["type"]), ctx, row_no, "Type", video)
    out.append(_finish(ctx, row_no, video, subject, onset, apex, offset, kind, warnings))
  return Parsed(tuple(out), tuple(skipped), tuple(warnings))


def parse_samm_lv(path: str, **kwargs) -> list:
  """SAMM-LV spreadsheet -> ``list[layout.Annotation]`` (0-based frames)."""
  return read_samm_lv(path, **kwargs).annotations


def read_casme3(path: str, *, frame_base: int = 0) -> Parsed:
  """Parses the CAS(ME)^3 part A spreadsheet (``.xls`` or ``.xlsx``)."""
  ctx, h, names, rows = _header_sheet(path)
  cols = {"subject": _required(ctx, h, names, "Subject", _SUBJECT),
          "filename": _required(ctx, h, names, "Filename", _FILENAME),
          "onset": _required(ctx, h, names, "Onset", ("onset",)),
          "apex": _column(names, ("apex",)),
          "offset": _required(ctx, h, names, "Offset", ("offset",)),
          "type": _required(ctx, h, names, "Expression type",
                            ("expression type", "type", "expression"))}
  out, skipped, warnings = [], [], []
  for row_no, row in _table_rows(ctx, h + 1, rows, cols, skipped):
    subject = _text(_cell(row, cols["subject"]))
    if not subject:
      raise ctx.err(row_no, "Subject", "empty subject")
    video = f"{subject}_{_text(_cell(row, cols['filename']))}"
    onset = _frame(_cell(row, cols["onset"]), ctx, row_no, "Onset", frame_base, video)
    apex = _frame(_cell(row, cols["apex"]), ctx, row_no, "Apex", frame_base, video,
                  optional=True)
    offset = _frame(_cell(row, cols["offset"]), ctx, row_no, "Offset", frame_base, video)
    kind = _type(_cell(row, cols["type"]), ctx, row_no, "Expression type", video)
    out.append(_finish(ctx, row_no, video, subject, onset, apex, offset, kind, warnings))
  return Parsed(tuple(out), tuple(skipped), tuple(warnings))


def parse_casme3(path: str, **kwargs) -> list:
  """CAS(ME)^3 part A spreadsheet -> ``list[layout.Annotation]`` (0-based frames)."""
  return read_casme3(path, **kwargs).annotations


# ----------------------------------------------------------------------------------------------
# Features and frame counts.


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


def load_source_features(features_dir: str, video: str, feature_dim: int = FEATURE_DIM):
  """Reads and checks one video's source features; returns float32 ``(rgb, flow)`` ``[T, D]``."""
  found = feature_sources(features_dir, video)
  if not found:
    raise layout.error(features_dir, video, None, f"no features: expected {video}.npz, "
                       f"{video}_rgb.npy + {video}_flow.npy, or {video}/rgb.npy + flow.npy")
  if len(found) > 1:
    raise layout.error(features_dir, video, None, f"ambiguous features: several forms present "
                       f"({[k for k, _, _ in found]}); keep one")
  kind, rgb_path, flow_path = found[0]
  out = []
  for field, path in (("rgb", rgb_path), ("flow", flow_path)):
    a = _load_array(path, field if kind == "npz" else None, video, field)
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
  if out[0].shape[0] != out[1].shape[0]:
    raise layout.error(flow_path, video, "flow", f"{out[1].shape[0]} snippets but rgb has "
                       f"{out[0].shape[0]}")
  return out[0], out[1]


def read_num_frames_csv(path: str) -> dict:
  """Reads a ``video,num_frames`` CSV into ``{video: num_frames}``."""
  if not os.path.isfile(path):
    raise layout.error(path, None, None, "num_frames CSV missing")
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  if not rows:
    raise layout.error(path, None, None, "empty file (expected header 'video,num_frames')")
  header = [h.strip() for h in rows[0]]
  for h in ("video", "num_frames"):
    if h not in header:
      raise layout.error(path, None, h, f"column missing from header {header}")
  iv, inf = header.index("video"), header.index("num_frames")
  out = {}
  for line_no, row in enumerate(rows[1:], start=2):
    if not any(c.strip() for c in row):
      continue
    row = row + [""] * (len(header) - len(row))
    video, value = row[iv].strip(), row[inf].strip()
    if not video:
      raise layout.error(path, None, "video", f"line {line_no}: empty video name")
    if video in out:
      raise layout.error(path, video, "video", f"line {line_no}: listed twice")
    n = _as_int(value)
    if n is None or n < 2:
      raise layout.error(path, video, "num_frames", f"line {line_no}: not an integer >= 2: "
                         f"{value!r}")
    out[video] = n
  return out


def _num_frames(video: str, t: int, snippet_length: int, last_offset: int,
                given: Optional[dict], csv_path: Optional[str]) -> tuple:
  """``(num_frames, inferred)`` for one video with ``t`` snippets."""
  if given is not None:
    if video not in given:
      raise layout.error(csv_path, video, "video", "not listed in the num_frames CSV")
    n = given[video]
    if (n - 1) // snippet_length != t:
      raise layout.error(csv_path, video, "num_frames", f"{n} frames give "
                         f"{(n - 1) // snippet_length} snippets of {snippet_length}, but the "
                         f"features have {t}")
    if last_offset >= n:
      raise layout.error(csv_path, video, "num_frames", f"{n} frames, but an annotation ends at "
                         f"0-based frame {last_offset}")
    return n, False
  n = max(t * snippet_length + 1, last_offset + 1)
  if (n - 1) // snippet_length != t:
    raise layout.DatasetError(
        f"video {video!r}: an annotation ends at 0-based frame {last_offset}, past the {t} "
        f"feature snippets of {snippet_length} frames (frames up to "
        f"{(t + 1) * snippet_length - 1} fit); the features look too short, or pass "
        f"num_frames_csv")
  return n, True


# ----------------------------------------------------------------------------------------------
# Importing.


def import_parsed(parsed: Parsed, features_dir: str, output_dir: str, *, name: str, fps: float,
                  snippet_length: int, source: str, frame_base: int,
                  num_frames_csv: Optional[str] = None, skip_missing: bool = False,
                  feature_dim: int = FEATURE_DIM) -> dict:
  """Writes a parsed spreadsheet plus the user's features as a dataset directory.

  Everything is read and checked before anything is written; existing output files are never
  replaced (``FileExistsError``). Returns the summary dict (see :func:`import_casme2`).
  """
  if not os.path.isdir(features_dir):
    raise layout.error(features_dir, None, None, "features directory missing")
  _refuse_existing([os.path.join(output_dir, n)
                    for n in ("dataset.json", "videos.csv", "annotations.csv")])
  given = read_num_frames_csv(num_frames_csv) if num_frames_csv else None
  skipped, warnings = list(parsed.skipped), list(parsed.warnings)
  by_video = {}
  for r in parsed.rows:
    by_video.setdefault(r.annotation.video, []).append(r)

  # Pass 1: check every video's features and frame count.
  videos, inferred, rows = [], [], []
  for video, vrows in by_video.items():
    subjects = {r.annotation.subject for r in vrows}
    if len(subjects) > 1:
      raise layout.DatasetError(f"{source}: video {video!r}: rows disagree on the subject "
                                f"{sorted(subjects)} ({', '.join(r.where for r in vrows)})")
    if not feature_sources(features_dir, video):
      if not skip_missing:
        raise layout.error(features_dir, video, None, f"no features for this annotated video "
                           f"({os.path.basename(source)} {vrows[0].where}); expected "
                           f"{video}.npz, {video}_rgb.npy + {video}_flow.npy, or "
                           f"{video}/rgb.npy + flow.npy (or skip_missing)")
      logging.warning("No features for video %r: skipping its %d annotation(s).", video,
                      len(vrows))
      skipped += [{"row": r.where, "video": video, "reason": "no features for the video"}
                  for r in vrows]
      continue
    rgb, _ = load_source_features(features_dir, video, feature_dim)
    t = rgb.shape[0]
    n, was_inferred = _num_frames(video, t, snippet_length,
                                  max(r.annotation.offset for r in vrows), given, num_frames_csv)
    if was_inferred:
      inferred.append(video)
    videos.append(layout.Video(vrows[0].annotation.subject, video, n))
    rows += sorted(vrows, key=lambda r: (r.annotation.onset, r.annotation.offset))
  if not videos:
    raise layout.DatasetError(f"{source}: no annotated video has features in {features_dir}")
  if inferred:
    logging.info("num_frames inferred as T * %d + 1 (or up to the last annotated frame) for %d "
                 "video(s): %s", snippet_length, len(inferred), ", ".join(inferred))

  _refuse_existing([layout.feature_path(output_dir, v.video) for v in videos])

  # Pass 2: write.
  for i, v in enumerate(videos):
    rgb, flow = load_source_features(features_dir, v.video, feature_dim)
    layout.write_features(output_dir, v.video, rgb, flow)
    if (i + 1) % 50 == 0:
      logging.info("Wrote features of %d/%d videos.", i + 1, len(videos))
  info = layout.DatasetInfo(name, float(fps), int(snippet_length), int(feature_dim),
                            {"source": os.path.basename(source), "frame_base": int(frame_base)})
  annotations = [r.annotation for r in rows]
  layout.write_dataset(output_dir, info, videos, annotations)
  layout.load_dataset(output_dir)  # The written directory must read back cleanly.

  used = {v.video for v in videos}
  summary = {
      "name": name,
      "output_dir": os.path.abspath(output_dir),
      "videos": len(videos),
      "subjects": len({v.subject for v in videos}),
      "ME": sum(a.type == "ME" for a in annotations),
      "MaE": sum(a.type == "MaE" for a in annotations),
      "skipped": skipped,
      "warnings": warnings,
      "num_frames_inferred": inferred,
      "unused_features": _unused_features(features_dir, used),
  }
  logging.info("Imported %s: %d videos, %d subjects, %d ME, %d MaE, %d rows skipped.", name,
               summary["videos"], summary["subjects"], summary["ME"], summary["MaE"],
               len(skipped))
  return summary


def _refuse_existing(paths: Sequence[str]) -> None:
  for p in paths:
    if os.path.exists(p):
      raise FileExistsError(f"{p} exists; refusing to overwrite it")


def _unused_features(features_dir: str, used: set) -> list:
  """Video names with features in ``features_dir`` that no imported annotation refers to."""
  names = set()
  for entry in os.listdir(features_dir):
    path = os.path.join(features_dir, entry)
    if os.path.isdir(path):
      names.add(entry)
    elif entry.endswith(".npz"):
      names.add(entry[:-4])
    elif entry.endswith("_rgb.npy") or entry.endswith("_flow.npy"):
      names.add(entry.rsplit("_", 1)[0])
  return sorted(names - used)


def resample_interval(onset: int, apex: int, offset: int, source_fps: float,
                      fps: float) -> tuple:
  """An interval in source frames -> the frames of a video resampled to ``fps``.

  The resampled video's frame ``k`` shows source frame ``floor(k * source_fps / fps)`` (what
  ``launch.extract_features --fps`` does). The new onset is the first frame showing a source
  frame ``>= onset``, the new offset the last showing one ``<= offset``; an interval shorter
  than one new frame keeps the one frame nearest its middle. The apex (``-1`` if unknown) goes
  to the nearest frame, clipped into the interval.

  Returns:
    ``(onset, apex, offset)`` in resampled frames.
  """
  r = source_fps / fps
  new_on = math.ceil(onset / r - 1e-9)
  new_off = math.floor((offset + 1) / r - 1e-9)
  if new_off < new_on:
    new_on = new_off = int(round((onset + offset) / 2 / r))
  new_apex = -1 if apex < 0 else min(max(int(round(apex / r)), new_on), new_off)
  return new_on, new_apex, new_off


def resample_parsed(parsed: Parsed, source_fps: float, fps: float) -> Parsed:
  """Every row's interval mapped with :func:`resample_interval`."""
  rows = []
  for r in parsed.rows:
    a = r.annotation
    on, ap, off = resample_interval(a.onset, a.apex, a.offset, source_fps, fps)
    rows.append(dataclasses.replace(r, annotation=dataclasses.replace(a, onset=on, apex=ap,
                                                                        offset=off)))
  return dataclasses.replace(parsed, rows=tuple(rows))


def _import(key: str, reader: Callable, path: str, features_dir: str, output_dir: str, *,
            num_frames_csv, skip_missing, frame_base, feature_dim, resample_fps=None,
            snippet_length=None, **parse_kwargs) -> dict:
  d = DEFAULTS[key]
  base = d["frame_base"] if frame_base is None else int(frame_base)
  parsed = reader(path, frame_base=base, **parse_kwargs)
  fps = d["fps"]
  if resample_fps is not None:
    if not resample_fps > 0:
      raise ValueError(f"resample_fps must be positive, got {resample_fps}")
    parsed = resample_parsed(parsed, d["fps"], float(resample_fps))
    fps = float(resample_fps)
  return import_parsed(parsed, features_dir, output_dir, name=d["name"], fps=fps,
                       snippet_length=snippet_length or d["snippet_length"], source=path,
                       frame_base=base, num_frames_csv=num_frames_csv,
                       skip_missing=skip_missing, feature_dim=feature_dim)


def import_casme2(xlsx: str, features_dir: str, output_dir: str, *,
                  num_frames_csv: Optional[str] = None, skip_missing: bool = False,
                  frame_base: Optional[int] = None, feature_dim: int = FEATURE_DIM,
                  video_name_format: str = "{subject}_{code}",
                  resample_fps: Optional[float] = None,
                  snippet_length: Optional[int] = None) -> dict:
  """Imports CAS(ME)^2 (fps 30, snippet 8, 1-based frames by default).

  Args:
    xlsx: ``CAS(ME)^2code_final.xlsx``.
    features_dir: the user's features, one of the accepted forms per video.
    output_dir: the dataset directory to write (existing files are never replaced).
    num_frames_csv: optional ``video,num_frames`` CSV; otherwise num_frames is inferred.
    skip_missing: skip (with a warning) annotations of videos without features instead of
      raising.
    frame_base: the number of a video's first frame in the spreadsheet (default 1).
    feature_dim: feature width D (1024 for I3D).
    video_name_format: how a video is named from ``subject``, ``subject_number``, ``code`` and
      ``code_name``.
    resample_fps: the features were extracted from videos resampled to this frame rate
      (``launch.extract_features --fps``): intervals are mapped with :func:`resample_interval`
      and ``dataset.json`` gets this rate. The same holds for the other importers.
    snippet_length: frames per snippet of the features, if not the dataset's (8, 32 SAMM-LV).

  Returns:
    Summary dict: ``name``, ``output_dir``, ``videos``, ``subjects``, ``ME``, ``MaE`` (counts),
    ``skipped`` (list of ``{row, video, reason}``), ``warnings`` (same shape),
    ``num_frames_inferred`` (videos) and ``unused_features`` (videos with features but no
    annotation).
  """
  return _import("casme2", read_casme2, xlsx, features_dir, output_dir,
                 num_frames_csv=num_frames_csv, skip_missing=skip_missing, frame_base=frame_base,
                 feature_dim=feature_dim, resample_fps=resample_fps,
                 snippet_length=snippet_length, video_name_format=video_name_format)


def import_samm_lv(xlsx: str, features_dir: str, output_dir: str, *,
                   num_frames_csv: Optional[str] = None, skip_missing: bool = False,
                   frame_base: Optional[int] = None, feature_dim: int = FEATURE_DIM,
                   resample_fps: Optional[float] = None,
                   snippet_length: Optional[int] = None) -> dict:
  """Imports SAMM-LV (fps 200, snippet 32, frame base 0 by default: an assumption, see above).

  Arguments and summary as in :func:`import_casme2`.
  """
  return _import("samm_lv", read_samm_lv, xlsx, features_dir, output_dir,
                 num_frames_csv=num_frames_csv, skip_missing=skip_missing, frame_base=frame_base,
                 feature_dim=feature_dim, resample_fps=resample_fps,
                 snippet_length=snippet_length)


def import_casme3(spreadsheet: str, features_dir: str, output_dir: str, *,
                  num_frames_csv: Optional[str] = None, skip_missing: bool = False,
                  frame_base: Optional[int] = None, feature_dim: int = FEATURE_DIM,
                  resample_fps: Optional[float] = None,
                  snippet_length: Optional[int] = None) -> dict:
  """Imports CAS(ME)^3 part A from ``.xls`` or ``.xlsx`` (fps 30, snippet 8, frame base 0).

  Arguments and summary as in :func:`import_casme2`.
  """
  return _import("casme3", read_casme3, spreadsheet, features_dir, output_dir,
                 num_frames_csv=num_frames_csv, skip_missing=skip_missing, frame_base=frame_base,
                 feature_dim=feature_dim, resample_fps=resample_fps,
                 snippet_length=snippet_length)


IMPORTERS = {"casme2": import_casme2, "samm_lv": import_samm_lv, "casme3": import_casme3}
