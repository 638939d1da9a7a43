r"""Spots micro- and macro-expressions in feature files, or in a raw video, with a trained run.

Usage::

  python -m launch.spot --workdir=/tmp/pwes --features=features/ --output=spots.json \
      [--fold=all | --fold=N | --fold=0,2] [--fps=30] [--snippet_length=8] \
      [--snippet_window=8]
  python -m launch.spot --workdir=RUN --video=clip.mp4 --output=spots.json \
      --rgb_weights=kinetics400 --flow_weights=weights/flow_i3d.npz [--features_dir=DIR] \
      [--extraction_config=configs/extraction.py --extraction_config.face.mode=detect]

``--video`` (a video file or a folder of frame images) is first turned into features with the
run's extraction settings (its dataset's ``dataset.json``, written by
``launch.extract_features``), or with ``--extraction_config`` when given (needed for a run whose
features came from elsewhere); the weights files are given again (``kinetics400`` is the
default RGB weights when the run used them). Before anything is extracted, the run's feature
width is checked (it must take 1024-wide rgb and flow features), and ``--extraction_config`` is
compared with the run's recorded settings: a warning per differing field (face mode, frame
rate, snippet length, resize, ...). A video at another frame rate than the run's is resampled
to it (with a warning): ``onset``/``offset`` are then frames at the run's rate, and every
proposal also gives ``onset_source_frame``/``offset_source_frame``, the video's own frames
(``floor(frame * video_fps / fps)``), with ``video_fps`` in the output. The feature file goes to
``--features_dir`` (default: a temporary folder, removed afterwards); the proposals are those of
the feature path below. Progress is printed per stage, and inside a long video at least every
15 s (frames processed, processing rate).

The output also says what the extraction found: ``face`` (with a face crop: the boxes and the
source-video frames without a face, which are reported, never cropped silently) and
``decoding`` (a file that stopped decoding before its container's frame count: both counts and
the first missing frame).

``--features`` is one ``.npz`` file or a directory of them (every ``*.npz``; the video name is
the file stem), each with float ``rgb`` and ``flow`` arrays ``[T, F]`` as in the dataset layout.
``--fold=all`` (the default) uses every finished fold and averages their attention and
suppressed TCAM before generating proposals; ``--fold=N`` uses that fold's model only (for a
video of the run's dataset, the fold that held it out reproduces the run's predictions). fps,
snippet length (stride) and window default to the run's ``dataset.json``; a feature file that
records other settings (``launch.extract_features`` and ``launch.import_dataset`` write them
into every file) stops spotting with one line naming both values and the flag to pass, and a
file's recorded ``num_frames`` must fit its snippet count. The output is::

  {"videos": {name: [{onset, offset, score, type, onset_seconds, offset_seconds}]},
   "folds": [...], "source": ..., ...}

with 0-based inclusive frames, proposals highest score first (``--video`` adds
``onset_source_frame``, ``offset_source_frame`` per proposal and ``video``, ``video_fps``).
"""

import os
import sys
import tempfile
import time

from absl import app
from absl import flags
from ml_collections import config_flags

from launch import quiet  # before OpenCV is imported
from pwes_jax import runtime
from pwes_jax.workdir import output_guard
from pwes_jax.workdir import run_files
from pwes_jax import spot
from pwes_jax.extraction import extract
from pwes_jax.extraction import from_video
from pwes_jax.extraction import settings

from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory of launch.main.")
_FEATURES = flags.DEFINE_string("features", None, "A .npz feature file or a directory of them.")
_VIDEO = flags.DEFINE_string("video", None, "A raw video (file or frame folder) to extract "
                             "features from first, instead of --features.")
_RGB_WEIGHTS = flags.DEFINE_string("rgb_weights", None, "--video: I3D RGB weights (converted "
                                   ".npz or 'kinetics400').")
_FLOW_WEIGHTS = flags.DEFINE_string("flow_weights", None, "--video: converted I3D flow weights.")
_FEATURES_DIR = flags.DEFINE_string("features_dir", None, "--video: keep the feature file here "
                                    "(default: a temporary folder).")
_EXTRACTION = config_flags.DEFINE_config_file(
    "extraction_config", None, "--video: extraction settings (configs/extraction.py[:tiny]) "
    "instead of the run's recorded ones.")
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the proposals JSON.")
_FOLD = flags.DEFINE_string("fold", "all", "'all' (average every finished fold), a fold index "
                            "or a spec like '0,2-3'.")
_FPS = flags.DEFINE_float("fps", None, "Frames per second (default: the run's dataset.json).")
_SNIPPET = flags.DEFINE_integer("snippet_length", None, "Frames per snippet, the stride "
                                "between snippets (default: the run's dataset.json).")
_WINDOW = flags.DEFINE_integer("snippet_window", None, "Frames per window when the features' "
                               "windows overlap (default: the run's dataset.json).")

_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --output.")

