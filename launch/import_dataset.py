r"""Imports an annotation table plus the user's features as a dataset directory.

Usage::

  python -m launch.import_dataset --format=casme2 \
      --annotations="CAS(ME)^2code_final.xlsx" --features=/path/to/i3d --output_dir=data/casme2 \
      [--conventions=megc|lgsnet] [--num_frames_csv=videos.csv] [--skip_missing] \
      [--frame_base=N] [--frame_rounding=half_up|floor] [--missing_offset=apex|apex+20] \
      [--offset_at_or_before_apex=keep|missing] [--max_me_frames=N] [--max_mae_frames=N] \
      [--exclude_rows=ROW,SHEET!ROW] [--clip_to_video] [--annotated_only] [--strict] \
      [--resample_fps=F] [--snippet_length=L] [--video_name_format='{subject}_{code}']

``--format`` is ``casme2``, ``samm_lv`` or ``casme3``; ``--annotations`` an ``.xlsx``, ``.xls``
or ``.csv`` table. ``--conventions`` picks a table of rules (:mod:`pwes_jax.data.conventions`:
``megc``, the MEGC 2020 baseline's reading, or ``lgsnet``, the PWES authors' lab's); each rule
flag overrides one rule. Rows a rule converts or skips are warned about on stderr, naming the
table, sheet, row and field; ``--strict`` makes every skip an error. The accepted feature files
and the video naming are described in :mod:`pwes_jax.data.importers`. Nothing is downloaded, the
sources are never modified and existing output files are never replaced. The summary is
printed as JSON and written to ``OUTPUT_DIR/import_report.json``.
"""

import json

from absl import app
from absl import flags

from pwes_jax.data import conventions
from pwes_jax.data import importers

_FORMAT = flags.DEFINE_enum("format", None, sorted(importers.IMPORTERS),
                            "Which dataset's spreadsheet --annotations is.")
_ANNOTATIONS = flags.DEFINE_string("annotations", None,
                                   "The annotation table (.xlsx, .xls or .csv).")
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
    "32 for samm_lv).")
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
_MAX_ME_FRAMES = flags.DEFINE_integer(
    "max_me_frames", None, "Keep an ME only when offset - onset is at most this many frames.")
_MAX_MAE_FRAMES = flags.DEFINE_integer(
    "max_mae_frames", None, "Keep a MaE only when offset - onset is at most this many frames.")
_EXCLUDE_ROWS = flags.DEFINE_list(
    "exclude_rows", None, "Rows to leave out, as the table numbers them: ROW or SHEET!ROW "
    "(a CSV's line number), comma separated.")
_CLIP_TO_VIDEO = flags.DEFINE_bool(
    "clip_to_video", None, "Clip a row ending past the video's last frame instead of skipping it.")
_ANNOTATED_ONLY = flags.DEFINE_bool(
    "annotated_only", False, "Leave out videos with features but no annotation (by default "
    "they are imported as negative videos, whose false alarms count).")
_STRICT = flags.DEFINE_bool(
    "strict", False, "Every row that would be skipped is an error naming the row.")
flags.mark_flags_as_required(["format", "annotations", "features", "output_dir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  kwargs = {}
  if _VIDEO_NAME_FORMAT.value is not None:
    if _FORMAT.value != "casme2":
      raise app.UsageError("--video_name_format applies to --format=casme2 only")
    kwargs["video_name_format"] = _VIDEO_NAME_FORMAT.value
  if _FORMAT.value != "casme2":
    for flag in (_MISSING_OFFSET, _OFFSET_AT_OR_BEFORE_APEX):
      if flag.value is not None:
        raise app.UsageError(f"--{flag.name} applies to --format=casme2 only")
  try:
    summary = importers.IMPORTERS[_FORMAT.value](
        _ANNOTATIONS.value, _FEATURES.value, _OUTPUT_DIR.value,
        conventions=_CONVENTIONS.value, num_frames_csv=_NUM_FRAMES_CSV.value,
        skip_missing=_SKIP_MISSING.value, frame_base=_FRAME_BASE.value,
        resample_fps=_RESAMPLE_FPS.value, snippet_length=_SNIPPET_LENGTH.value,
        frame_rounding=_FRAME_ROUNDING.value, missing_offset=_MISSING_OFFSET.value,
        offset_at_or_before_apex=_OFFSET_AT_OR_BEFORE_APEX.value,
        max_me_frames=_MAX_ME_FRAMES.value, max_mae_frames=_MAX_MAE_FRAMES.value,
        exclude_rows=_EXCLUDE_ROWS.value,
        past_end="clip" if _CLIP_TO_VIDEO.value else None,
        negative_videos=False if _ANNOTATED_ONLY.value else None,
        strict=True if _STRICT.value else None, **kwargs)
  except (ValueError, FileExistsError) as e:  # DatasetError is a ValueError.
    raise SystemExit(f"import_dataset: {e}") from None
  print(json.dumps(summary, indent=2))


if __name__ == "__main__":
  app.run(main)
