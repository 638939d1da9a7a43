"""One raw video -> a feature file, with a trained run's extraction settings (spot --video).

A run trained on features made by ``launch.extract_features`` has those settings in its
dataset's ``dataset.json`` (``extraction``: frames, face crop, flow, snippets, weights' names).
:func:`run_settings` reads them back into an :class:`extract.ExtractionConfig` (the weights
files themselves are given again: only their names are recorded), and :func:`extract_file`
writes the video's ``rgb``/``flow`` features exactly as ``extract_features`` would, so spotting
them gives the proposals the feature path gives.

Frame rate: a model is trained at its dataset's rate. When the settings keep every frame
(``frames.fps`` unset) and the video's own rate differs from the run's, the video is resampled
to the run's rate with a warning (the same resampling as ``--fps``); seconds in the proposals
are then at that rate.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, Optional

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
    dataset_dir: the run's dataset directory (``run_dir.dataset_root``).
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
  """``(config, fps)``: resampled to ``run_fps`` when the video's own rate differs (warning)."""
  if config.frames.fps is not None:
    return config, float(config.frames.fps)
  own = video_lib.source_fps_of(source, config.frames)
  if own is None:  # A frame folder without source_fps: taken at the run's rate.
    frames = dataclasses.replace(config.frames, source_fps=run_fps)
    return dataclasses.replace(config, frames=frames), float(run_fps)
  if abs(own - run_fps) > 1e-3:
    logging.warning("video %s is %.3f fps but the run was trained at %.3f fps: resampled to "
                    "%.3f fps", source.path, own, run_fps, run_fps)
    frames = dataclasses.replace(config.frames, fps=float(run_fps))
    return dataclasses.replace(config, frames=frames), float(run_fps)
  return config, float(own)


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
  extract.write_video_features(features_path, result)
  logging.info("%s: %d frames -> %d snippets in %.1f s", source.path, result.num_frames,
               result.rgb.shape[0], time.perf_counter() - t0)
  return result