flags.mark_flags_as_required(["workdir", "output"])


def _stage(i: int, text: str) -> None:
  print(f"spot: [{i}/3] {text}", file=sys.stderr, flush=True)


def _features_from_video(features_dir: str) -> tuple:
  """Stages 1 and 2 of --video: the settings (``settings.video_settings``), then the feature
  file (``from_video.extract_file``) in ``features_dir``, with progress lines.

  Returns:
    ``(path, fps, snippet stride, video_fps, report)``, ``report`` what the extraction found
    (``face``: boxes and frames without a face, source frames; ``decoding`` when the video
    stopped decoding early), for the output.

  Raises:
    extract.ExtractionError: the run does not take the extracted features, or bad settings.
    layout.DatasetError, video_lib.VideoReadError, ValueError, OSError: as
      ``settings.video_settings`` and ``from_video.extract_file`` (each a one-line message).
  """
  fold = run_files.select_folds(_WORKDIR.value, _FOLD.value)[0]
  settings.check_feature_width(_WORKDIR.value,
                               spot.checkpoint_shapes(_WORKDIR.value, fold)["feature_dim"], fold)
  chosen = settings.video_settings(_WORKDIR.value, _VIDEO.value, extraction=_EXTRACTION.value,
                                   rgb_weights=_RGB_WEIGHTS.value,
                                   flow_weights=_FLOW_WEIGHTS.value,
                                   announce=lambda text: _stage(1, text))
  config, source = chosen.config, chosen.source
  path = os.path.join(features_dir, f"{source.name}.npz")
  _stage(2, f"extracting features from {source.path} (face {config.face.mode}, "
         f"{config.frames.size}x{config.frames.size}, {config.snippet_length}-frame snippets)")
  t0, last = time.perf_counter(), [time.perf_counter()]

  def progress(frames):
    now = time.perf_counter()
    if now - last[0] >= extract.PROGRESS_EVERY_S:
      last[0] = now
      print(f"spot:       {frames} frames processed so far, processing rate "
            f"{frames / (now - t0):.1f} frames/s", file=sys.stderr, flush=True)

  result = from_video.extract_file(source, config, path, progress=progress)
  print(f"spot:       {result.num_frames} frames -> {result.rgb.shape[0]} snippets in "
        f"{time.perf_counter() - t0:.1f} s -> {path}", file=sys.stderr, flush=True)
  return path, chosen.fps, config.stride, chosen.video_fps, from_video.extraction_report(result)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  runtime.set_up_process(compile_cache=True)
  if (_FEATURES.value is None) == (_VIDEO.value is None):
    raise app.UsageError("give exactly one of --features and --video")
  inputs = {"workdir": _WORKDIR.value, "features": _FEATURES.value, "video": _VIDEO.value}
  with common.errors("spot"):
    out = output_guard.check_file_outputs({"output": _OUTPUT.value}, inputs,
                                          overwrite=_OVERWRITE.value)["output"]
    if _FEATURES_DIR.value:
      output_guard.check_dir_output("features_dir", _FEATURES_DIR.value,
                                    {"workdir": _WORKDIR.value, "video": _VIDEO.value})
  try:
    if _VIDEO.value is None:
      result = spot.spot(_WORKDIR.value, _FEATURES.value, fold=_FOLD.value, fps=_FPS.value,
                         snippet_length=_SNIPPET.value, snippet_window=_WINDOW.value)
    else:
      with tempfile.TemporaryDirectory(prefix="pwes_spot_") as tmp:
        features_dir = _FEATURES_DIR.value or tmp
        path, fps, length, video_fps, extracted = _features_from_video(features_dir)
        _stage(3, f"spotting with the run {_WORKDIR.value} (fold {_FOLD.value})")
        result = spot.spot(_WORKDIR.value, path, fold=_FOLD.value, fps=_FPS.value or fps,
                           snippet_length=_SNIPPET.value or length,
                           snippet_window=_WINDOW.value)
      result["video"] = os.path.abspath(_VIDEO.value)
      result["video_fps"] = video_fps
      result.update(extracted)
      result["videos"] = {name: from_video.with_source_frames(props, result["fps"], video_fps)
                          for name, props in result["videos"].items()}
      if not _FEATURES_DIR.value:
        result["source"] = None  # the temporary feature file is gone
  except common.USER_ERRORS as e:
    raise SystemExit(f"spot: {common.one_line(e)}") from None
  with common.errors("spot"):
    out = spot.write_json(out, result)
  n = sum(len(p) for p in result["videos"].values())
  print(f"{n} proposals for {len(result['videos'])} videos from fold(s) {result['folds']} "
        f"({result['combine']}) written to {out}", file=sys.stderr)
  print(f"compiles: {runtime.describe(runtime.counts())}", file=sys.stderr)


if __name__ == "__main__":
  app.run(main, flags_parser=common.flags_parser("spot"))
