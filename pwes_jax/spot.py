"""Spotting with a trained run: feature files in, expression intervals out.

A run's workdir (``launch.main``) holds its config (``config.json``) and, per LOSO fold,
``fold_XX/fold.json`` and Orbax checkpoints. :func:`spot` restores one or several folds'
parameters, runs the network (eval mode) on every given feature file and turns the outputs into
proposals exactly as the run's evaluation does (``proposals.generate_proposals`` with the run's
``config.inference``).

Feature files follow the dataset layout: ``.npz`` with float ``rgb`` and ``flow`` arrays of shape
``[T, F]`` (one row per snippet of ``snippet_length`` frames, ``F`` the model's input width).
Snippets ``s .. e`` map to frames ``s * L .. (e + 1) * L - 1`` (with overlapping windows, the
frames around the windows' centres: :mod:`pwes_jax.data.snippet_time`); seconds are given as
``onset_seconds = onset / fps`` (start of the first frame) and
``offset_seconds = (offset + 1) / fps`` (end of the last frame).

The frame rate, stride and window are the run's dataset's unless given. What a feature file
records about how it was made (:mod:`pwes_jax.data.feature_settings`: ``fps``, stride, window,
``num_frames``) is checked against them before anything runs: features at another rate or
stride stop with one line naming both values and the flag that tells spot theirs (``--fps``,
``--snippet_length``, ``--snippet_window``), and a file's ``num_frames`` must fit its snippet
count (proposals are clipped to its last frame).

Several folds (``fold="all"`` or a spec such as ``"0,2"``): the folds' ``attention [T]`` and
``suppressed [T, C]`` are averaged element-wise (an ensemble of the fold models) and proposals
are generated once from the averages. Note that the averaged ``suppressed`` is the mean of each
fold's ``A * P``, not the product of the mean ``A`` and the mean ``P``.

Videos are padded at the end to a multiple of ``inference.PAD_MULTIPLE`` snippets with a validity
mask (the model ignores padded snippets), so videos of similar lengths share one compiled forward.
"""

from __future__ import annotations

import json
import os
from typing import Mapping, Optional, Sequence, Union

from absl import logging
import jax
import numpy as np

from pwes_jax.workdir import checkpointing
from pwes_jax.workdir import fileio
from pwes_jax.evaluation import inference
from pwes_jax.method import model as model_lib
from pwes_jax.workdir import run_files
from pwes_jax.data import feature_settings
from pwes_jax.data import layout
from pwes_jax.data import snippet_time


# ------------------------------------------------------------------------------------------------
# Parameters from a fold's checkpoints.


def _fold_manager(workdir: str, fold_index: int) -> tuple:
  """``(read-only manager, directory, latest step)`` of the fold's checkpoints."""
  directory = run_files.checkpoint_dir(workdir, fold_index)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"{directory} missing: fold {fold_index} of {workdir} has no "
                            "checkpoint")
  manager = checkpointing.make_manager(directory, read_only=True)
  step = manager.latest_step()
  if step is None:
    manager.close()
    raise FileNotFoundError(f"{directory} holds no checkpoint")
  return manager, directory, int(step)


def _shapes(manager, directory: str, step: int) -> dict:
  tree = manager.item_metadata(step)
  tree = getattr(tree, "tree", tree)
  try:
    feature_dim = int(tree["params"]["embed_rgb"]["channel"]["kernel"].shape[0])
  except (KeyError, TypeError, AttributeError) as e:
    raise ValueError(f"{directory}/{step}: not a PWES train state (no params.embed_rgb."
                     f"channel.kernel: {e!r})") from None
  bank = tree.get("bank") if hasattr(tree, "get") else None
  return {"feature_dim": feature_dim, "bank_videos": int(bank["valid"].shape[0]) if bank else 0}


def checkpoint_shapes(workdir: str, fold_index: int) -> dict:
  """``{"step", "feature_dim", "bank_videos"}`` of the fold's latest checkpoint (metadata only).

  ``bank_videos`` is 0 when the run had no DFCL memory bank.
  """
  manager, directory, step = _fold_manager(workdir, fold_index)
  try:
    return dict(_shapes(manager, directory, step), step=step)
  finally:
    manager.close()


