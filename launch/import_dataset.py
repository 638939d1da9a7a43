r"""Imports an official annotation spreadsheet plus the user's features as a dataset directory.

Usage::

  python -m launch.import_dataset --format=casme2 \
      --annotations="CAS(ME)^2code_final.xlsx" --features=/path/to/i3d --output_dir=data/casme2 \
      [--num_frames_csv=num_frames.csv] [--skip_missing] [--frame_base=N] \
      [--resample_fps=F] [--snippet_length=L] \
      [--video_name_format='{subject}_{code}']

``--format`` is ``casme2``, ``samm_lv`` or ``casme3``. The accepted feature files, the video
naming and the frame bases are described in :mod:`pwes_jax.data.importers`. Nothing is
downloaded, the sources are never modified and existing output files are never replaced. The
summary is printed as JSON.
"""

import json

from absl import app
from absl import flags

from pwes_jax.data import importers

_FORMAT = flags.DEFINE_enum("format", None, sorted(importers.IMPORTERS),
                            "Which dataset's spreadsheet --annotations is.")
_ANNOTATIONS = flags.DEFINE_string("annotations", None, "The official spreadsheet (.xlsx/.xls).")
_FEATURES = flags.DEFINE_string("features", None, "Directory of the user's per-video features.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Dataset directory to write.")
_NUM_FRAMES_CSV = flags.DEFINE_string(
    "num_frames_csv", None, "Optional CSV 'video,num_frames'; otherwise num_frames is inferred "
    "from the features as T * snippet_length + 1.")
_SKIP_MISSING = flags.DEFINE_bool(
    "skip_missing", False, "Skip (with a warning) annotations of videos without features "
    "instead of failing.")
_FRAME_BASE = flags.DEFINE_integer(
    "frame_base", None, "Number of a video's first frame in the spreadsheet (default: the "
    "dataset's, 1 for casme2, 0 for samm_lv and casme3).")
_VIDEO_NAME_FORMAT = flags.DEFINE_string(
    "video_name_format", None, "casme2 only: video name from {subject}, {subject_number}, "
    "{code}, {code_name} (default '{subject}_{code}', e.g. s15_0401).")

_RESAMPLE_FPS = flags.DEFINE_float(
    "resample_fps", None, "The features come from videos resampled to this frame rate "
    "(launch.extract_features --fps): map the spreadsheet's intervals to it.")
_SNIPPET_LENGTH = flags.DEFINE_integer(
    "snippet_length", None, "Frames per snippet of the features, if not the dataset's (8; "
    "32 for samm_lv).")
flags.mark_flags_as_required(["format", "annotations", "features", "output_dir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  kwargs = {}
  if _VIDEO_NAME_FORMAT.value is not None:
    if _FORMAT.value != "casme2":
      raise app.UsageError("--video_name_format applies to --format=casme2 only")
    kwargs["video_name_format"] = _VIDEO_NAME_FORMAT.value
  try:
    summary = importers.IMPORTERS[_FORMAT.value](
        _ANNOTATIONS.value, _FEATURES.value, _OUTPUT_DIR.value,
        num_frames_csv=_NUM_FRAMES_CSV.value, skip_missing=_SKIP_MISSING.value,
        frame_base=_FRAME_BASE.value, resample_fps=_RESAMPLE_FPS.value,
        snippet_length=_SNIPPET_LENGTH.value, **kwargs)
  except (ValueError, FileExistsError) as e:  # DatasetError is a ValueError.
    raise SystemExit(f"import_dataset: {e}") from None
  print(json.dumps(summary, indent=2))


if __name__ == "__main__":
  app.run(main)
