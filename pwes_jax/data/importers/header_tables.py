"""The readers of the tables with a header row: SAMM-LV and CAS(ME)^3.

* **SAMM-LV** ``SAMM_LongVideos_V*_Release.xlsx`` (or its CSV export): preamble rows, then the
  header row (the first row holding both ``Subject`` and ``Filename``); columns ``Filename``
  (``006_1_2``: the video is the first two parts, ``006_1``; the subject the first, ``006``),
  ``Onset``, ``Apex Frame`` (the release's header; ``Apex`` too), ``Offset``, ``Type``
  (``Macro``, ``Micro - 1/2``); ``Duration`` and the notes are not read (``Duration`` is a
  formula). An apex of -1 or an empty one is unknown. An expression's id (``exclude_rows``) is
  its ``Filename``. fps 200, snippet 32.
* **CAS(ME)^3** part A, published as two workbooks without a type column,
  ``cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx`` (sheet ``label``: ``Subject, Filename, Onset,
  Apex, Offset, AU, Objective class, emotion``) and
  ``cas(me)3_part_A_MaE_label_JpgIndex_v2_emotion.xlsx`` (``Sheet1``: ``sub, seq, onset, apex,
  offset, emotion``), read together (``table`` a sequence; each table's type from
  ``annotation_types``, else the ``ME``/``MaE`` token of its file name with a warning); or one
  table (``.xls``, ``.xlsx`` or ``.csv``) with a type column ``Expression type`` / ``Type``.
  The frame numbers are jpg numbers. A video is named ``<Subject>_<Filename>``, e.g.
  ``spNO.1_a``; an expression (``exclude_rows``) ``<Subject>_<Filename>_<Onset>``, e.g.
  ``spNO.1_a_355``. fps 30, snippet 8.

Header-found columns accept ``Onset Frame`` / ``Apex Frame`` / ``Offset Frame`` as well; a table
without an apex column gets a warning with its row count (every apex unknown). Messages name
fields as the table's header spells them.
"""

from __future__ import annotations

import os
import re
from typing import Callable, Optional

from pwes_jax.data import layout
from pwes_jax.data import tables
from pwes_jax.data.importers.rows import (RawRow, Report, Where, SkipRow, column,
                                          header_index, frame_cell, type_cell)

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
    i, names = header_index(rows, (_SUBJECT, _FILENAME))
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
                       table_type: Optional[str], id_of: Callable) -> tuple:
  """Reads a table with a header row (SAMM-LV, CAS(ME)^3); ``(rows, table info)``.

  The columns are found by header (case, spaces and ``_`` ignored): ``Subject``/``sub``,
  ``Filename``/``seq``, ``Onset``/``Onset Frame``, ``Offset``/``Offset Frame``, optionally
  ``Apex``/``Apex Frame`` and ``Type``/``Expression type``. Without a type column every row
  has ``table_type`` (the user's), else the type of the file name's ``ME``/``MaE`` token (a
  warning says so); with neither the table is an error. ``name_of(cells, where)`` gives
  ``(subject, video)`` or skips the row; ``id_of(cells, video, onset)`` the expression's id.
  """
  sheet, h, names, rows = _header_sheet(path)
  header_cells = rows[h]
  cols, fields = {}, []
  for key, aliases, label in (("subject", _SUBJECT, "Subject"), ("filename", _FILENAME, "Filename"),
                              ("onset", _ONSET, "Onset"), ("apex", _APEX, None),
                              ("offset", _OFFSET, "Offset"), ("type", _TYPE, None)):
    i = column(names, aliases)
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
      onset = frame_cell(tables.cell(row, cols["onset"]), where, video, where.field("onset"),
                         report)
      apex = frame_cell(tables.cell(row, cols["apex"]), where, video, where.field("apex"),
                        report, optional=True)
      offset = frame_cell(tables.cell(row, cols["offset"]), where, video,
                          where.field("offset"), report)
      kind = fixed or type_cell(tables.cell(row, cols["type"]), where, video,
                                where.field("type"), report)
    except SkipRow:
      continue
    out.append(RawRow(where, subject, video, onset, apex, offset, kind,
                      expression_id=id_of(row, cols, video, onset)))
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
      raise SkipRow
    return parts[0], "_".join(parts[:2])

  def id_of(row, cols, video, onset):
    return tables.text(tables.cell(row, cols["filename"]))  # 012_4_1
  return _read_header_table(path, report, name_of, table_type, id_of)


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
      raise SkipRow
    return subject, f"{subject}_{filename}"

  def id_of(row, cols, video, onset):
    number = int(onset) if float(onset).is_integer() else onset
    return f"{video}_{number}"  # spNO.1_a_355, as part A's ME clip folders are named
  return _read_header_table(path, report, name_of, table_type, id_of)


def casme3_subject_of(video: str) -> Optional[str]:
  """``spNO.1_a`` -> ``spNO.1``."""
  return video.rsplit("_", 1)[0] if "_" in video and video.rsplit("_", 1)[0] else None
