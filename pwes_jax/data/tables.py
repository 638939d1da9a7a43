"""Reading annotation tables (``.xlsx``, ``.xls``, ``.csv``) into plain rows of cells.

The datasets' annotation tables circulate as Excel workbooks and as CSV exports of them. Every
form is read into the same shape, ``[(sheet, rows)]``, so the importers handle preamble rows,
header search and cell conversion once:

* ``.xlsx`` / ``.xlsm`` through openpyxl, with the values Excel cached for formula cells
  (``data_only``; a formula never computed by Excel reads as empty); a merged cell's value sits
  in its top-left cell, the others are empty;
* ``.xls`` through xlrd; an Excel error cell (``#N/A``) reads as its text;
* ``.csv`` through the standard library (UTF-8 with or without BOM, otherwise Latin-1); one
  sheet whose name is ``None``; every cell is text, so numbers are parsed by :func:`as_number`.

Row ``i`` of a sheet's list is the table's row ``i + 1`` (Excel's row number; a CSV's line
number). Cells are ``None`` when empty; strings are stripped.
"""

from __future__ import annotations

import csv
import math
import os
import re
from typing import Optional

from pwes_jax.data import layout

TABLE_EXTENSIONS = (".xlsx", ".xlsm", ".xls", ".csv")


def clean(value):
  """A cell value with empty strings as None and strings stripped."""
  if isinstance(value, str):
    value = value.strip()
    return value or None
  return value


def _read_xlsx(path: str) -> list:
  import openpyxl  # pylint: disable=g-import-not-at-top  (only .xlsx sheets need it)
  wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
  try:
    return [(ws.title, [tuple(clean(c) for c in row) for row in ws.iter_rows(values_only=True)])
            for ws in wb.worksheets]
  finally:
    wb.close()


def _read_xls(path: str) -> list:
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
          cells.append(clean(c.value))
      rows.append(tuple(cells))
    out.append((sh.name, rows))
  return out


def _read_csv(path: str) -> list:
  for encoding in ("utf-8-sig", "latin-1"):
    try:
      with open(path, newline="", encoding=encoding) as f:
        rows = [tuple(clean(c) for c in row) for row in csv.reader(f)]
      return [(None, rows)]
    except UnicodeDecodeError:
      continue
  raise AssertionError("latin-1 decodes every byte")


def read_table(path: str) -> list:
  """Reads every sheet of an annotation table.

  Args:
    path: an ``.xlsx``/``.xlsm``, ``.xls`` or ``.csv`` file (chosen by extension, any case).

  Returns:
    ``[(sheet_name, rows)]`` in file order (``sheet_name`` is ``None`` for a CSV); ``rows`` is a
    list of tuples of cell values.

  Raises:
    layout.DatasetError: naming the file when it is missing, unreadable or of another type.
  """
  if not os.path.isfile(path):
    raise layout.error(path, None, None, "annotation table missing")
  ext = os.path.splitext(path)[1].lower()
  readers = {".xlsx": _read_xlsx, ".xlsm": _read_xlsx, ".xls": _read_xls, ".csv": _read_csv}
  if ext not in readers:
    raise layout.error(path, None, None, f"unsupported extension {ext!r} (expected one of "
                       f"{', '.join(TABLE_EXTENSIONS)})")
  try:
    return readers[ext](path)
  except layout.DatasetError:
    raise
  except Exception as e:  # noqa: BLE001 - any unreadable table becomes one clear error.
    raise layout.error(path, None, None, f"unreadable table ({type(e).__name__}: {e})") \
        from None


def is_empty(row: tuple) -> bool:
  return all(c is None for c in row)


def cell(row: tuple, i: Optional[int]):
  return row[i] if i is not None and i < len(row) else None


def as_number(value) -> Optional[float]:
  """A cell as a finite number (int or float), or None: numbers, numeric strings (CSV)."""
  if isinstance(value, bool) or value is None:
    return None
  if isinstance(value, (int, float)) or hasattr(value, "dtype"):
    f = float(value)
  elif isinstance(value, str):
    try:
      f = float(value)
    except ValueError:
      return None
  else:
    return None
  if not math.isfinite(f):
    return None
  return int(f) if f.is_integer() else f


def as_int(value) -> Optional[int]:
  """A cell as an int when it is an integral number (or such a string), else None."""
  n = as_number(value)
  return n if isinstance(n, int) else None


def text(value) -> str:
  """A cell as text; integral numbers without a trailing ``.0``."""
  if value is None:
    return ""
  if isinstance(value, str):
    return value.strip()
  n = as_int(value)
  return str(n) if n is not None else str(value).strip()


def norm(value) -> str:
  """A header cell normalised for matching: lower case, ``_``/spaces collapsed to one space."""
  return re.sub(r"[\s_]+", " ", text(value).lower()).strip()
