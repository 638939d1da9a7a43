r"""Imports an annotation table plus the user's features as a dataset directory.

Usage::

  python -m launch.import_dataset --format=casme2 \
      --annotations="CAS(ME)^2code_final.xlsx" --features=/path/to/i3d --output_dir=data/casme2 \
      [--conventions=megc|lgsnet] [--num_frames_csv=videos.csv] [--skip_missing] \
      [--frame_base=N] [--frame_rounding=half_up|floor] [--missing_offset=apex|apex+20] \
      [--offset_at_or_before_apex=keep|missing] [--onset0_macro=keep|drop] \
      [--max_me_frames=N] [--max_mae_frames=N] [--exclude_rows=ROW,SHEET!ROW,FILE!ROW,ID] \
      [--clip_to_video] [--annotated_only] [--strict] [--annotation_types=me,mae] \
      [--resample_fps=F] [--snippet_length=L] [--snippet_window=W] [--rgb_only] \
      [--feature_dim=1024] [--video_name_format='{subject}_{code}']

  # CAS(ME)^3 part A as published: two workbooks without a type column.
  python -m launch.import_dataset --format=casme3 --conventions=lgsnet \
      --annotations="cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx" \
      --annotations="cas(me)3_part_A_MaE_label_JpgIndex_v2_emotion.xlsx" \
      --annotation_types=me,mae --features=... --num_frames_csv=videos.csv --output_dir=...

``--format`` is ``casme2``, ``samm_lv`` or ``casme3``; ``--annotations`` an ``.xlsx``, ``.xls``
or ``.csv`` table, or several (repeat the flag, or separate them by commas) read as one; a table
without a type column takes its type from ``--annotation_types`` (one per table: ``me``,
``mae`` or ``auto``) or, with a warning, from an ``ME``/``MaE`` token of its file name.
``--conventions`` picks a table of rules (:mod:`pwes_jax.data.conventions`:
``megc``, the MEGC 2020 baseline's reading, or ``lgsnet``, the PWES authors' lab's); each rule
flag overrides one rule. Rows a rule converts or skips are warned about on stderr, naming the
table, sheet, row and field; ``--strict`` makes every skip an error. The accepted feature files
and the video naming are described in :mod:`pwes_jax.data.importers`. Nothing is downloaded, the
sources are never modified, existing output files are never replaced, and an ``--output_dir``
inside a source folder is refused. A short summary (totals and counts per rule) is printed as
JSON; the full one, with every skipped and converted row, is ``OUTPUT_DIR/import_report.json``.
The settings the features were made with (their own records, or the ``dataset.json`` of the
``launch.extract_features`` directory they lie in; LGSNet's frame count and windows) are checked
against the import's: features at another frame rate, stride or window stop the import with one
line naming both values and the flag to pass (``--resample_fps``, ``--snippet_length``,
``--snippet_window``).
A usage error is one line on stderr (exit status 2).
"""

import json
import os
import sys

from absl import app
from absl import flags

from launch import quiet
from pwes_jax import runtime
from pwes_jax.workdir import output_guard
from pwes_jax.data import conventions
from pwes_jax.data import importers

from launch import common

_FORMAT = flags.DEFINE_enum("format", None, sorted(importers.IMPORTERS),
                            "Which dataset's spreadsheet --annotations is.")
_ANNOTATIONS = flags.DEFINE_multi_string(
    "annotations", None, "The annotation table (.xlsx, .xls or .csv); several tables read as "
    "one by repeating the flag or separating them by commas (CAS(ME)^3 part A's ME and MaE "
    "workbooks).")
_ANNOTATION_TYPES = flags.DEFINE_list(
    "annotation_types", None, "One expression type per --annotations table, in order: me, mae "
    "or auto (the table's type column, else an ME/MaE token of its file name, with a warning).")
_FEATURES = flags.DEFINE_string("features", None, "Directory of the user's per-video features.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Dataset directory to write.")
_NUM_FRAMES_CSV = flags.DEFINE_string(
    "num_frames_csv", None, "Optional CSV 'video,num_frames'; otherwise num_frames is inferred "
    "from the features as T * snippet_length + 1.")
_SKIP_MISSING = flags.DEFINE_bool(
    "skip_missing", False, "Skip (with a warning) annotations of videos without features "
    "instead of failing.")
_FRAME_BASE = flags.DEFINE_integer(
    "frame_base", None, "Number of a video's first frame in the table (default: the "
    "dataset's, 1 for casme2 and samm_lv, 0 for casme3).")
_VIDEO_NAME_FORMAT = flags.DEFINE_string(
    "video_name_format", None, "casme2 only: video name from {subject}, {subject_number}, "
    "{code}, {code_name} (default '{subject}_{code}', e.g. s15_0401).")