def restore_params(workdir: str, fold_index: int, config, model=None) -> tuple:
  """The parameters of the fold's latest checkpoint (nothing else of the train state is read).

  The restore target is ``model.abstract_params`` of the run's model with the feature width
  read from the checkpoint's metadata, placed on the first local device.

  Returns:
    ``(params, info)``, ``info`` as :func:`checkpoint_shapes`.

  Raises:
    FileNotFoundError: if the fold has no checkpoint.
    ValueError: if the checkpoint does not match the model of the run's ``config.json``.
  """
  model = model or model_lib.build_model(config.model)
  manager, directory, step = _fold_manager(workdir, fold_index)
  try:
    info = dict(_shapes(manager, directory, step), step=step)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = {"params": model_lib.abstract_params(model, info["feature_dim"], device)}
    restored = checkpointing.restore_part(manager, step, abstract,
                                          expected=f"the model of {workdir}/config.json",
                                          remedy="was the run's config.json edited?")
  finally:
    manager.close()
  return restored["params"], info


# ------------------------------------------------------------------------------------------------
# Feature files.


def feature_files(path: str) -> dict:
  """``{video name: file}`` for one ``.npz`` file or every ``*.npz`` in a directory."""
  if os.path.isdir(path):
    files = sorted(f for f in os.listdir(path) if f.endswith(".npz"))
    if not files:
      raise FileNotFoundError(f"{path}: directory holds no .npz feature file")
    return {f[:-len(".npz")]: os.path.join(path, f) for f in files}
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such feature file or directory")
  if not path.endswith(".npz"):
    raise layout.error(path, None, None, "feature files must be .npz with 'rgb' and 'flow'")
  name = os.path.basename(path)[:-len(".npz")]
  return {name: path}


