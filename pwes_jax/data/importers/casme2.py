"""The CAS(ME)^2 reader: the code workbook (with its naming sheets) or its CSV form.

``CAS(ME)^2code_final.xlsx`` (read by :mod:`pwes_jax.data.tables`): three sheets, no header row.

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
code_name=...)``, by default ``"{subject}_{code}"``, e.g. ``s15_0401``. An expression's id
(``exclude_rows``) is the subject and sheet 1's column 2 as written, e.g. ``s15_anger1_1``.
fps 30, snippet 8.
"""

from __future__ import annotations

import os
import re
import string
from typing import Callable, Optional

from pwes_jax.data import layout
from pwes_jax.data import tables
from pwes_jax.data.importers.rows import RawRow, Report, Where, SkipRow, frame_cell, type_cell


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
          raise SkipRow
        subject, code = pm.group(1).lower(), pm.group(3)
      else:
        participant = tables.as_int(tables.cell(row, 0))
        if participant is None or participant not in subjects:
          report.skip("bad_video", where, None, "participant", f"participant "
                      f"{tables.cell(row, 0)!r} not in the subject naming sheet "
                      f"{sheets[1][0]!r} (knows {sorted(subjects)})")
          raise SkipRow
        subject = subjects[participant]
        if code_name not in codes:
          report.skip("bad_video", where, None, "video", f"video code name {raw_name!r} not in "
                      f"the video naming sheet {sheets[2][0]!r}")
          raise SkipRow
        code = codes[code_name]
      video = _casme2_video_name(video_name_format, subject, code, code_name)
      onset = frame_cell(tables.cell(row, 2), where, video, "onset", report)
      apex = frame_cell(tables.cell(row, 3), where, video, "apex", report, optional=True)
      offset = frame_cell(tables.cell(row, 4), where, video, "offset", report)
      kind = type_cell(tables.cell(row, 7), where, video, "type", report)
    except SkipRow:
      continue
    out.append(RawRow(where, subject, video, onset, apex, offset, kind,
                      expression_id=f"{subject}_{raw_name}"))
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
