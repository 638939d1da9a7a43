"""Importers from the datasets' annotation tables into the project's dataset layout.

Three datasets are supported; each importer reads the annotation table the dataset owners ship
(or a CSV export of it), the user's own per-video I3D features, and writes a dataset directory
in the layout of :mod:`pwes_jax.data.layout` (``dataset.json``, ``videos.csv``,
``annotations.csv`` with 0-based inclusive frames, ``features/<video>.npz``) plus
``import_report.json``: the rules applied, how many rows each rule touched, every skipped row
and the final ME / MaE / video / subject counts.

Tables (:mod:`pwes_jax.data.tables`: ``.xlsx``, ``.xls`` or ``.csv``, by extension):

* **CAS(ME)^2** ``CAS(ME)^2code_final.xlsx``: three sheets, no header row.

  - sheet 1, one expression a row: ``participant, code_name_expression (e.g. "anger1_1"), onset,
    apex, offset, AUs, emotion, type ("micro-expression" / "macro-expression"), ...``; an offset
    of 0 means "no offset coded" (rule ``missing_offset``), an apex of 0 "no apex".
  - sheet 2, subject naming: each row holds a subject id such as ``s15`` and the participant
    number of sheet 1 (the last integer cell of the row other than the id).
  - sheet 3, video naming: each row holds a numeric video code such as ``0401`` and a code name
    such as ``anger1`` (the ``_1`` suffix in sheet 1 numbers the expressions of a video).

  The CSV form (``CAS(ME)^2code_final(Updated).csv``) has sheet 1's columns and an 11th column
  with the video path, e.g. ``s15/15_0401girlcrashing``: the subject (``s15``) and the video code
  (``0401``) come from it, so no naming sheets are needed.

  A video is named ``video_name_format.format(subject=..., subject_number=..., code=...,
  code_name=...)``, by default ``"{subject}_{code}"``, e.g. ``s15_0401``. fps 30, snippet 8.
* **SAMM-LV** ``SAMM_LongVideos_V*_Release.xlsx`` (or its CSV export): preamble rows, then the
  header row (the first row holding both ``Subject`` and ``Filename``); columns ``Filename``
  (``006_1_2``: the video is the first two parts, ``006_1``; the subject the first, ``006``),
  ``Onset``, ``Apex Frame`` (the release's header; ``Apex`` too), ``Offset``, ``Type``
  (``Macro``, ``Micro - 1/2``); ``Duration`` and the notes are not read (``Duration`` is a
  formula). An apex of -1 or an empty one is unknown. fps 200, snippet 32.
* **CAS(ME)^3** part A, published as two workbooks without a type column,
  ``cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx`` (sheet ``label``: ``Subject, Filename, Onset,
  Apex, Offset, AU, Objective class, emotion``) and
  ``cas(me)3_part_A_MaE_label_JpgIndex_v2_emotion.xlsx`` (``Sheet1``: ``sub, seq, onset, apex,
  offset, emotion``), read together (``table`` a sequence; each table's type from
  ``annotation_types``, else the ``ME``/``MaE`` token of its file name with a warning); or one
  table (``.xls``, ``.xlsx`` or ``.csv``) with a type column ``Expression type`` / ``Type``.
  The frame numbers are jpg numbers. A video is named ``<Subject>_<Filename>``, e.g.
  ``spNO.1_a``. fps 30, snippet 8.

Header-found columns accept ``Onset Frame`` / ``Apex Frame`` / ``Offset Frame`` as well; a table
without an apex column gets a warning with its row count (every apex unknown). Messages name
fields as the table's header spells them. A row repeating an earlier row exactly (subject,
video, frames, type; also across tables) is dropped with a warning (``duplicate_row``): it would
count twice in evaluation.

Every type string whose lower-case form starts with ``micro`` is ``ME``, ``macro`` is ``MaE``
(``me`` / ``mae`` too). How the numbers become 0-based intervals is decided by the
:mod:`conventions <pwes_jax.data.conventions>` rules (frame base, rounding of fractional
frames, CAS(ME)^2's missing offsets, duration limits, rows past the video's end, excluded rows).
Every row a rule converts is a warning, every row that cannot be imported (an unknown type, a
non-numeric frame, ``onset > offset``, a row ending past the video, a row a duration limit or
``exclude_rows`` drops) is skipped with a warning; both name the table, the sheet, the row (as
Excel numbers it; a CSV's line), the video and the field, and are counted in the summary. With
``strict`` every skip is a :class:`~pwes_jax.data.layout.DatasetError` instead. A table whose
structure is wrong (no header row, missing sheets or columns) is always an error.

Features, per video, in ``features_dir`` (exactly one form per video; the sources are only
read, never modified): ``<video>.npz`` holding ``rgb`` and ``flow``; ``<video>_rgb.npy`` and
``<video>_flow.npy``; or a directory ``<video>/`` holding ``rgb.npy`` and ``flow.npy``. Each array
is ``[T, feature_dim]`` (finite), the same ``T`` for both streams. A table's video name that
matches no feature file exactly but one ignoring case (CAS(ME)^3 ``spNO.11_J`` and features
``spNO.11_j``) takes the feature file's name, with a warning.

``num_frames`` of a video comes from ``num_frames_csv`` (columns ``video,num_frames``, optional
``subject`` and ``first_frame_number``; ``launch.extract_features`` writes such a
``videos.csv``) and must then satisfy ``(num_frames - 1) // snippet_length == T``. Otherwise it
is inferred as ``T * snippet_length + 1``, raised up to ``offset + 1`` when an annotation ends
in the frames after the last full snippet. A ``first_frame_number`` recorded for a video (a
frame folder whose first images are lost, CAS(ME)^3 ``7.jpg ...``) maps the table's numbers
through it: frame ``n`` is position ``n - first_frame_number`` of the extracted video.

Negative videos, with features but no imported annotation, are imported as videos without
expressions (their false alarms count in evaluation) unless ``negative_videos`` is off. Feature
files whose names differ only in case (``spNO.11_j`` and ``spNO.11_J``) are warned about.

The output directory may not be, or lie inside, the features folder, the num_frames CSV's
folder or a table's folder (:func:`check_output_dir`; checked before anything is read).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import math
import os
import re
import string
from typing import Callable, Optional, Sequence

from absl import logging
import numpy as np

from pwes_jax.data import conventions
from pwes_jax.data import layout
from pwes_jax.data import tables

FEATURE_DIM = 1024
REPORT_FILE = "import_report.json"
WARNINGS_SHOWN_PER_RULE = 20  # terminal lines per rule; import_report.json lists them all

# Per-dataset defaults: the name written to dataset.json, fps and snippet length. The frame base
# and the other rules are in :mod:`conventions`.
DEFAULTS = {
    "casme2": dict(name="casme2", fps=30.0, snippet_length=8),
    "samm_lv": dict(name="samm_lv", fps=200.0, snippet_length=32),
    "casme3": dict(name="casme3", fps=30.0, snippet_length=8),
}


# ----------------------------------------------------------------------------------------------
# Where a row is, and what happened to it.


@dataclasses.dataclass(frozen=True)
class Where:
  """A table row: the file, the sheet (``None`` for a CSV) and the row (a CSV's line) number.

  ``fields`` pairs each field (``onset``, ``apex``, ``offset``, ``type``, ``filename``,
  ``subject``) with the table's own header spelling (``Apex Frame``, ``onset``, ...), so every
  message names a field as the table does.
  """
  file: str
  sheet: Optional[str]
  row: int
  fields: tuple = ()

  def field(self, key: str) -> str:
    """The table's header spelling of ``key`` (``key`` itself for a table without a header)."""
    return dict(self.fields).get(key, key)

  @property
  def label(self) -> str:
    """``"sheet 'x' row 7"`` (a workbook) or ``"line 7"`` (a CSV)."""
    return f"line {self.row}" if self.sheet is None else f"sheet {self.sheet!r} row {self.row}"

  @property
  def location(self) -> str:
    return self.file if self.sheet is None else f"{self.file} [sheet {self.sheet!r}]"

  def message(self, video: Optional[str], field: Optional[str], text: str) -> str:
    """``file T [sheet 'S'], video 'v', field 'f': row N: text`` (the form of every message)."""
    word = "line" if self.sheet is None else "row"
    return str(layout.error(self.location, video, field, f"{word} {self.row}: {text}"))

  def matches(self, spec: str) -> bool:
    """Whether an ``exclude_rows`` entry (``ROW``, ``SHEET!ROW`` or ``FILE!ROW``) names this row.

    ``FILE`` is the table's file name (for CSVs, which have no sheet, and to tell several
    tables apart).
    """
    sheet, _, row = spec.rpartition("!")
    sheet = sheet.strip("'\" ")
    return row.strip() == str(self.row) and (
        not sheet or sheet == self.sheet or sheet == os.path.basename(self.file))


class Report:
  """Counts per rule, warnings and skipped rows of one import; with ``strict`` a skip raises.

  Each entry is a dict ``{"rule", "file", "sheet", "row", "video", "field", "message"}``; the
  message names the table, sheet, row, video and field. Warnings go to the log too (at most
  ``WARNINGS_SHOWN_PER_RULE`` lines per rule; the report keeps all).
  """

  def __init__(self, strict: bool = False, source: str = "<import>"):
    self.strict, self.source = strict, source
    self.counts = collections.Counter()  # rule -> rows (or videos) it touched
    self.warnings, self.skipped = [], []
    self._shown = collections.Counter()

  def _entry(self, rule, where: Optional[Where], video, field, text) -> dict:
    if where is None:
      message = str(layout.error(self.source, video, field, text))
    else:
      message = where.message(video, field, text)
    return {"rule": rule, "file": None if where is None else os.path.basename(where.file),
            "sheet": None if where is None else where.sheet,
            "row": None if where is None else where.label, "video": video, "field": field,
            "message": message}

  def _log(self, rule: str, what: str, message: str) -> None:
    self._shown[rule] += 1
    if self._shown[rule] <= WARNINGS_SHOWN_PER_RULE:
      logging.warning("%s (%s): %s", what, rule, message)
    elif self._shown[rule] == WARNINGS_SHOWN_PER_RULE + 1:
      logging.warning("(more %r warnings are listed in %s only)", rule, REPORT_FILE)

  def convert(self, rule: str, where: Optional[Where], video, field, text: str) -> None:
    """A rule changed a row (or a video): counted and warned."""
    e = self._entry(rule, where, video, field, text)
    self.counts[rule] += 1
    self.warnings.append(e)
    self._log(rule, "converted", e["message"])

  def note(self, rule: str, where: Optional[Where], video, field, text: str,
           count: int = 1) -> None:
    """Something the user should know that changes no row by itself: counted and warned."""
    e = self._entry(rule, where, video, field, text)
    self.counts[rule] += count
    self.warnings.append(e)
    self._log(rule, "warning", e["message"])

  def skip(self, rule: str, where: Optional[Where], video, field, text: str) -> None:
    """A row (or a video) is left out: counted and warned, or with ``strict`` an error."""
    e = self._entry(rule, where, video, field, text)
    if self.strict:
      raise layout.DatasetError(f"{e['message']} (an error because of strict; without it the "
                                f"row is skipped by rule {rule!r})")
    self.counts[rule] += 1
    self.skipped.append(e)
    self._log(rule, "skipped", e["message"])


class _SkipRow(Exception):
  """Raised inside a reader after :meth:`Report.skip` to go on with the next row."""


@dataclasses.dataclass(frozen=True)
class RawRow:
  """A table row as read: frame numbers as the table has them (int, float or None)."""
  where: Where
  subject: str
  video: str
  onset: object
  apex: object
  offset: object
  kind: str


@dataclasses.dataclass(frozen=True)
class Row:
  """One converted annotation (0-based), where it came from and the table's frame base."""
  annotation: layout.Annotation
  where: Where
  base: int = 0


@dataclasses.dataclass(frozen=True)
class Parsed:
  """A converted table: annotation rows, the rules applied and the report of what they did."""
  rows: tuple
  rules: conventions.Rules
  report: Report
  tables: tuple = ()  # per table: {file, sheet, rows, type_from[, columns]}

  @property
  def annotations(self) -> list:
    return [r.annotation for r in self.rows]

  @property
  def skipped(self) -> list:
    return self.report.skipped

  @property
  def warnings(self) -> list:
    return self.report.warnings


# ----------------------------------------------------------------------------------------------
# Cells.


def expression_type(value) -> Optional[str]:
  """Maps a table's type cell to ``"ME"`` or ``"MaE"``; None when it is neither.

  Case, spaces, ``-`` and ``_`` are ignored; ``micro...`` / ``me`` is ``ME`` and ``macro...`` /
  ``mae`` is ``MaE`` (so ``"Micro - 1/2"``, ``"micro-expression"`` and ``"MACRO"`` all map).
  """
  s = re.sub(r"[\s_\-]", "", tables.text(value).lower())
  if s.startswith("micro") or s == "me":
    return "ME"
  if s.startswith("macro") or s == "mae":
    return "MaE"
  return None


def _type(value, where: Where, video, field: str, report: Report) -> str:
  kind = expression_type(value)
  if kind is None:
    report.skip("unknown_type", where, video, field, f"unknown expression type {value!r} "
                "(expected a micro- or macro-expression label)")
    raise _SkipRow
  return kind


def _number(value, where: Where, video, field: str, report: Report, *, optional=False):
  """A frame cell as a number (int or float); None for an empty optional cell."""
  if value is None and optional:
    return None
  n = tables.as_number(value)
  if n is None:
    report.skip("not_a_frame", where, video, field, "empty frame number" if value is None
                else f"not a frame number: {value!r}")
    raise _SkipRow
  return n


def _header_index(rows: list, required: Sequence[Sequence[str]], max_scan: int = 50):
  """Finds the header row: the first row holding one alias of each ``required`` group."""
  for i, row in enumerate(rows[:max_scan]):
    names = [tables.norm(c) for c in row]
    if all(any(a in names for a in group) for group in required):
      return i, names
  return None, None


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
    nums = [tables.as_int(c) for i, c in enumerate(row)
            if i != ids[0] and not isinstance(c, str) and tables.as_int(c) is not None]
    nums += [int(c) for i, c in enumerate(row)
             if i != ids[0] and isinstance(c, str) and re.fullmatch(r"\d+", c)]
    if nums:
      out[nums[-1]] = row[ids[0]].lower()
  if not out:
    raise layout.error(f"{path} [sheet {sheet!r}]", None, None, "no subject naming rows (a cell "
                       "like 's15' beside its participant number) found")
  return out


def _casme2_codes(path: str, sheet: str, rows: list) -> dict:
  """Sheet 3: video code name (lower-case, e.g. ``anger1``) -> numeric code (``0401``)."""
  out = {}
  for row in rows:
    code, name = None, None
    for c in row:
      if c is None:
        continue
      if code is None and not isinstance(c, str) and tables.as_int(c) is not None:
        code = f"{tables.as_int(c):04d}"  # A numeric cell lost its leading zero: 401 -> "0401".
      elif code is None and isinstance(c, str) and re.fullmatch(r"\d+", c):
        code = c.zfill(4)
      elif name is None and isinstance(c, str) and not re.fullmatch(r"[\d.]+", c):
        name = c
    if code is not None and name is not None:
      out[name.lower()] = code
  if not out:
    raise layout.error(f"{path} [sheet {sheet!r}]", None, None, "no video naming rows (a "
                       "numeric code such as '0401' beside a code name such as 'anger1') found")
  return out


_CASME2_PATH = re.compile(r"(?:^|[/\\])([sS]\d+)[/\\](\d+)_(\d{4})[^/\\]*$")


def _casme2_video_name(fmt: str, subject: str, code: str, code_name: str) -> str:
  try:
    return fmt.format(subject=subject, subject_number=subject.lstrip("s"), code=code,
                      code_name=code_name)
  except (KeyError, IndexError, ValueError) as e:
    raise ValueError(f"bad video_name_format {fmt!r} ({e}); fields: subject, subject_number, "
                     f"code, code_name") from None


def read_casme2_rows(path: str, report: Report, table_type: Optional[str] = None, *,
                     video_name_format: str = "{subject}_{code}") -> tuple:
  """Reads the CAS(ME)^2 table (workbook with naming sheets, or the CSV with a path column).

  Returns ``(rows, table info)``. The type is column 8's; ``table_type`` must be None.
  """
  if table_type is not None:
    raise ValueError(f"{path}: a CAS(ME)^2 table has its type in column 8; annotation_types "
                     "applies to tables without a type column (samm_lv, casme3)")
  sheets = tables.read_table(path)
  is_csv = sheets[0][0] is None
  if not is_csv:
    if len(sheets) < 3:
      raise layout.error(path, None, None, f"expected 3 sheets (codes, subject naming, video "
                         f"naming), found {len(sheets)}: {[s for s, _ in sheets]}")
    subjects = _casme2_subjects(path, *sheets[1])
    codes = _casme2_codes(path, *sheets[2])
  sheet, rows = sheets[0]
  out = []
  for row_no, row in enumerate(rows, start=1):
    if tables.is_empty(row):
      continue
    where = Where(path, sheet, row_no, (("filename", "video"),))
    if tables.as_number(tables.cell(row, 2)) is None and "onset" in tables.norm(
        tables.cell(row, 2)):
      continue  # A header row.
    try:
      raw_name = tables.text(tables.cell(row, 1))
      m = re.fullmatch(r"(.+?)_\d+", raw_name)
      code_name = (m.group(1) if m else raw_name).lower()
      if is_csv:
        path_cell = tables.text(tables.cell(row, 10))
        pm = _CASME2_PATH.search(path_cell.strip())
        if not pm:
          report.skip("bad_video", where, None, "path", f"{path_cell!r} is not a video path "
                      "like 's15/15_0401girlcrashing' (column 11)")
          raise _SkipRow
        subject, code = pm.group(1).lower(), pm.group(3)
      else:
        participant = tables.as_int(tables.cell(row, 0))
        if participant is None or participant not in subjects:
          report.skip("bad_video", where, None, "participant", f"participant "
                      f"{tables.cell(row, 0)!r} not in the subject naming sheet "
                      f"{sheets[1][0]!r} (knows {sorted(subjects)})")
          raise _SkipRow
        subject = subjects[participant]
        if code_name not in codes:
          report.skip("bad_video", where, None, "video", f"video code name {raw_name!r} not in "
                      f"the video naming sheet {sheets[2][0]!r}")
          raise _SkipRow
        code = codes[code_name]
      video = _casme2_video_name(video_name_format, subject, code, code_name)
      onset = _number(tables.cell(row, 2), where, video, "onset", report)
      apex = _number(tables.cell(row, 3), where, video, "apex", report, optional=True)
      offset = _number(tables.cell(row, 4), where, video, "offset", report)
      kind = _type(tables.cell(row, 7), where, video, "type", report)
    except _SkipRow:
      continue
    out.append(RawRow(where, subject, video, onset, apex, offset, kind))
  info = {"file": os.path.abspath(path), "sheet": sheet, "rows": len(out),
          "type_from": "column 8"}
  return out, info


def casme2_subject_of(video_name_format: str = "{subject}_{code}") -> Callable:
  """The subject of a CAS(ME)^2 video name made by ``video_name_format`` (None if it is not)."""
  parts = []
  for literal, field, _, _ in string.Formatter().parse(video_name_format):
    parts.append(re.escape(literal))
    if field == "subject":
      parts.append(r"(?P<subject>[sS]\d+)")
    elif field == "subject_number":
      parts.append(r"(?P<subject_number>\d+)")
    elif field == "code":
      parts.append(r"\d{4}")
    elif field is not None:
      parts.append(r".+?")
  pattern = re.compile("".join(parts))

  def subject_of(video: str) -> Optional[str]:
    m = pattern.fullmatch(video)
    if not m:
      return None
    d = m.groupdict()
    return d["subject"].lower() if d.get("subject") else f"s{d['subject_number']}"
  return subject_of


# ----------------------------------------------------------------------------------------------
# SAMM-LV and CAS(ME)^3: one sheet with a header row.

_SUBJECT = ("subject", "sub")
_FILENAME = ("filename", "seq")
_ONSET = ("onset", "onset frame")
_APEX = ("apex", "apex frame")
_OFFSET = ("offset", "offset frame")
_TYPE = ("type", "expression type", "expression")
_TYPE_TOKENS = {"me": "ME", "mae": "MaE"}


def type_from_file_name(path: str) -> Optional[str]:
  """``"ME"`` / ``"MaE"`` from an ``ME`` / ``MaE`` token of a table's file name, else None.

  Tokens are the parts of the name (without extension) between ``_``, ``-``, ``.`` and spaces,
  case ignored: ``cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx`` is ``ME`` and
  ``cas(me)3_part_A_MaE_label_JpgIndex_v2_emotion.xlsx`` is ``MaE`` (``cas(me)3`` is one token).

  Raises:
    layout.DatasetError: the name holds both tokens.
  """
  stem = os.path.splitext(os.path.basename(path))[0]
  kinds = {_TYPE_TOKENS[t.lower()] for t in re.split(r"[_\-.\s]+", stem)
           if t.lower() in _TYPE_TOKENS}
  if len(kinds) > 1:
    raise layout.error(path, None, None, "the file name holds both an ME and a MaE token: give "
                       "the table's type with annotation_types")
  return kinds.pop() if kinds else None


def _header_sheet(path: str):
  """The first sheet with a Subject/Filename header: ``(sheet, header_row_index, names, rows)``."""
  for sheet, rows in tables.read_table(path):
    i, names = _header_index(rows, (_SUBJECT, _FILENAME))
    if i is not None:
      return sheet, i, names, rows
  raise layout.error(path, None, None, "no sheet has a header row with 'Subject' and "
                     "'Filename' columns")


def _table_rows(path, sheet, start: int, rows: list, cols: dict, fields: tuple):
  """Yields ``(where, row)`` for data rows; rows with no file name and no onset are notes."""
  for i in range(start, len(rows)):
    row = rows[i]
    if tables.is_empty(row):
      continue
    if tables.cell(row, cols["filename"]) is None and tables.cell(row, cols["onset"]) is None:
      continue  # A note or footer (e.g. a merged note cell), not an annotation row.
    yield Where(path, sheet, i + 1, fields), row


def _read_header_table(path: str, report: Report, name_of: Callable,
                       table_type: Optional[str]) -> tuple:
  """Reads a table with a header row (SAMM-LV, CAS(ME)^3); ``(rows, table info)``.

  The columns are found by header (case, spaces and ``_`` ignored): ``Subject``/``sub``,
  ``Filename``/``seq``, ``Onset``/``Onset Frame``, ``Offset``/``Offset Frame``, optionally
  ``Apex``/``Apex Frame`` and ``Type``/``Expression type``. Without a type column every row
  has ``table_type`` (the user's), else the type of the file name's ``ME``/``MaE`` token (a
  warning says so); with neither the table is an error. ``name_of(cells, where)`` gives
  ``(subject, video)`` or skips the row.
  """
  sheet, h, names, rows = _header_sheet(path)
  header_cells = rows[h]
  cols, fields = {}, []
  for key, aliases, label in (("subject", _SUBJECT, "Subject"), ("filename", _FILENAME, "Filename"),
                              ("onset", _ONSET, "Onset"), ("apex", _APEX, None),
                              ("offset", _OFFSET, "Offset"), ("type", _TYPE, None)):
    i = _column(names, aliases)
    if i is None and label is not None:
      where = Where(path, sheet, h + 1)
      raise layout.DatasetError(where.message(None, label, f"column missing from the header "
                                              f"(one of {aliases}); header is "
                                              f"{[n for n in names if n]}"))
    cols[key] = i
    if i is not None:
      fields.append((key, tables.text(header_cells[i])))
  fields = tuple(fields)
  header = Where(path, sheet, h + 1, fields)
  fixed, type_from = None, None
  if cols["type"] is not None:
    type_from = f"column {header.field('type')!r}"
    if table_type is not None:
      report.note("annotation_type_ignored", header, None, header.field("type"), "the table has "
                  f"a type column: its types are used, the type given for the table "
                  f"({table_type}) is ignored")
  elif table_type is not None:
    fixed, type_from = table_type, "annotation_types"
  else:
    fixed = type_from_file_name(path)
    if fixed is None:
      raise layout.DatasetError(header.message(None, None, f"no expression type: the table has "
                                               f"no type column (one of {_TYPE}) and its file "
                                               "name no ME / MaE token; give its type with "
                                               "annotation_types (me or mae, one per table)"))
    type_from = "file name"
  out = []
  for where, row in _table_rows(path, sheet, h + 1, rows, cols, fields):
    try:
      subject, video = name_of(row, cols, where)
      onset = _number(tables.cell(row, cols["onset"]), where, video, where.field("onset"),
                      report)
      apex = _number(tables.cell(row, cols["apex"]), where, video, where.field("apex"), report,
                     optional=True)
      offset = _number(tables.cell(row, cols["offset"]), where, video, where.field("offset"),
                       report)
      kind = fixed or _type(tables.cell(row, cols["type"]), where, video, where.field("type"),
                            report)
    except _SkipRow:
      continue
    out.append(RawRow(where, subject, video, onset, apex, offset, kind))
  if type_from == "file name":
    report.note("type_from_file_name", header, None, None, f"no type column: the {len(out)} "
                f"row(s) of this table are typed {fixed} from the file name's {fixed} token (say "
                "so with annotation_types to silence this)", count=len(out))
  elif type_from == "annotation_types":
    report.counts["type_given"] += len(out)
  if cols["apex"] is None:
    report.note("no_apex_column", header, None, None, f"no apex column (one of {_APEX}): the "
                f"apex of all {len(out)} row(s) is unknown", count=len(out))
  info = {"file": os.path.abspath(path), "sheet": sheet, "rows": len(out), "type_from": type_from,
          "columns": dict(fields)}
  return out, info


def read_samm_lv_rows(path: str, report: Report, table_type: Optional[str] = None) -> tuple:
  """Reads the SAMM-LV table (header row found by 'Subject' and 'Filename')."""

  def name_of(row, cols, where):
    name = tables.text(tables.cell(row, cols["filename"]))
    parts = name.split("_")
    if len(parts) < 2 or not all(parts[:2]):
      report.skip("bad_video", where, None, where.field("filename"), f"{name!r} is not "
                  "<subject>_<video>[_<n>]")
      raise _SkipRow
    return parts[0], "_".join(parts[:2])
  return _read_header_table(path, report, name_of, table_type)


def samm_lv_subject_of(video: str) -> Optional[str]:
  """``006_1`` -> ``006``."""
  return video.split("_")[0] if "_" in video and video.split("_")[0] else None


def read_casme3_rows(path: str, report: Report, table_type: Optional[str] = None) -> tuple:
  """Reads a CAS(ME)^3 part A table (one with a type column, or the ME / MaE workbooks)."""

  def name_of(row, cols, where):
    subject = tables.text(tables.cell(row, cols["subject"]))
    filename = tables.text(tables.cell(row, cols["filename"]))
    if not subject or not filename:
      report.skip("bad_video", where, None, where.field("subject" if not subject else "filename"),
                  "empty subject" if not subject else "empty file name")
      raise _SkipRow
    return subject, f"{subject}_{filename}"
  return _read_header_table(path, report, name_of, table_type)


def casme3_subject_of(video: str) -> Optional[str]:
  """``spNO.1_a`` -> ``spNO.1``."""
  return video.rsplit("_", 1)[0] if "_" in video and video.rsplit("_", 1)[0] else None


# ----------------------------------------------------------------------------------------------
# The rules.


def round_frame(value, rounding: str) -> int:
  """A table's frame number as an int: ``half_up`` (``566.5 -> 567``) or ``floor``.

  Float noise such as ``566.4000000000001`` or ``566.9999999999999`` is first taken to 9 decimal
  places, so ``floor`` gives 566 and 567.
  """
  if isinstance(value, int):
    return value
  v = round(float(value), 9)
  return int(math.floor(v + 0.5)) if rounding == "half_up" else int(math.floor(v))


def _fields_text(fields: dict) -> str:
  return ", ".join(f"{k} {v[0]!r} -> {v[1]}" for k, v in fields.items())


def convert_row(raw: RawRow, rules: conventions.Rules, dataset: str,
                report: Report) -> Optional[Row]:
  """Applies the table rules to one row; returns the 0-based :class:`Row`, or None if skipped.

  In order: ``exclude_rows``; ``frame_rounding``; an apex below the frame base is unknown;
  CAS(ME)^2 ``missing_offset`` (offset 0) and ``offset_at_or_before_apex``; a MaE whose onset
  is below the frame base is dropped under ``onset0_macro='drop'`` (the MEGC baseline's
  SAMM-LV reader); an onset below the frame base is otherwise clamped to it (SAMM-LV onset 0);
  ``onset > offset`` is skipped; an apex outside the interval is dropped; ``max_me_frames`` /
  ``max_mae_frames``. Messages give the table's numbers and its own field names.
  """
  w, v, base = raw.where, raw.video, rules.frame_base
  if any(w.matches(s) for s in rules.exclude_rows):
    report.skip("exclude_rows", w, v, None, "row named in exclude_rows")
    return None
  names = {"onset": raw.onset, "apex": raw.apex, "offset": raw.offset}
  label = {k: w.field(k) for k in names}
  rounded = {}
  for k, val in names.items():
    if val is not None and not isinstance(val, int):
      rounded[k] = (val, round_frame(val, rules.frame_rounding))
  if rounded:
    report.convert("frame_rounding", w, v, label[next(iter(rounded))],
                   f"fractional frame(s) rounded {rules.frame_rounding}: "
                   f"{_fields_text({label[k]: x for k, x in rounded.items()})}")
  onset, apex, offset = (rounded[k][1] if k in rounded else names[k] for k in names)
  if apex is not None and apex != -1 and apex < base:
    report.convert("apex_unknown", w, v, label["apex"], f"apex {apex} is below the first frame "
                   f"number {base}: unknown")
  if apex is None or apex < base:
    apex = None
  if dataset == "casme2":
    replacement = None
    if offset == 0:
      rule, why = "missing_offset", "offset 0 (not coded)"
    elif apex is not None and offset <= apex and rules.offset_at_or_before_apex == "missing":
      rule, why = "offset_at_or_before_apex", f"offset {offset} <= apex {apex}"
    else:
      rule = None
    if rule is not None:
      if apex is None:
        report.skip(rule, w, v, label["offset"], f"{why} and no apex to take it from")
        return None
      replacement = apex + (20 if rules.missing_offset == "apex+20" else 0)
      report.convert(rule, w, v, label["offset"], f"{why}: offset set to "
                     f"{rules.missing_offset} = {replacement}")
      offset = replacement
  if onset < base <= offset and raw.kind == "MaE" and rules.onset0_macro == "drop":
    report.skip("onset0_macro", w, v, label["onset"], f"MaE with onset {onset} below the first "
                f"frame number {base} left out (onset0_macro drop: the MEGC baseline's SAMM-LV "
                "reader ignores these extremely long samples)")
    return None
  if onset < base <= offset:
    report.convert("onset_clamped", w, v, label["onset"], f"onset {onset} is below the first "
                   f"frame number {base}: clamped to {base}")
    onset = base
  if onset > offset:
    report.skip("implausible_interval", w, v, label["offset"], f"onset {onset} > offset {offset}")
    return None
  if offset < base:
    report.skip("implausible_interval", w, v, label["offset"], f"offset {offset} is below the "
                f"first frame number {base}")
    return None
  if apex is not None and not onset <= apex <= offset:
    why = (f"implausible interval: offset {offset} < apex {apex}" if apex > offset else
           f"apex {apex} before onset {onset}")
    report.convert("apex_dropped", w, v, label["apex"], f"{why}; apex dropped")
    apex = None
  limit = rules.max_me_frames if raw.kind == "ME" else rules.max_mae_frames
  if limit is not None and offset - onset > limit:
    rule = "max_me_frames" if raw.kind == "ME" else "max_mae_frames"
    report.skip(rule, w, v, None, f"{raw.kind} lasts offset - onset = {offset - onset} frames "
                f"> {rule} {limit}")
    return None
  ann = layout.Annotation(raw.subject, v, onset - base, -1 if apex is None else apex - base,
                          offset - base, raw.kind)
  return Row(ann, w, base)


READERS = {"casme2": read_casme2_rows, "samm_lv": read_samm_lv_rows, "casme3": read_casme3_rows}


def table_paths(path) -> list:
  """``path`` as a list of tables: a str is one table, a sequence several."""
  paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
  if not paths:
    raise ValueError("no annotation table given")
  return [os.fspath(p) for p in paths]


def table_types(types, n: int) -> list:
  """The user's per-table types (``me``, ``mae``, ``auto``/empty) as ``ME``, ``MaE`` or None.

  Raises:
    ValueError: a count other than one per table, or an unknown type.
  """
  if types is None:
    return [None] * n
  types = list(types)
  if len(types) != n:
    raise ValueError(f"annotation_types gives {len(types)} type(s) for {n} table(s); give one "
                     "per table, in the same order (me, mae or auto)")
  out = []
  for t in types:
    t = (t or "").strip()
    if t.lower() in ("", "auto"):
      out.append(None)
    elif expression_type(t) is None:
      raise ValueError(f"annotation_types entry {t!r} is not me, mae or auto")
    else:
      out.append(expression_type(t))
  return out


def _drop_duplicates(raw: list, report: Report) -> list:
  """Drops rows that repeat an earlier row exactly (same subject, video, frames and type)."""
  first, out = {}, []
  for r in raw:
    key = (r.subject, r.video, r.onset, r.apex, r.offset, r.kind)
    if key in first:
      w = first[key]
      if (w.file, w.sheet) == (r.where.file, r.where.sheet):
        where = f"{'line' if w.sheet is None else 'row'} {w.row}"
      else:
        where = f"{w.label} of {w.file}"
      report.skip("duplicate_row", r.where, r.video, None, f"the same row as {where} (video, "
                  "frames and type): dropped, it would count twice")
      continue
    first[key] = r.where
    out.append(r)
  return out


def read_table(dataset: str, path, rules: Optional[conventions.Rules] = None, *,
               report: Optional[Report] = None, types=None, **reader_kwargs) -> Parsed:
  """Reads and converts a dataset's annotation table(s).

  Args:
    dataset: ``casme2``, ``samm_lv`` or ``casme3``.
    path: the table (``.xlsx``, ``.xls`` or ``.csv``), or a sequence of tables read as one
      (CAS(ME)^3 part A's ``..._ME_label_JpgIndex_v2.xlsx`` and
      ``..._MaE_label_JpgIndex_v2_emotion.xlsx``).
    rules: the rules (default: the ``megc`` convention's for ``dataset``).
    report: collects counts, warnings and skipped rows (default: a new one with
      ``rules.strict``).
    types: one expression type per table (``me``, ``mae``, or ``auto``/None for a table with a
      type column or an ``ME``/``MaE`` token in its file name); see :func:`_read_header_table`.
    **reader_kwargs: ``video_name_format`` for CAS(ME)^2.

  Returns:
    The :class:`Parsed` table (0-based annotations). A row repeating an earlier one exactly
    (also across tables) is dropped with a warning (rule ``duplicate_row``).

  Raises:
    layout.DatasetError: a table of the wrong structure, one without a type from any source;
      with ``rules.strict`` any skipped row.
    ValueError: an ``exclude_rows`` entry that names no row (or rows of several tables), a
      wrong ``types``.
  """
  paths = table_paths(path)
  kinds = table_types(types, len(paths))
  rules = rules or conventions.resolve("megc", dataset)
  report = report or Report(rules.strict, ", ".join(paths))
  raw, infos = [], []
  for p, kind in zip(paths, kinds):
    rows, info = READERS[dataset](p, report, kind, **reader_kwargs)
    raw += rows
    infos.append(info)
  for spec in rules.exclude_rows:
    if not re.fullmatch(r"(?:.+!)?\s*\d+\s*", spec):
      raise ValueError(f"exclude_rows entry {spec!r} is not ROW, SHEET!ROW or FILE!ROW")
    hit = {r.where.file for r in raw if r.where.matches(spec)}
    if not hit:
      raise ValueError(f"exclude_rows entry {spec!r} names no annotation row of "
                       f"{', '.join(paths)}")
    if len(hit) > 1:
      raise ValueError(f"exclude_rows entry {spec!r} names rows of several tables "
                       f"({', '.join(sorted(hit))}); write SHEET!ROW or FILE!ROW")
  raw = _drop_duplicates(raw, report)
  rows = [r for r in (convert_row(x, rules, dataset, report) for x in raw) if r is not None]
  return Parsed(tuple(rows), rules, report, tuple(infos))


def _rules(dataset: str, frame_base: Optional[int], strict: bool = False) -> conventions.Rules:
  return conventions.resolve("megc", dataset, frame_base=frame_base, strict=strict or None)


def parse_casme2(path: str, *, frame_base: Optional[int] = None, strict: bool = False,
                 **kwargs) -> list:
  """CAS(ME)^2 table -> ``list[layout.Annotation]`` (0-based frames, ``megc`` rules)."""
  return read_table("casme2", path, _rules("casme2", frame_base, strict), **kwargs).annotations


def parse_samm_lv(path: str, *, frame_base: Optional[int] = None, strict: bool = False) -> list:
  """SAMM-LV table -> ``list[layout.Annotation]`` (0-based frames, ``megc`` rules)."""
  return read_table("samm_lv", path, _rules("samm_lv", frame_base, strict)).annotations


def parse_casme3(path: str, *, frame_base: Optional[int] = None, strict: bool = False) -> list:
  """CAS(ME)^3 part A table -> ``list[layout.Annotation]`` (0-based frames, ``megc`` rules)."""
  return read_table("casme3", path, _rules("casme3", frame_base, strict)).annotations


SUBJECT_OF = {"samm_lv": samm_lv_subject_of, "casme3": casme3_subject_of}


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
    elif entry.endswith(".npz"):
      names.add(entry[:-4])
    elif entry.endswith("_rgb.npy") or entry.endswith("_flow.npy"):
      names.add(entry.rsplit("_", 1)[0])
  return sorted(names)


def _lookup(name: str, names, what: str) -> tuple:
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


def _table_numbers(row: Row) -> str:
  a = row.annotation
  return f"[{a.onset + row.base}, {a.offset + row.base}]"


def _map_numbering(vrows: list, record: Optional[VideoRecord], rules, report: Report) -> list:
  """Maps rows through a recorded ``first_frame_number`` (frame ``n`` is position ``n - first``)."""
  if record is None or record.first_frame_number is None:
    return vrows
  shift = rules.frame_base - record.first_frame_number
  if shift == 0 or not vrows:
    return vrows
  video = vrows[0].annotation.video
  report.counts["first_frame_number"] += len(vrows)
  logging.warning("video %r: its frame files start at number %d (first_frame_number in the "
                  "num_frames CSV, line %d): %d annotation(s) mapped through it", video,
                  record.first_frame_number, record.line, len(vrows))
  out = []
  for r in vrows:
    a = r.annotation
    on, off = a.onset + shift, a.offset + shift
    apex = a.apex + shift if a.apex >= 0 else -1
    if off < 0:
      report.skip("lost_frames", r.where, video, r.where.field("offset"), f"interval "
                  f"{_table_numbers(r)} lies before the first frame file (number "
                  f"{record.first_frame_number}): its frames are lost")
      continue
    if on < 0:
      report.convert("lost_frames", r.where, video, r.where.field("onset"), f"onset "
                     f"{a.onset + r.base} is before the first frame file (number "
                     f"{record.first_frame_number}): clamped to it")
      on = 0
      apex = apex if apex >= 0 else -1
    out.append(dataclasses.replace(r, annotation=dataclasses.replace(
        a, onset=on, apex=apex, offset=off), base=record.first_frame_number))
  return out


def _past_end(vrows: list, last: int, exact: bool, rules, report: Report) -> list:
  """Skips (or with ``past_end='clip'`` clips) rows ending after 0-based frame ``last``."""
  out = []
  for r in vrows:
    a = r.annotation
    if a.offset <= last:
      out.append(r)
      continue
    end = (f"the video's last frame {last + r.base}" if exact else
           f"the last frame the features can hold ({last + r.base}; pass num_frames_csv for "
           "the exact count)")
    if rules.past_end == "clip" and a.onset <= last:
      report.convert("past_end", r.where, a.video, r.where.field("offset"), f"offset "
                     f"{a.offset + r.base} is past {end}: clipped to it")
      apex = a.apex if a.apex <= last else -1
      out.append(dataclasses.replace(r, annotation=dataclasses.replace(a, offset=last,
                                                                        apex=apex)))
    else:
      report.skip("past_end", r.where, a.video, r.where.field("offset"), f"interval "
                  f"{_table_numbers(r)} ends past {end}")
  return out


def _num_frames(video: str, t: int, snippet_length: int, last_offset: int,
                record: Optional[VideoRecord], csv_path: Optional[str]) -> tuple:
  """``(num_frames, inferred)`` for one video with ``t`` snippets."""
  if record is not None:
    n = record.num_frames
    if (n - 1) // snippet_length != t:
      raise layout.error(csv_path, video, "num_frames", f"{n} frames give "
                         f"{(n - 1) // snippet_length} snippets of {snippet_length}, but the "
                         f"features have {t}")
    return n, False
  return max(t * snippet_length + 1, last_offset + 1), True


# ----------------------------------------------------------------------------------------------
# Importing.


def import_parsed(parsed: Parsed, features_dir: str, output_dir: str, *, name: str, fps: float,
                  snippet_length: int, source: str, num_frames_csv: Optional[str] = None,
                  skip_missing: bool = False, feature_dim: int = FEATURE_DIM,
                  subject_of: Optional[Callable] = None,
                  resample: Optional[tuple] = None) -> dict:
  """Writes a converted table plus the user's features as a dataset directory.

  Per video the rows are mapped through a recorded ``first_frame_number`` (source frames), then
  with ``resample = (source_fps, fps)`` to the resampled video's frames (:func:`resample_interval`;
  ``dataset.json`` then gets ``fps``), then checked against the video's end.

  Everything is read and checked before anything is written; existing output files are never
  replaced (``FileExistsError``) and nothing is written outside ``output_dir``, which may not
  be, or lie inside, the features folder, the num_frames CSV's folder or a table's folder
  (``ValueError``). ``source`` is the table's path or a sequence of them. Returns the summary
  (see :func:`import_casme2`), also written to ``output_dir/import_report.json``.
  """
  rules, report = parsed.rules, parsed.report
  sources = table_paths(source)
  if not os.path.isdir(features_dir):
    raise layout.error(features_dir, None, None, "features directory missing")
  check_output_dir(output_dir, features_dir, num_frames_csv, sources)
  _refuse_existing([os.path.join(output_dir, n) for n in
                    ("dataset.json", "videos.csv", "annotations.csv", REPORT_FILE)])
  records = read_video_records(num_frames_csv) if num_frames_csv else None
  available = feature_names(features_dir)
  _warn_case_clashes(available, features_dir, report)

  # Annotated videos, matched to feature files (ignoring case when needed).
  by_video, renamed, table_subject = {}, {}, {}
  for r in parsed.rows:
    video = r.annotation.video
    if video not in renamed:
      match, was_renamed = _lookup(video, available, "feature files")
      renamed[video] = match
      if was_renamed:
        report.convert("video_renamed", r.where, video, r.where.field("filename"),
                       f"no features named {video!r}; using {match!r} (same name ignoring case)")
    match = renamed[video]
    if match is None:
      if not skip_missing:
        raise layout.error(features_dir, video, None, f"no features for this annotated video "
                           f"({r.where.message(video, None, 'first row')}); expected "
                           f"{video}.npz, {video}_rgb.npy + {video}_flow.npy, or "
                           f"{video}/rgb.npy + flow.npy (or skip_missing)")
      report.skip("no_features", r.where, video, None, "no features for the video")
      continue
    if match != video:
      r = dataclasses.replace(r, annotation=dataclasses.replace(r.annotation, video=match))
    by_video.setdefault(match, []).append(r)
    table_subject.setdefault(match, r.annotation.subject)

  def record_of(video):
    if records is None:
      return None
    key, was_renamed = _lookup(video, records, "num_frames CSV lines")
    if key is None:
      raise layout.error(num_frames_csv, video, "video", "not listed in the num_frames CSV")
    if was_renamed:
      logging.warning("video %r: listed as %r in %s (same name ignoring case)", video, key,
                      num_frames_csv)
    return records[key]

  # Pass 1: check every video's features and frame count.
  videos, inferred, rows = [], [], []
  for video, vrows in by_video.items():
    subjects = {r.annotation.subject for r in vrows}
    if len(subjects) > 1:
      raise layout.DatasetError(f"{source}: video {video!r}: rows disagree on the subject "
                                f"{sorted(subjects)} ({', '.join(r.where.label for r in vrows)})")
    record = record_of(video)
    t = load_source_features(features_dir, video, feature_dim)[0].shape[0]
    vrows = _map_numbering(vrows, record, rules, report)
    if resample is not None:
      vrows = list(resample_parsed(Parsed(tuple(vrows), rules, report), *resample).rows)
    last = record.num_frames - 1 if record else (t + 1) * snippet_length - 1
    vrows = _past_end(vrows, last, record is not None, rules, report)
    n, was_inferred = _num_frames(video, t, snippet_length,
                                  max([r.annotation.offset for r in vrows], default=0), record,
                                  num_frames_csv)
    if was_inferred:
      inferred.append(video)
    videos.append(layout.Video(vrows[0].annotation.subject if vrows else subjects.pop(), video,
                               n))
    rows += sorted(vrows, key=lambda r: (r.annotation.onset, r.annotation.offset))

  # Negative videos: features (or a num_frames CSV line with features) but no annotation.
  annotated = {r.annotation.video for r in rows}
  videos = [v for v in videos if v.video in annotated]  # all of a video's rows may be skipped
  negatives, unused = [], []
  candidates = sorted(set(available) - annotated)
  for video in candidates:
    if not rules.negative_videos:
      unused.append(video)
      continue
    record = None
    if records is not None:
      key = _lookup(video, records, "num_frames CSV lines")[0]
      if key is None:
        report.skip("negative_video", None, video, "video", f"features but no annotation, and "
                    f"not listed in {num_frames_csv}: not imported")
        unused.append(video)
        continue
      record = records[key]
    subject = (table_subject.get(video) or (record.subject if record else None)
               or (subject_of(video) if subject_of else None))
    if not subject:
      report.skip("negative_video", None, video, "subject", "features but no annotation, and "
                  "no subject: name it in the num_frames CSV's subject column")
      unused.append(video)
      continue
    t = load_source_features(features_dir, video, feature_dim)[0].shape[0]
    n, was_inferred = _num_frames(video, t, snippet_length, 0, record, num_frames_csv)
    if was_inferred:
      inferred.append(video)
    negatives.append(layout.Video(subject, video, n))
  if negatives:
    report.counts["negative_videos"] = len(negatives)
    logging.info("%d video(s) with features but no annotation imported as negative videos (no "
                 "expression): %s", len(negatives), ", ".join(v.video for v in negatives[:10]))
  if records is not None:
    no_features = sorted(v for v in records
                         if _lookup(v, available, "feature files")[0] is None)
    for video in no_features:
      report.skip("no_features", None, video, None, f"listed in {num_frames_csv} but has no "
                  "features: not imported")
  videos += negatives
  if not videos:
    raise layout.DatasetError(f"{source}: no video has features in {features_dir}")
  if inferred:
    logging.info("num_frames inferred as T * %d + 1 (or up to the last annotated frame) for %d "
                 "video(s): %s", snippet_length, len(inferred), ", ".join(inferred[:10]))

  _refuse_existing([layout.feature_path(output_dir, v.video) for v in videos])

  # Pass 2: write.
  for i, v in enumerate(videos):
    rgb, flow = load_source_features(features_dir, v.video, feature_dim)
    layout.write_features(output_dir, v.video, rgb, flow)
    if (i + 1) % 50 == 0:
      logging.info("Wrote features of %d/%d videos.", i + 1, len(videos))
  recorded = rules.recorded()
  if resample is not None:
    fps = resample[1]
  info = layout.DatasetInfo(name, float(fps), int(snippet_length), int(feature_dim),
                            {"source": (os.path.basename(sources[0]) if len(sources) == 1 else
                                        [os.path.basename(p) for p in sources]),
                             "frame_base": int(rules.frame_base), "conventions": recorded})
  annotations = [r.annotation for r in rows]
  layout.write_dataset(output_dir, info, videos, annotations)
  layout.load_dataset(output_dir)  # The written directory must read back cleanly.

  summary = {
      "name": name,
      "output_dir": os.path.abspath(output_dir),
      "source": (os.path.abspath(sources[0]) if len(sources) == 1 else
                 [os.path.abspath(p) for p in sources]),
      "tables": list(parsed.tables),
      "videos": len(videos),
      "negative_videos": len(negatives),
      "subjects": len({v.subject for v in videos}),
      "ME": sum(a.type == "ME" for a in annotations),
      "MaE": sum(a.type == "MaE" for a in annotations),
      "rows_imported": len(annotations),
      "rows_skipped": len(report.skipped),
      "rule_counts": dict(sorted(report.counts.items())),
      "conventions": recorded,
      "skipped": report.skipped,
      "warnings": report.warnings,
      "num_frames_inferred": inferred,
      "unused_features": unused,
  }
  with open(os.path.join(output_dir, REPORT_FILE), "w") as f:
    json.dump(summary, f, indent=2)
  logging.info("Imported %s: %d videos (%d without expressions), %d subjects, %d ME, %d MaE; "
               "%d row(s) skipped; rules applied: %s. Details: %s", name, summary["videos"],
               len(negatives), summary["subjects"], summary["ME"], summary["MaE"],
               len(report.skipped),
               ", ".join(f"{k} {v}" for k, v in summary["rule_counts"].items()) or "none",
               os.path.join(output_dir, REPORT_FILE))
  if report.skipped:
    logging.warning("%d annotation row(s) skipped (listed in %s): %s", len(report.skipped),
                    os.path.join(output_dir, REPORT_FILE),
                    ", ".join(f"{k} {v}" for k, v in collections.Counter(
                        s["rule"] for s in report.skipped).items()))
  return summary


def check_output_dir(output_dir: str, features_dir: str, num_frames_csv: Optional[str],
                     sources: Sequence[str]) -> None:
  """Refuses an ``output_dir`` that is, or lies inside, a folder the user's sources live in.

  The folders are the features folder, the num_frames CSV's folder and each table's folder;
  also refused is a features folder that is ``output_dir/features`` (or inside it), where the
  imported features are written.

  Raises:
    ValueError: one line naming both folders; nothing has been written.
  """
  out = os.path.realpath(output_dir)
  folders = [("the features folder", features_dir)]
  if num_frames_csv:
    folders.append(("the num_frames CSV's folder", os.path.dirname(os.path.abspath(
        num_frames_csv))))
  folders += [("the folder of the table " + os.path.basename(p),
               os.path.dirname(os.path.abspath(p))) for p in sources]
  for what, folder in folders:
    f = os.path.realpath(folder)
    if out == f or out.startswith(f.rstrip(os.sep) + os.sep):
      raise ValueError(f"output_dir {output_dir} is, or lies inside, {what} ({folder}): choose "
                       "a folder outside the sources; nothing was written")
  written = os.path.join(out, "features")
  f = os.path.realpath(features_dir)
  if f == written or f.startswith(written + os.sep):
    raise ValueError(f"the features folder {features_dir} is (or lies inside) "
                     f"{os.path.join(output_dir, 'features')}, where the import writes its "
                     "features: choose another output_dir; nothing was written")


def _warn_case_clashes(available: Sequence[str], features_dir: str, report: Report) -> None:
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


def short_summary(summary: dict) -> dict:
  """The summary without its lists: totals, counts per rule, tables; for the terminal.

  The full lists (every skipped and converted row, the rules and their sources) are in
  ``import_report.json``; ``details`` says where.
  """
  keep = ("name", "output_dir", "videos", "negative_videos", "subjects", "ME", "MaE",
          "rows_imported", "rows_skipped", "rule_counts")
  out = {k: summary[k] for k in keep}
  out["convention"] = summary["conventions"]["convention"]
  out["tables"] = [{"file": os.path.basename(t["file"]), "rows": t["rows"],
                    "type_from": t["type_from"]} for t in summary["tables"]]
  out["num_frames_inferred"] = len(summary["num_frames_inferred"])
  out["unused_features"] = len(summary["unused_features"])
  out["details"] = (f"every skipped and converted row, the rules and their sources: "
                    f"{os.path.join(summary['output_dir'], REPORT_FILE)}")
  return out


def _refuse_existing(paths: Sequence[str]) -> None:
  for p in paths:
    if os.path.exists(p):
      raise FileExistsError(f"{p} exists; refusing to overwrite it")


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



def _import(key: str, path, features_dir: str, output_dir: str, *, conventions_name,
            num_frames_csv, skip_missing, frame_base, feature_dim, resample_fps=None,
            snippet_length=None, subject_of=None, reader_kwargs=None, types=None,
            **rule_overrides) -> dict:
  d = DEFAULTS[key]
  if snippet_length is not None and (isinstance(snippet_length, bool) or
                                     not isinstance(snippet_length, int) or snippet_length < 1):
    raise ValueError(f"snippet_length must be a positive number of frames, got "
                     f"{snippet_length!r}")
  rules = conventions.resolve(conventions_name, key, frame_base=frame_base, **rule_overrides)
  check_output_dir(output_dir, features_dir, num_frames_csv, table_paths(path))  # before reading
  parsed = read_table(key, path, rules, types=types, **(reader_kwargs or {}))
  resample = None
  if resample_fps is not None:
    if not resample_fps > 0:
      raise ValueError(f"resample_fps must be positive, got {resample_fps}")
    resample = (d["fps"], float(resample_fps))
  return import_parsed(parsed, features_dir, output_dir, name=d["name"], fps=d["fps"],
                       snippet_length=snippet_length or d["snippet_length"], source=path,
                       num_frames_csv=num_frames_csv, skip_missing=skip_missing,
                       feature_dim=feature_dim, subject_of=subject_of or SUBJECT_OF.get(key),
                       resample=resample)


def import_casme2(table: str, features_dir: str, output_dir: str, *, conventions: str = "megc",
                  num_frames_csv: Optional[str] = None, skip_missing: bool = False,
                  frame_base: Optional[int] = None, feature_dim: int = FEATURE_DIM,
                  video_name_format: str = "{subject}_{code}",
                  resample_fps: Optional[float] = None, snippet_length: Optional[int] = None,
                  annotation_types: Optional[Sequence[str]] = None, **rules) -> dict:
  """Imports CAS(ME)^2 (fps 30, snippet 8, frames numbered from 1).

  Args:
    table: ``CAS(ME)^2code_final.xlsx`` (or the ``.csv`` with the path column); for every
      importer also a sequence of tables read as one (rows repeated exactly are dropped).
    features_dir: the user's features, one of the accepted forms per video.
    output_dir: the dataset directory to write (existing files are never replaced).
    conventions: ``megc`` or ``lgsnet`` (:mod:`pwes_jax.data.conventions`).
    num_frames_csv: optional ``video,num_frames[,subject][,first_frame_number]`` CSV;
      otherwise num_frames is inferred.
    skip_missing: skip (with a warning) annotations of videos without features instead of
      raising.
    frame_base: the number of a video's first frame in the table (the convention's otherwise).
    feature_dim: feature width D (1024 for I3D).
    video_name_format: how a video is named from ``subject``, ``subject_number``, ``code`` and
      ``code_name``.
    resample_fps: the features were extracted from videos resampled to this frame rate
      (``launch.extract_features --fps``): intervals are mapped with :func:`resample_interval`
      and ``dataset.json`` gets this rate. The same holds for the other importers.
    snippet_length: frames per snippet of the features, if not the dataset's (8, 32 SAMM-LV);
      a positive int (``ValueError`` otherwise).
    annotation_types: one expression type per table (``me``, ``mae``, ``auto``) for tables
      without a type column (CAS(ME)^3's ``..._ME_label...`` / ``..._MaE_label...`` workbooks);
      ``auto`` (or None) takes a table's type column, else the ``ME``/``MaE`` token of its file
      name with a warning. Not for CAS(ME)^2, whose type is column 8.
    **rules: rules set on their own, overriding the convention's (``frame_rounding``,
      ``missing_offset``, ``offset_at_or_before_apex``, ``max_me_frames``, ``max_mae_frames``,
      ``past_end``, ``exclude_rows``, ``negative_videos``, ``strict``; None leaves one unset).

  Returns:
    Summary dict (also ``output_dir/import_report.json``): ``videos``, ``negative_videos``,
    ``subjects``, ``ME``, ``MaE``, ``rows_imported``, ``rows_skipped``, ``rule_counts`` (rule ->
    rows or videos it touched), ``conventions`` (the rules and their sources), ``tables`` (per
    table: file, sheet, rows read, where the type came from), ``skipped`` and
    ``warnings`` (lists of ``{rule, file, sheet, row, video, field, message}``),
    ``num_frames_inferred`` (videos) and ``unused_features`` (videos with features left out).
  """
  return _import("casme2", table, features_dir, output_dir, conventions_name=conventions,
                 num_frames_csv=num_frames_csv, skip_missing=skip_missing, frame_base=frame_base,
                 feature_dim=feature_dim, resample_fps=resample_fps,
                 snippet_length=snippet_length,
                 subject_of=casme2_subject_of(video_name_format),
                 reader_kwargs={"video_name_format": video_name_format},
                 types=annotation_types, **rules)


def import_samm_lv(table: str, features_dir: str, output_dir: str, *, conventions: str = "megc",
                   num_frames_csv: Optional[str] = None, skip_missing: bool = False,
                   frame_base: Optional[int] = None, feature_dim: int = FEATURE_DIM,
                   resample_fps: Optional[float] = None, snippet_length: Optional[int] = None,
                   annotation_types: Optional[Sequence[str]] = None, **rules) -> dict:
  """Imports SAMM-LV (fps 200, snippet 32, frames numbered from 1 as the image files are).

  Arguments and summary as in :func:`import_casme2`.
  """
  return _import("samm_lv", table, features_dir, output_dir, conventions_name=conventions,
                 num_frames_csv=num_frames_csv, skip_missing=skip_missing, frame_base=frame_base,
                 feature_dim=feature_dim, resample_fps=resample_fps,
                 snippet_length=snippet_length, types=annotation_types, **rules)


def import_casme3(table: str, features_dir: str, output_dir: str, *, conventions: str = "megc",
                  num_frames_csv: Optional[str] = None, skip_missing: bool = False,
                  frame_base: Optional[int] = None, feature_dim: int = FEATURE_DIM,
                  resample_fps: Optional[float] = None, snippet_length: Optional[int] = None,
                  annotation_types: Optional[Sequence[str]] = None, **rules) -> dict:
  """Imports CAS(ME)^3 part A (fps 30, snippet 8, jpg numbers from 0).

  Arguments and summary as in :func:`import_casme2`.
  """
  return _import("casme3", table, features_dir, output_dir, conventions_name=conventions,
                 num_frames_csv=num_frames_csv, skip_missing=skip_missing, frame_base=frame_base,
                 feature_dim=feature_dim, resample_fps=resample_fps,
                 snippet_length=snippet_length, types=annotation_types, **rules)


IMPORTERS = {"casme2": import_casme2, "samm_lv": import_samm_lv, "casme3": import_casme3}