_RESAMPLE_FPS = flags.DEFINE_float(
    "resample_fps", None, "The features come from videos resampled to this frame rate "
    "(launch.extract_features --fps): map the spreadsheet's intervals to it.")
_SNIPPET_LENGTH = flags.DEFINE_integer(
    "snippet_length", None, "Frames per snippet of the features, if not the dataset's (8; "
    "32 for samm_lv); with overlapping windows the stride between snippets.")
_SNIPPET_WINDOW = flags.DEFINE_integer(
    "snippet_window", None, "Frames per window when the features' windows overlap (LGSNet's: "
    "8 at a stride of 2); default --snippet_length. Snippets are placed at their windows' "
    "centres.")
_RGB_ONLY = flags.DEFINE_bool(
    "rgb_only", False, "Import the RGB stream alone (features without flow, e.g. LGSNet's "
    "published RGB files): the model's flow input is zeros, recorded in dataset.json.")
_FEATURE_DIM = flags.DEFINE_integer(
    "feature_dim", importers.FEATURE_DIM, "Feature width D of each stream (1024 for I3D; "
    "the width of the user's own features otherwise).", lower_bound=1)
_CONVENTIONS = flags.DEFINE_enum(
    "conventions", "megc", list(conventions.CONVENTIONS), "Which table of rules reads the "
    "annotations: megc (MEGC 2020 baseline readers) or lgsnet (the PWES authors' lab).")
_FRAME_ROUNDING = flags.DEFINE_enum(
    "frame_rounding", None, list(conventions.FRAME_ROUNDINGS), "Fractional frames such as "
    "566.4000000000001: half_up or floor (default: the convention's).")
_MISSING_OFFSET = flags.DEFINE_enum(
    "missing_offset", None, list(conventions.MISSING_OFFSETS), "casme2: an offset of 0 (not "
    "coded) becomes the apex or apex + 20 (default: the convention's).")
_OFFSET_AT_OR_BEFORE_APEX = flags.DEFINE_enum(
    "offset_at_or_before_apex", None, list(conventions.OFFSET_AT_OR_BEFORE_APEX), "casme2: an "
    "offset <= apex is kept (apex dropped when outside) or treated as missing (default: the "
    "convention's).")
_ONSET0_MACRO = flags.DEFINE_enum(
    "onset0_macro", None, list(conventions.ONSET0_MACRO), "A MaE with onset below the first "
    "frame (SAMM-LV's Macro rows with onset 0): keep it from the first frame (both "
    "conventions; the MEGC 2020 baseline keeps them) or drop it (SoftNet's and MEAN's "
    "readers).")
_MAX_ME_FRAMES = flags.DEFINE_integer(
    "max_me_frames", None, "Keep an ME only when offset - onset is at most this many frames.")
_MAX_MAE_FRAMES = flags.DEFINE_integer(
    "max_mae_frames", None, "Keep a MaE only when offset - onset is at most this many frames.")
_EXCLUDE_ROWS = flags.DEFINE_list(
    "exclude_rows", None, "Rows to leave out, comma separated: as the table numbers them, ROW, "
    "SHEET!ROW or FILE!ROW (a CSV's line number; FILE the table's file name), or by the "
    "table's expression id (samm_lv: the Filename, e.g. 012_4_1; casme2: subject and code "
    "name, e.g. s15_anger1_1; casme3: Subject_Filename_Onset, e.g. spNO.1_a_355).")
_CLIP_TO_VIDEO = flags.DEFINE_bool(
    "clip_to_video", None, "Clip a row ending past the video's last frame instead of skipping it.")
_ANNOTATED_ONLY = flags.DEFINE_bool(
    "annotated_only", False, "Leave out videos with features but no annotation (by default "
    "they are imported as negative videos, whose false alarms count).")
_STRICT = flags.DEFINE_bool(
    "strict", False, "Every row that would be skipped is an error naming the row.")
flags.mark_flags_as_required(["format", "annotations", "features", "output_dir"])


class _Usage(Exception):
  """A usage error: printed as one line."""


def _usage_exit(message: str) -> None:
  message = "; ".join(line.strip() for line in message.splitlines() if line.strip())
  sys.stderr.write(f"import_dataset: usage error: {message} (--helpshort lists the flags)\n")
  sys.exit(2)


def _parse_flags(argv):
  """absl's flag parsing, with a flag error as one line instead of the help text."""
  common.exit_on_interrupt("import_dataset")
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _usage_exit(str(e))


