"""One raw video -> a feature file, with a trained run's extraction settings (spot --video).

A run trained on features made by ``launch.extract_features`` has those settings in its
dataset's ``dataset.json`` (``extraction``: frames, face crop, flow, snippets, weights' names).
:func:`run_settings` reads them back into an :class:`extract.ExtractionConfig` (the weights
files themselves are given again: only their names are recorded), and :func:`extract_file`
writes the video's ``rgb``/``flow`` features exactly as ``extract_features`` would, so spotting
them gives the proposals the feature path gives.

Frame rate: a model is trained at its dataset's rate. When the settings keep every frame
(``frames.fps`` unset) and the video's own rate differs from the run's, the video is resampled
to the run's rate with a warning (the same resampling as ``--fps``); the proposals' frames and
seconds are then at that rate, and :func:`with_source_frames` gives each onset and offset in the
video's own frames too.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, Optional

from absl import logging

from pwes_jax.data import layout
from pwes_jax.extraction import extract
from pwes_jax.extraction import flow as flow_lib
from pwes_jax.extraction import video as video_lib
from pwes_jax.extraction import weights as weights_lib


def run_settings(dataset_dir: str, *, rgb_weights: Optional[str] = None,
                 flow_weights: Optional[str] = None, **run) -> tuple:
  """``(ExtractionConfig, DatasetInfo)`` from the ``extraction`` record of a run's dataset.

  Args:
    dataset_dir: the run's dataset directory (``run_files.dataset_root``).
    rgb_weights: the RGB weights file; default ``kinetics400`` when that is what was recorded.
    flow_weights: the flow weights file.
    **run: run settings passed to :func:`extract.from_recorded` (``batch_snippets``, ...).

  Raises:
    extract.ExtractionError: the dataset was not made by ``extract_features`` (no record), or
      weights are needed and not given.
    layout.DatasetError: ``dataset.json`` is missing or unreadable (naming it).
  """
  info = layout.read_info(dataset_dir)
  recorded = info.extras.get("extraction")
  path = os.path.join(dataset_dir, "dataset.json")
  if not isinstance(recorded, dict):
    raise extract.ExtractionError(
        f"{path}: has no 'extraction' settings (its features were not made by "
        "launch.extract_features); pass the settings with --extraction_config")
  used = recorded.get("weights") or {}
  if rgb_weights is None and used.get("rgb") == weights_lib.KINETICS400:
    rgb_weights = weights_lib.KINETICS400
  for stream, given in (("rgb", rgb_weights), ("flow", flow_weights)):
    if given and used.get(stream) and os.path.basename(given) != used[stream]:
      logging.warning("%s: the run's features were made with %s weights %r; %r given", path,
                      stream, used[stream], os.path.basename(given))
  config = extract.from_recorded(recorded, rgb_weights=rgb_weights or "",
                                 flow_weights=flow_weights or "", **run)
  return config, info


def video_source(path: str) -> video_lib.VideoSource:
  """The :class:`video.VideoSource` of a video file or a frame folder given by path."""
  if not os.path.exists(path):
    raise video_lib.VideoReadError(f"video {path}: no such file or folder")
  name = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
  return video_lib.VideoSource(path, os.path.basename(path), name, name, os.path.isdir(path))


def match_rate(config: extract.ExtractionConfig, source: video_lib.VideoSource,
               run_fps: float) -> tuple:
  """``(config, fps, video_fps)``: resampled to ``run_fps`` when the video's own rate differs.

  ``fps`` is the rate of the extracted frames (the proposals' frames), ``video_fps`` the video's
  own rate (a frame folder without ``source_fps`` is taken to be at ``run_fps``). A warning says
  when the video is resampled.

  Raises:
    video_lib.VideoReadError: a video file that cannot be opened (naming it).
  """
  own = video_lib.source_fps_of(source, config.frames, strict=True)
  if config.frames.fps is not None:
    return config, float(config.frames.fps), float(own if own is not None else config.frames.fps)
  if own is None:  # A frame folder without source_fps: taken at the run's rate.
    frames = dataclasses.replace(config.frames, source_fps=run_fps)
    return dataclasses.replace(config, frames=frames), float(run_fps), float(run_fps)
  if abs(own - run_fps) > 1e-3:
    logging.warning("video %s is %.3f fps but the run was trained at %.3f fps: resampled to "
                    "%.3f fps (proposals also give source-video frames)", source.path, own,
                    run_fps, run_fps)
    frames = dataclasses.replace(config.frames, fps=float(run_fps))
    return dataclasses.replace(config, frames=frames), float(run_fps), float(own)
  return config, float(own), float(own)


def source_frame(frame: int, fps: float, video_fps: float) -> int:
  """The source-video frame that extracted frame ``frame`` (at ``fps``) was taken from.

  The resampler keeps source frame ``floor(k * video_fps / fps)`` as frame ``k``
  (:func:`video.resample_indices`); without resampling (``fps == video_fps``) it is ``frame``.
  """
  return int(math.floor(frame * video_fps / fps + 1e-9))


def with_source_frames(proposals: list, fps: float, video_fps: float) -> list:
  """Proposals with ``onset_source_frame`` / ``offset_source_frame`` added (source video frames,
  0-based, inclusive: the frames the onset and offset frames were taken from)."""
  return [dict(p, onset_source_frame=source_frame(p["onset"], fps, video_fps),
               offset_source_frame=source_frame(p["offset"], fps, video_fps))
          for p in proposals]


def extraction_report(result: extract.VideoResult) -> dict:
  """What spotting a video reports about its extraction: ``face`` (the boxes and the frames
  without a face, 0-based source-video frames) and ``decoding`` (a file that stopped decoding
  early: decoded and container frames, first missing frame); ``{}`` when neither applies."""
  out = {}
  if result.face is not None:
    out["face"] = {"boxes": result.face["boxes"],
                   "frames_without_face": result.face["frames_without_face"],
                   "source_frames_without_face": result.face["frames_without_face_ranges"]}
  if result.decoding is not None:
    out["decoding"] = result.decoding
  return out


def _flat(d: Any, prefix: str = "") -> dict:
  if not isinstance(d, dict):
    return {prefix[:-1]: d}
  out = {}
  for k, v in d.items():
    out.update(_flat(v, f"{prefix}{k}."))
  return out


def setting_differences(run_recorded: dict, given: extract.ExtractionConfig) -> list:
  """``[(field, run's value, given value)]`` where ``given`` differs from a run's recorded
  extraction settings (dotted fields such as ``face.mode``, ``frames.fps``, ``snippet_length``).

  Fields the run did not record (an earlier version's record) and the weights' provenance are
  not compared.
  """
  run = _flat(json.loads(json.dumps(run_recorded)))
  now = _flat(json.loads(json.dumps(given.recorded())))
  return [(k, run[k], now[k]) for k in sorted(now)
          if k in run and not k.startswith("weights.provenance") and run[k] != now[k]]


def extract_file(source: video_lib.VideoSource, config: extract.ExtractionConfig,
                 features_path: str, *,
                 progress: Optional[Callable[[int], None]] = None) -> extract.VideoResult:
  """Extracts one video and writes its feature file (``extract.write_video_features``).

  Raises:
    video_lib.VideoReadError: the video cannot be read, is too short or shows no face (with
      ``face.mode=detect``), naming the file.
    extract.ExtractionError: bad settings or weights.
  """
  extractor = extract.TwoStream(config)
  flow_computer = flow_lib.FlowComputer(config.flow)
  t0 = time.perf_counter()
  try:
    result = extract.extract_video(source, config, extractor, flow_computer, progress=progress)
  finally:
    flow_computer.close()
  fps = config.frames.fps or video_lib.source_fps_of(source, config.frames)
  extract.write_video_features(features_path, result, config, fps)
  logging.info("%s: %d frames -> %d snippets in %.1f s", source.path, result.num_frames,
               result.rgb.shape[0], time.perf_counter() - t0)
  return result
