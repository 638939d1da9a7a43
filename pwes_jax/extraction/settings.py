"""The video-extraction settings of a trained run, reconciled with what the user passed.

Spotting a raw video (``launch.spot --video``) extracts its features as the run's own were
extracted: with the settings recorded in the run's dataset (``dataset.json``'s ``extraction``,
written by ``launch.extract_features``; :func:`from_video.run_settings`), or with settings the
user gives (``--extraction_config``, needed for a run whose features came from elsewhere), each
field that differs from the recorded one warned about. The weights files are given again (only
their names are recorded). The video is resampled to the run's frame rate when its own differs
(:func:`from_video.match_rate`). :func:`check_feature_width` refuses a run whose models do not
take the extracted features.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

from absl import logging

from pwes_jax.data import layout
from pwes_jax.extraction import extract
from pwes_jax.extraction import from_video
from pwes_jax.extraction import video as video_lib
from pwes_jax.workdir import run_files


@dataclasses.dataclass(frozen=True)
class VideoSettings:
  """How one video is extracted for a run.

  Attributes:
    config: the extraction settings (resampled to the run's rate where needed).
    source: the video.
    dataset_dir: the run's dataset directory (its ``dataset.json``).
    fps: the rate of the extracted frames (the proposals' frames).
    video_fps: the video's own rate.
  """
  config: extract.ExtractionConfig
  source: video_lib.VideoSource
  dataset_dir: str
  fps: float
  video_fps: float


def check_feature_width(workdir: str, width: int, fold_index: int) -> None:
  """Refuses a run whose models do not take the extracted two-stream I3D features.

  Args:
    workdir: the run directory (for the message).
    width: the feature width per stream of the run's models (a checkpoint's ``feature_dim``).
    fold_index: the fold whose checkpoint gave ``width`` (for the message).

  Raises:
    extract.ExtractionError: ``width`` is not ``extract.FEATURE_DIM``, saying what to do.
  """
  if width != extract.FEATURE_DIM:
    raise extract.ExtractionError(
        f"the run {workdir} takes features {width} wide per stream (fold "
        f"{fold_index}'s checkpoint), but --video extracts two-stream I3D features "
        f"{extract.FEATURE_DIM} wide per stream (rgb and flow): spot this run with --features of "
        f"its own kind, or train a run on features from launch.extract_features")


def video_settings(workdir: str, video: str, *, extraction: Any = None,
                   rgb_weights: Optional[str] = None, flow_weights: Optional[str] = None,
                   announce: Optional[Callable[[str], None]] = None) -> VideoSettings:
  """The settings to extract ``video`` with for the run in ``workdir``.

  With ``extraction`` those settings are used (the weights given here replace its
  ``i3d.rgb_weights`` / ``i3d.flow_weights``) and a warning names each field that differs from
  the run's recorded settings; without, the run's recorded settings are read back
  (``from_video.run_settings``, ``kinetics400`` the default RGB weights when the run used
  them). A video at another rate than the run's is resampled to it (with a warning).

  Args:
    workdir: the trained run's directory (its ``config.json`` names the dataset).
    video: a video file or a folder of frame images.
    extraction: a ``configs/extraction.py`` ``ConfigDict`` to use instead of the run's recorded
      settings (left unchanged), or None.
    rgb_weights: the I3D RGB weights (a converted ``.npz`` or ``kinetics400``), or None.
    flow_weights: the converted I3D flow weights, or None.
    announce: called with one line saying where the settings came from, once they are chosen
      (before any warning about them or about the frame rate).

  Returns:
    A :class:`VideoSettings`.

  Raises:
    extract.ExtractionError: bad settings, or the run's dataset has no recorded settings and
      ``extraction`` is None, or weights are needed and not given.
    layout.DatasetError: the run's ``dataset.json`` is missing or unreadable (naming it).
    video_lib.VideoReadError: ``video`` does not exist or cannot be opened (naming it).
    FileNotFoundError: ``workdir`` or its ``config.json`` does not exist.
    ValueError: the run's ``config.json`` is not valid JSON.
  """
  say = announce or (lambda text: None)
  run_config = run_files.load_config(workdir)
  root = run_files.dataset_root(run_config, workdir)
  run_info = layout.read_info(root)
  source = from_video.video_source(video)
  if extraction is not None:
    config = extract.from_config_dict(extraction)
    weights = {field: value for field, value in (("rgb_weights", rgb_weights),
                                                 ("flow_weights", flow_weights))
               if value is not None}
    config = dataclasses.replace(config, **weights)
    say("extraction settings from --extraction_config")
    recorded = run_info.extras.get("extraction")
    if isinstance(recorded, dict):
      for field, run_value, given in from_video.setting_differences(recorded, config):
        logging.warning("--extraction_config differs from the run's extraction settings "
                        "(%s/dataset.json): %s is %r, the run's %r", root, field, given,
                        run_value)
  else:
    config, _ = from_video.run_settings(root, rgb_weights=rgb_weights, flow_weights=flow_weights)
    say(f"extraction settings of the run's dataset {root}/dataset.json")
  config, fps, video_fps = from_video.match_rate(config, source, run_info.fps)
  return VideoSettings(config=config, source=source, dataset_dir=root, fps=fps,
                       video_fps=video_fps)