def annotation_tables(values) -> list:
  """The --annotations values as a list of tables: repeated, or comma separated.

  A value naming an existing file is one table even if its name holds a comma.
  """
  out = []
  for v in values or []:
    if os.path.isfile(v) or "," not in v:
      out.append(v)
    else:
      out += [p.strip() for p in v.split(",") if p.strip()]
  return out


def _arguments(argv) -> dict:
  if len(argv) > 1:
    raise _Usage(f"unexpected arguments: {argv[1:]}")
  kwargs = {}
  if _VIDEO_NAME_FORMAT.value is not None:
    if _FORMAT.value != "casme2":
      raise _Usage("--video_name_format applies to --format=casme2 only")
    kwargs["video_name_format"] = _VIDEO_NAME_FORMAT.value
  if _FORMAT.value != "casme2":
    for flag in (_MISSING_OFFSET, _OFFSET_AT_OR_BEFORE_APEX):
      if flag.value is not None:
        raise _Usage(f"--{flag.name} applies to --format=casme2 only")
  elif _ANNOTATION_TYPES.value:
    raise _Usage("--annotation_types applies to tables without a type column (samm_lv, casme3); "
                 "CAS(ME)^2 tables hold the type in column 8")
  if _SNIPPET_LENGTH.value is not None and _SNIPPET_LENGTH.value < 1:
    raise _Usage(f"--snippet_length must be a positive number of frames, got "
                 f"{_SNIPPET_LENGTH.value}")
  if _SNIPPET_WINDOW.value is not None and _SNIPPET_WINDOW.value < 1:
    raise _Usage(f"--snippet_window must be a positive number of frames, got "
                 f"{_SNIPPET_WINDOW.value}")
  for flag in (_MAX_ME_FRAMES, _MAX_MAE_FRAMES):
    if flag.value is not None and flag.value < 0:
      raise _Usage(f"--{flag.name} must be >= 0, got {flag.value}")
  if _RESAMPLE_FPS.value is not None and not _RESAMPLE_FPS.value > 0:
    raise _Usage(f"--resample_fps must be positive, got {_RESAMPLE_FPS.value}")
  tables = annotation_tables(_ANNOTATIONS.value)
  if not tables:
    raise _Usage("--annotations names no table")
  if _ANNOTATION_TYPES.value is not None and len(_ANNOTATION_TYPES.value) != len(tables):
    raise _Usage(f"--annotation_types gives {len(_ANNOTATION_TYPES.value)} type(s) for "
                 f"{len(tables)} table(s) ({', '.join(tables)}); give one per table, in order")
  kwargs.update(annotation_types=_ANNOTATION_TYPES.value)
  return dict(table=tables[0] if len(tables) == 1 else tables, **kwargs)


def main(argv):
  runtime.set_up_process()
  try:
    args = _arguments(argv)
  except _Usage as e:
    _usage_exit(str(e))
  table = args.pop("table")
  try:
    tables = table if isinstance(table, list) else [table]
    output_guard.check_dir_output(
        "output_dir", _OUTPUT_DIR.value,
        [("annotations", t) for t in tables] + [("features", _FEATURES.value),
                                                 ("num_frames_csv", _NUM_FRAMES_CSV.value)])
    summary = importers.IMPORTERS[_FORMAT.value](
        table, _FEATURES.value, _OUTPUT_DIR.value,
        conventions=_CONVENTIONS.value, num_frames_csv=_NUM_FRAMES_CSV.value,
        skip_missing=_SKIP_MISSING.value, frame_base=_FRAME_BASE.value,
        resample_fps=_RESAMPLE_FPS.value, snippet_length=_SNIPPET_LENGTH.value,
        snippet_window=_SNIPPET_WINDOW.value, rgb_only=_RGB_ONLY.value,
        feature_dim=_FEATURE_DIM.value,
        frame_rounding=_FRAME_ROUNDING.value, missing_offset=_MISSING_OFFSET.value,
        offset_at_or_before_apex=_OFFSET_AT_OR_BEFORE_APEX.value,
        onset0_macro=_ONSET0_MACRO.value,
        max_me_frames=_MAX_ME_FRAMES.value, max_mae_frames=_MAX_MAE_FRAMES.value,
        exclude_rows=_EXCLUDE_ROWS.value,
        past_end="clip" if _CLIP_TO_VIDEO.value else None,
        negative_videos=False if _ANNOTATED_ONLY.value else None,
        strict=True if _STRICT.value else None, **args)
  except (ValueError, OSError) as e:  # DatasetError is a ValueError.
    raise SystemExit(f"import_dataset: {common.one_line(e)}") from None
  print(json.dumps(importers.short_summary(summary), indent=2))


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