def load_feature_file(path: str, feature_dim: int, video: Optional[str] = None) -> tuple:
  """Loads and validates one feature file; returns float32 ``(rgb, flow)``, each ``[T, F]``.

  Raises:
    DatasetError: naming the file, video and field when an array is missing, not 2-D, not
      floating point, empty, of the wrong width, of different lengths, or not finite.
  """
  video = video or os.path.basename(path)[:-len(".npz")]
  try:
    with np.load(path, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
  except Exception as e:  # noqa: BLE001 - any unreadable file becomes one clear error.
    raise layout.error(path, video, None, f"unreadable feature file ({e})") from None
  for key in ("rgb", "flow"):
    if key not in arrays:
      raise layout.error(path, video, key, f"array missing (has {sorted(arrays)})")
    a = arrays[key]
    if a.ndim != 2:
      raise layout.error(path, video, key, f"expected 2-D [T, F], got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
      raise layout.error(path, video, key, f"dtype {a.dtype} is not floating point")
    if a.shape[0] < 1:
      raise layout.error(path, video, key, "no snippet (T = 0)")
    if a.shape[1] != feature_dim:
      raise layout.error(path, video, key, f"feature width {a.shape[1]} != the model's "
                         f"input width {feature_dim}")
  if arrays["rgb"].shape[0] != arrays["flow"].shape[0]:
    raise layout.error(path, video, "flow", f"rgb has {arrays['rgb'].shape[0]} snippets, flow "
                       f"{arrays['flow'].shape[0]}")
  for key in ("rgb", "flow"):
    bad = ~np.isfinite(arrays[key])
    if bad.any():
      t = int(np.argwhere(bad)[0][0])
      raise layout.error(path, video, key, f"{int(bad.sum())} NaN/Inf values (first at "
                         f"snippet {t})")
  return arrays["rgb"].astype(np.float32), arrays["flow"].astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Proposals.


def with_seconds(proposals: Sequence[Mapping], fps: float) -> list:
  """Spotting's output rows: ``{onset, offset, score, type, onset_seconds, offset_seconds}``
  with ``onset_seconds = onset / fps`` and ``offset_seconds = (offset + 1) / fps``."""
  return [{"onset": p["onset"], "offset": p["offset"], "score": p["score"], "type": p["type"],
           "onset_seconds": p["onset"] / fps, "offset_seconds": (p["offset"] + 1) / fps}
          for p in proposals]


# The flags of launch.spot that say at which settings feature files were made.
SPOT_REMEDY = {"fps": "--fps={}", "snippet_stride": "--snippet_length={}",
               "snippet_window": "--snippet_window={}"}


def _timing(config, workdir: str, fps: Optional[float], snippet_length: Optional[int],
            snippet_window: Optional[int] = None) -> tuple:
  """``(fps, snippet_length, window, run)``: the given values, else the run's ``dataset.json``;
  ``run`` is that dataset's ``{"fps", "snippet_stride", "snippet_window"}`` (None when it cannot
  be read and every value was given)."""
  run = None
  try:
    info = layout.read_info(run_files.dataset_root(config, workdir))
    run = {"fps": info.fps, "snippet_stride": info.snippet_length,
           "snippet_window": snippet_time.window_of(info)}
  except layout.DatasetError as e:
    if fps is None or snippet_length is None:
      raise layout.DatasetError(f"{e}; cannot default fps/snippet_length to the run's dataset: "
                                "pass them explicitly") from None
  fps = run["fps"] if fps is None else fps
  if snippet_window is None:
    snippet_window = (run["snippet_window"] if snippet_length is None or
                      (run and snippet_length == run["snippet_stride"]) else snippet_length)
  snippet_length = run["snippet_stride"] if snippet_length is None else snippet_length
  if not (np.isfinite(fps) and fps > 0):
    raise ValueError(f"fps must be a positive number, got {fps!r}")
  if int(snippet_length) != snippet_length or snippet_length < 1:
    raise ValueError(f"snippet_length must be a positive integer, got {snippet_length!r}")
  if int(snippet_window) != snippet_window or snippet_window < snippet_length:
    raise ValueError(f"snippet_window must be an integer >= snippet_length {snippet_length}, "
                     f"got {snippet_window!r}")
  return float(fps), int(snippet_length), int(snippet_window), run


def feature_file_settings(path: str) -> dict:
  """What a feature file records about how it was made (:func:`feature_settings.read`)."""
  with np.load(path, allow_pickle=False) as z:
    return feature_settings.read({k: z[k] for k in z.files if k in feature_settings.KEYS})


def check_feature_file(path: str, video: str, num_snippets: int, made: dict, *, fps: float,
                       snippet_length: int, window: int, against: str) -> None:
  """Refuses a feature file made at other settings than spotting assumes.

  Raises:
    feature_settings.MismatchError: one line naming the file, both values and the flag of
      ``launch.spot`` that tells spot the file's own (``--fps``, ``--snippet_length``,
      ``--snippet_window``); or a recorded ``num_frames`` that ``num_snippets`` snippets do not
      fit at ``snippet_length`` (naming the stride they imply).
  """
  where = f"file {path}, video {video!r}"
  feature_settings.check(made, {"fps": fps, "snippet_stride": snippet_length,
                                "snippet_window": window},
                         where=where, against=against, remedy=SPOT_REMEDY)
  if "num_frames" in made:
    feature_settings.check_count(num_snippets, made["num_frames"], snippet_length, where=where)


def spot(workdir: str, features: str, *, fold: Union[int, str] = "all",
         fps: Optional[float] = None, snippet_length: Optional[int] = None,
         snippet_window: Optional[int] = None) -> dict:
  """Runs a trained run's model on feature files and returns its proposals.

  Args:
    workdir: the run directory of ``launch.main``.
    features: one ``.npz`` feature file or a directory of them (video name = file stem).
    fold: ``"all"`` (every finished fold, outputs averaged), a fold index or a spec ``"0,2"``.
    fps: frames per second; default the run's ``dataset.json``.
    snippet_length: frames per snippet (the stride); default the run's ``dataset.json``.
    snippet_window: frames per window when windows overlap; default the run's, or
      ``snippet_length`` when that is given and differs from the run's.

  Returns:
    ``{"videos": {name: [{onset, offset, score, type, onset_seconds, offset_seconds}]},
    "folds": [fold indices], "source": features path, ...}`` (proposals highest score first,
    frames 0-based inclusive).

  Raises:
    feature_settings.MismatchError: a feature file made at another frame rate, stride or
      window (module docstring).
  """
  config = run_files.load_config(workdir)
  indices = run_files.select_folds(workdir, fold)
  fps, snippet_length, window, run = _timing(config, workdir, fps, snippet_length,
                                             snippet_window)
  files = feature_files(features)
  shapes = checkpoint_shapes(workdir, indices[0])
  arrays = {name: load_feature_file(path, shapes["feature_dim"], name)
            for name, path in files.items()}
  made = {name: feature_file_settings(path) for name, path in files.items()}
  given = [flag for flag, key, value in (("--fps", "fps", fps),
                                         ("--snippet_length", "snippet_stride", snippet_length))
           if run is None or value != run[key]]  # settings other than the run's
  against = (f"spotting with {' and '.join(given)}" if given else
             f"the run's dataset ({run_files.dataset_root(config, workdir)}/dataset.json)")
  for name, path in files.items():
    check_feature_file(path, name, arrays[name][0].shape[0], made[name], fps=fps,
                       snippet_length=snippet_length, window=window, against=against)
  if run is not None and (fps, snippet_length) != (run["fps"], run["snippet_stride"]):
    logging.warning("spotting features at %g fps and a stride of %d frames with a run trained "
                    "at %g fps and %d frames: the frames and seconds are the features' own, but "
                    "the model sees expressions at another pace than it learnt", fps,
                    snippet_length, run["fps"], run["snippet_stride"])
  records = run_files.finished_folds(workdir)
  trained = [n for n in arrays
             if any(n in records[i].get("train_videos", ()) for i in indices)]
  if trained:
    shown = ", ".join(trained[:5]) + (", ..." if len(trained) > 5 else "")
    logging.warning("%d of %d videos were training videos of fold(s) used (%s): their "
                    "proposals are not held-out predictions", len(trained), len(arrays), shown)
  model = model_lib.build_model(config.model)
  forward = inference.make_forward(model)
  videos = [inference.unlabelled_video(name, rgb, flow) for name, (rgb, flow) in arrays.items()]
  buckets = inference.padded_lengths([v.length for v in videos])
  per_video = {name: [] for name in arrays}
  steps = {}
  for i in indices:
    params, info = restore_params(workdir, i, config, model)
    if info["feature_dim"] != shapes["feature_dim"]:
      raise ValueError(f"fold {i} of {workdir}: input width {info['feature_dim']} differs from "
                       f"fold {indices[0]}'s {shapes['feature_dim']}")
    steps[str(i)] = info["step"]
    if info["step"] != records[i].get("steps", info["step"]):
      logging.warning("fold %d: latest checkpoint is step %d but the fold trained %s steps",
                      i, info["step"], records[i].get("steps"))
    logging.info("fold %d: restored step %d; running %d videos", i, info["step"], len(arrays))
    # One video per call, padded to its own multiple of inference.PAD_MULTIPLE snippets.
    outputs = inference.infer_videos(forward, params, videos, buckets, batch_size=1)
    for name in arrays:
      per_video[name].append(outputs[name])
  result_videos = {
      name: with_seconds(inference.to_proposals(inference.average_outputs(outs), config, fps=fps,
                                                snippet_length=snippet_length, window=window,
                                                num_frames=made[name].get("num_frames")), fps)
      for name, outs in per_video.items()}
  return {"videos": result_videos, "folds": indices, "source": os.path.abspath(features),
          "workdir": os.path.abspath(workdir), "checkpoint_steps": steps,
          "combine": "single fold" if len(indices) == 1 else
                     "mean of the folds' attention and suppressed TCAM",
          "fps": fps, "snippet_length": snippet_length, "snippet_window": window,
          "feature_dim": shapes["feature_dim"]}


def write_json(path: str, result: Mapping) -> str:
  """Writes ``result`` atomically to ``path``; returns the absolute path."""
  out = os.path.abspath(path)
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with fileio.atomic_open(out) as f:
    json.dump(result, f, indent=1)
  return out
