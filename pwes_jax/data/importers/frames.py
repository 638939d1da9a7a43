"""Frame mapping: a video's rows from the table's frame numbers to the frames of its features.

Per video the rows are mapped through a recorded ``first_frame_number`` when the folder's
numbering differs from the table's frame base (:func:`numbering_reading`: a folder whose first
images are lost, CAS(ME)^3 ``7.jpg ...``: frame ``n`` is position ``n - first_frame_number`` of
the extracted video; a dump numbered from 0 for a table counting from 1: its first file is the
table's first frame; either reading is warned about with the flag for the other), then, for features extracted from a resampled video, to the resampled
video's frames (:func:`resample_interval`), then checked against the video's end (rule
``past_end``): :func:`map_video_rows`.

``num_frames`` of a video comes from ``num_frames_csv`` and must then satisfy
``(num_frames - 1) // snippet_length == T``. Otherwise it is inferred as
``T * snippet_length + 1``, raised up to ``offset + 1`` when an annotation ends in the frames
after the last full snippet (:func:`video_num_frames`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

from pwes_jax.data import feature_settings
from pwes_jax.data import layout
from pwes_jax.data.importers.features import VideoRecord
from pwes_jax.data.importers.rows import Parsed, Report, Row


def _table_numbers(row: Row) -> str:
  a = row.annotation
  return f"[{a.onset + row.base}, {a.offset + row.base}]"


def numbering_reading(first: int, base: int) -> tuple:
  """How a frame folder numbered from ``first`` is read against a table counting from ``base``.

  Returns:
    ``(shift, text)``: the rows' 0-based frames move by ``shift``; ``text`` says how they were
    read and the flag that reads them the other way (empty when ``first == base``).

  * ``first < base`` (a dump numbered from 0, a table counting from 1): the numbers are the
    dump tool's, not the table's, so the first file is the table's first frame (shift 0).
  * ``first > base`` (CAS(ME)^3's ``7.jpg ...`` for a table counting from 0): the table numbers
    the files and the frames before ``first`` are lost (shift ``base - first``).
  """
  if first == base:
    return 0, ""
  if first < base:
    return 0, (f"frame files numbered from {first}, the table counts frames from {base}: the "
               f"first file is taken as the table's frame {base} (table frame n is file "
               f"n - {base - first}); if the table numbers these files themselves, pass "
               f"--frame_base={first}")
  return base - first, (f"frame files numbered from {first}, the table counts frames from "
                        f"{base}: the table is taken to number the files, frames {base}.."
                        f"{first - 1} lost (table frame n is file n, position n - {first}); if "
                        f"the files simply count from {first}, pass --frame_base={first}")


def _map_numbering(vrows: list, record: Optional[VideoRecord], rules, report: Report) -> list:
  """Maps rows through a recorded ``first_frame_number`` (:func:`numbering_reading`)."""
  if record is None or record.first_frame_number is None or not vrows:
    return vrows
  shift, text = numbering_reading(record.first_frame_number, rules.frame_base)
  if not text:
    return vrows
  video = vrows[0].annotation.video
  report.note("first_frame_number", None, video, "first_frame_number",
              f"{text} (first_frame_number on line {record.line} of the num_frames CSV); "
              f"{len(vrows)} annotation(s)", count=len(vrows))
  if shift == 0:
    return vrows
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


def video_num_frames(video: str, t: int, snippet_length: int, last_offset: int,
                     record: Optional[VideoRecord], csv_path: Optional[str]) -> tuple:
  """``(num_frames, inferred)`` for one video with ``t`` snippets.

  Raises:
    layout.DatasetError: ``record``'s frame count does not give ``t`` snippets.
  """
  if record is not None:
    n = record.num_frames
    if (n - 1) // snippet_length != t:
      s = feature_settings.implied_stride(t, n)
      hint = (f"they fit a stride of {s} frames: pass --snippet_length={s}" if s else
              "were they made at another frame rate (--resample_fps)?")
      raise layout.error(csv_path or "the features", video, "num_frames",
                         f"{n} frames give {(n - 1) // snippet_length} snippets of "
                         f"{snippet_length}, but the features have {t}; {hint}")
    return n, False
  return max(t * snippet_length + 1, last_offset + 1), True


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


def map_video_rows(vrows: list, record: Optional[VideoRecord], t: int, snippet_length: int,
                   rules, report: Report, resample: Optional[tuple] = None) -> list:
  """One video's rows (0-based in the table's numbering) -> rows in its features' frames.

  Maps through ``record``'s ``first_frame_number`` (if any), then with ``resample =
  (source_fps, fps)`` to the resampled video's frames, then skips (or clips, ``past_end``) the
  rows ending after the video's last frame: ``record.num_frames - 1``, or without a record the
  last frame ``t`` snippets of ``snippet_length`` can hold, ``(t + 1) * snippet_length - 1``.
  """
  vrows = _map_numbering(vrows, record, rules, report)
  if resample is not None:
    vrows = list(resample_parsed(Parsed(tuple(vrows), rules, report), *resample).rows)
  last = record.num_frames - 1 if record else (t + 1) * snippet_length - 1
  return _past_end(vrows, last, record is not None, rules, report)
