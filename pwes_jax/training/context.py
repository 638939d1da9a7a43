"""What every fold of a run shares: the compiled programs, the loaded videos, the buckets.

:func:`build_programs` builds a config's model, optimizer and jitted programs once (runs whose
configs share :func:`trace_key` may share them); :func:`make_context` loads the dataset's videos
and fixes the run's length buckets and DFCL bank size. Every fold of a step pads to the same
length bucket (:func:`shared_bucket`, one seeded draw per step); each fold draws its batch from
its own training subjects with its own seed (:func:`fold_sampler`), so a fold trains the same
alone, in a group, or resumed from a checkpoint. :func:`finish_fold` writes a trained fold's
outputs and record.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Optional, Sequence

import numpy as np

from pwes_jax.data import batching
from pwes_jax.data import folds as folds_lib
from pwes_jax.data import layout
from pwes_jax.data import source
from pwes_jax.evaluation import inference
from pwes_jax.method import model as model_lib
from pwes_jax.training import state as state_lib
from pwes_jax.training import steps
from pwes_jax.workdir import run_files


# The config sections a compiled train step and forward read (bound by closure).
TRACED_SECTIONS = ("extensions", "model", "loss", "mplg", "dfcl", "optim")


def trace_key(config) -> str:
  """What the compiled train step and forward depend on: :data:`TRACED_SECTIONS` as JSON.

  Two configs with the same key can share :class:`Programs` (see ``train.train_run``).
  """
  plain = json.loads(config.to_json_best_effort())
  return json.dumps({k: plain.get(k) for k in TRACED_SECTIONS}, sort_keys=True)


@dataclasses.dataclass(frozen=True)
class Programs:
  """A config's model, optimizer and jitted programs, built once per run.

  Runs whose configs share :func:`trace_key` may share one ``Programs`` (pass it
  to ``train.train_and_evaluate``) and reuse the compiled step; ``make_context`` refuses any
  other config.

  Attributes:
    model: the Flax module.
    tx: the optimizer.
    train_step: ``steps.make_train_step`` of the config (donates the state).
    forward: ``inference.make_forward`` of the model.
    trace_key: the config's ``trace_key``.
  """
  model: Any
  tx: Any
  train_step: Callable
  forward: Callable
  trace_key: str


def build_programs(config) -> Programs:
  """Builds the model, optimizer, jitted train step and forward of ``config`` (nothing is
  compiled until first called)."""
  model = model_lib.build_model(config.model)
  tx = state_lib.make_optimizer(config)
  return Programs(model=model, tx=tx, train_step=steps.make_train_step(model, tx, config),
                  forward=inference.make_forward(model),
                  trace_key=trace_key(config))


@dataclasses.dataclass(frozen=True)
class RunContext:
  """What every fold of a run shares.

  Attributes:
    config: the run's config.
    workdir: the run directory.
    dataset: the loaded dataset (metadata).
    videos: ``{name: batching.VideoArrays}`` of every video (features and point labels).
    buckets: the run's bucket lengths (from the dataset-wide video lengths).
    bucket_probs: ``[K]`` float64 probabilities of the shared per-step bucket draw; 0 for a
      bucket some fold cannot fill.
    bank_videos: rows of every fold's DFCL memory bank (the largest training set).
    programs: the run's :class:`Programs`.
    init: ``fold key -> TrainState`` (``state.make_init`` of the run's sizes).
  """
  config: Any
  workdir: str
  dataset: layout.Dataset
  videos: dict
  buckets: tuple
  bucket_probs: np.ndarray
  bank_videos: int
  programs: Programs
  init: Callable

  @property
  def model(self):
    return self.programs.model

  @property
  def tx(self):
    return self.programs.tx


def make_context(config, workdir: str, dataset: layout.Dataset,
                 fold_list: Sequence[folds_lib.Fold], programs: Optional[Programs] = None
                 ) -> RunContext:
  """Loads features and points and fixes the run's buckets and bank size.

  Args:
    config: the run's config.
    workdir: the run directory.
    dataset: the dataset.
    fold_list: every LOSO fold of the run (not only the selected ones: the buckets and the
      bank size must not depend on the selection).
    programs: compiled programs to reuse (same ``trace_key``); built when None.

  Raises:
    ValueError: if no bucket fits a training video of every fold, or ``programs`` was built
      for a config with a different trace key.
    DatasetError: on unreadable features or too many points for ``config.data.max_points``.
  """
  if programs is None:
    programs = build_programs(config)
  elif programs.trace_key != trace_key(config):
    raise ValueError("the given Programs were built for a config whose model, loss or "
                     "optimizer settings differ from this run's; build them for this config")
  videos = source.load_video_arrays(dataset, config)
  lengths = [v.rgb.shape[0] for v in videos.values()]
  buckets = batching.make_buckets(lengths, batch_size=config.optim.batch_size,
                                  max_buckets=config.data.max_buckets,
                                  multiple=config.data.bucket_multiple)
  probs = np.asarray(batching.bucket_probs(lengths, buckets), np.float64)
  # A bucket some fold cannot fill (all its short videos belong to the held-out subject) is
  # never drawn: every fold of a step shares the bucket.
  for f in fold_list:
    shortest = min(videos[n].length for n in f.train_videos)
    probs[np.asarray(buckets) < shortest] = 0.0
  if probs.sum() <= 0:
    raise ValueError("no length bucket fits a training video of every fold; raise "
                     "config.data.max_buckets or check the dataset's video lengths")
  bank_videos = max(len(f.train_videos) for f in fold_list)
  init = state_lib.make_init(programs.model, programs.tx, config, dataset.info.feature_dim,
                            bank_videos)
  return RunContext(config=config, workdir=workdir, dataset=dataset, videos=videos,
                    buckets=tuple(int(b) for b in buckets), bucket_probs=probs / probs.sum(),
                    bank_videos=bank_videos, programs=programs, init=init)


def shared_bucket(ctx: RunContext, step: int) -> int:
  """The length bucket of ``step`` for every fold: ``batching.draw_bucket`` of the run's seed."""
  return batching.draw_bucket(ctx.config.seed, step, ctx.bucket_probs)


def fold_sampler(ctx: RunContext, fold: folds_lib.Fold) -> batching.BatchSampler:
  """The fold's batch sampler over its training videos (seed ``seed * 100003 + fold``)."""
  train = [ctx.videos[n] for n in fold.train_videos]
  return batching.BatchSampler(train, ctx.buckets, ctx.config.optim.batch_size,
                               ctx.config.data.max_points,
                               seed=ctx.config.seed * 100_003 + fold.index,
                               bucket_probs=ctx.bucket_probs)


def fresh_state(ctx: RunContext, fold: folds_lib.Fold) -> state_lib.TrainState:
  """The fold's train state at step 0 (parameters from ``state.fold_key``)."""
  return ctx.init(state_lib.fold_key(ctx.config, fold.index))


def finish_fold(ctx: RunContext, fold: folds_lib.Fold, params, train_summary: dict,
                seconds: Optional[float]) -> dict:
  """Writes a trained fold's per-video outputs (test and training videos) and its record.

  Args:
    ctx: the run.
    fold: the fold.
    params: its trained parameters.
    train_summary: mean metrics of its last logged window.
    seconds: its training time; None when this run did not train it from step 0 (resumed or
      rebuilt from its checkpoint): the fold's earlier record's time is kept when readable,
      else ``train_seconds`` is null.

  Returns:
    The record written to ``fold_XX/fold.json`` (``"finished": true``).
  """
  if seconds is None:
    try:
      earlier = run_files.read_fold_record(ctx.workdir, fold.index)
    except ValueError:
      earlier = None
    seconds = earlier.get("train_seconds") if isinstance(earlier, dict) else None
  names = list(fold.test_videos) + list(fold.train_videos)
  outputs = inference.infer_videos(ctx.programs.forward, params, [ctx.videos[n] for n in names],
                                   ctx.buckets, ctx.config.optim.batch_size)
  run_files.save_outputs(ctx.workdir, fold.index, outputs)
  record = {"fold": fold.index, "test_subject": fold.test_subject,
            "test_videos": list(fold.test_videos), "train_videos": list(fold.train_videos),
            "steps": int(ctx.config.optim.steps), "train_seconds": seconds,
            "train_summary": train_summary, "finished": True}
  run_files.write_fold_record(ctx.workdir, record)
  return record
