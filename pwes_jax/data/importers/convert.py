"""The table rules: a row as read -> a 0-based annotation, or a skipped row.

How the numbers become 0-based intervals is decided by the
:mod:`conventions <pwes_jax.data.conventions>` rules (frame base, rounding of fractional
frames, CAS(ME)^2's missing offsets, duration limits, excluded rows; rows past the video's end
are :mod:`frames <pwes_jax.data.importers.frames>`' job). A row repeating an earlier row exactly
(subject, video, frames, type; also across tables) is dropped with a warning
(``duplicate_row``): it would count twice in evaluation. ``exclude_rows`` names rows by number
(``ROW``, ``SHEET!ROW``, ``FILE!ROW``) or by the table's own expression id (:data:`EXPRESSION_IDS`).
"""

from __future__ import annotations

import math
import os
import re
from typing import Optional, Sequence

from pwes_jax.data import conventions
from pwes_jax.data import layout
from pwes_jax.data.importers.rows import RawRow, Report, Row


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
  is below the frame base is dropped under ``onset0_macro='drop'`` (SoftNet's and MEAN's
  SAMM-LV readers); an onset below the frame base is otherwise clamped to it (SAMM-LV onset 0);
  ``onset > offset`` is skipped; an apex outside the interval is dropped; ``max_me_frames`` /
  ``max_mae_frames``. Messages give the table's numbers and its own field names.
  """
  w, v, base = raw.where, raw.video, rules.frame_base
  named = [s for s in rules.exclude_rows if names_row(s, raw)]
  if named:
    by_id = "" if is_row_number(named[0]) else f" (expression id {named[0]!r})"
    report.skip("exclude_rows", w, v, None, f"row named in exclude_rows{by_id}")
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
                f"frame number {base} left out (onset0_macro drop: SoftNet's and MEAN's SAMM-LV "
                "readers ignore these extremely long samples; the MEGC 2020 baseline keeps them)")
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


def drop_duplicates(raw: list, report: Report) -> list:
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


EXPRESSION_IDS = ("SAMM-LV Filename such as 012_4_1, CAS(ME)^2 subject and code name such as "
                  "s15_anger1_1, CAS(ME)^3 Subject_Filename_Onset such as spNO.1_a_355")


def is_row_number(spec: str) -> bool:
  """Whether an ``exclude_rows`` entry is a row number (``ROW``, ``SHEET!ROW``, ``FILE!ROW``);
  any other entry is a table's expression id (:class:`~pwes_jax.data.importers.rows.RawRow`)."""
  return re.fullmatch(r"(?:.+!)?\s*\d+\s*", spec) is not None


def names_row(spec: str, raw: RawRow) -> bool:
  """Whether an ``exclude_rows`` entry names ``raw``: by row number, or by expression id."""
  if is_row_number(spec):
    return raw.where.matches(spec)
  return raw.expression_id is not None and raw.expression_id == spec.strip()


def check_exclude_rows(specs: Sequence[str], raw: list, paths: Sequence[str]) -> None:
  """Checks that each ``exclude_rows`` entry names annotation rows of exactly one table, and an
  expression id exactly one row.

  Raises:
    ValueError: an entry that names no row of ``raw`` (the rows read from ``paths``) by number
      or by expression id, a row number naming rows of several tables, or an expression id
      naming several different rows (exact duplicates count as one).
  """
  for spec in specs:
    hits = [r for r in raw if names_row(spec, r)]
    if not hits:
      what = ("" if is_row_number(spec) else
              f": it is not a row number (ROW, SHEET!ROW or FILE!ROW) and no row has that "
              f"expression id ({EXPRESSION_IDS})")
      raise ValueError(f"exclude_rows entry {spec!r} names no annotation row of "
                       f"{', '.join(paths)}{what}")
    tables_hit = {r.where.file for r in hits}
    if is_row_number(spec) and len(tables_hit) > 1:
      raise ValueError(f"exclude_rows entry {spec!r} names rows of several tables "
                       f"({', '.join(sorted(tables_hit))}); write SHEET!ROW or FILE!ROW")
    distinct = {(r.subject, r.video, r.onset, r.apex, r.offset, r.kind) for r in hits}
    if not is_row_number(spec) and len(distinct) > 1:  # exact duplicates are one expression
      where = ", ".join(f"{os.path.basename(r.where.file)} {r.where.label}" for r in hits)
      raise ValueError(f"exclude_rows entry {spec!r} is the expression id of {len(hits)} rows "
                       f"({where}); name the one to leave out as SHEET!ROW or FILE!ROW")
