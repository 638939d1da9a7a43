"""Row bookkeeping of an import: where a row is, what happened to it, and reading its cells.

Every row a rule converts is a warning, every row that cannot be imported (an unknown type, a
non-numeric frame, ``onset > offset``, a row ending past the video, a row a duration limit or
``exclude_rows`` drops) is skipped with a warning; both name the table, the sheet, the row (as
Excel numbers it; a CSV's line), the video and the field, and are counted in the summary. With
``strict`` every skip is a :class:`~pwes_jax.data.layout.DatasetError` instead. A table whose
structure is wrong (no header row, missing sheets or columns) is always an error. Messages name
fields as the table's header spells them.

Every type string whose lower-case form starts with ``micro`` is ``ME``, ``macro`` is ``MaE``
(``me`` / ``mae`` too).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
from typing import Optional, Sequence

from absl import logging

from pwes_jax.data import conventions
from pwes_jax.data import layout
from pwes_jax.data import tables

REPORT_FILE = "import_report.json"
WARNINGS_SHOWN_PER_RULE = 20  # terminal lines per rule; import_report.json lists them all


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


class SkipRow(Exception):
  """Raised inside a reader after :meth:`Report.skip` to go on with the next row."""


@dataclasses.dataclass(frozen=True)
class RawRow:
  """A table row as read: frame numbers as the table has them (int, float or None).

  ``expression_id`` is the table's own name of the expression, which ``exclude_rows`` accepts
  besides row numbers: SAMM-LV's ``Filename`` (``012_4_1``), CAS(ME)^2's subject and code name
  (``s15_anger1_1``), CAS(ME)^3's ``<Subject>_<Filename>_<Onset>`` (``spNO.1_a_355``).
  """
  where: Where
  subject: str
  video: str
  onset: object
  apex: object
  offset: object
  kind: str
  expression_id: Optional[str] = None


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


def type_cell(value, where: Where, video, field: str, report: Report) -> str:
  """A type cell as ``"ME"`` / ``"MaE"`` (:func:`expression_type`); else the row is skipped.

  Raises:
    SkipRow: after :meth:`Report.skip` (rule ``unknown_type``).
  """
  kind = expression_type(value)
  if kind is None:
    report.skip("unknown_type", where, video, field, f"unknown expression type {value!r} "
                "(expected a micro- or macro-expression label)")
    raise SkipRow
  return kind


def frame_cell(value, where: Where, video, field: str, report: Report, *, optional=False):
  """A frame cell as a number (int or float); None for an empty optional cell.

  Raises:
    SkipRow: after :meth:`Report.skip` (rule ``not_a_frame``): an empty or non-numeric cell.
  """
  if value is None and optional:
    return None
  n = tables.as_number(value)
  if n is None:
    report.skip("not_a_frame", where, video, field, "empty frame number" if value is None
                else f"not a frame number: {value!r}")
    raise SkipRow
  return n


def header_index(rows: list, required: Sequence[Sequence[str]], max_scan: int = 50):
  """Finds the header row: the first row holding one alias of each ``required`` group.

  Returns:
    ``(index, normalised names)`` of the header row, or ``(None, None)`` if none of the first
    ``max_scan`` rows is one.
  """
  for i, row in enumerate(rows[:max_scan]):
    names = [tables.norm(c) for c in row]
    if all(any(a in names for a in group) for group in required):
      return i, names
  return None, None


def column(names: list, aliases: Sequence[str]) -> Optional[int]:
  """The index in ``names`` (a normalised header row) of the first alias present, else None."""
  for a in aliases:
    if a in names:
      return names.index(a)
  return None


# ----------------------------------------------------------------------------------------------
# The tables given.


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
