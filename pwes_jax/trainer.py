"""The LOSO fold loop: one loop for a single fold or a sharded group of folds side by side.

:func:`train_folds` trains folds one after another (``config.loso.parallel_folds = 1``), each
with the single jitted step, or in groups whose train states are stacked on a leading fold axis
and sharded over a device mesh, with the stacked step (``steps.make_parallel_step``). Both go
through one loop (:func:`_train`) that owns the step window, the log/save cadence, the NaN
check, checkpoints and timing; what differs lives behind a small interface (:class:`_Driver`):
how a state is restored, how a step's batch is built and taken, how metrics come back to the
host, how states are saved and which parameters a finished fold has.

Every fold of a step pads to the same length bucket (:func:`shared_bucket`, one seeded draw per
step); each fold draws its batch from its own training subjects with its own seed
(:func:`fold_sampler`), so a fold trains the same alone, in a group, or resumed from a
checkpoint.

Folds trained one after another may also run ``config.loso.concurrent_folds`` at a time, each
in its own thread calling the same compiled programs (:func:`train_folds`): every fold still
runs exactly its sequential computation (bit for bit the same parameters and outputs), while
the threads fill the cores a narrow model's step leaves idle.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import os
import threading
import time
from typing import Any, Callable, Optional, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from pwes_jax import checkpointing
from pwes_jax import config_checks
from pwes_jax import inference
from pwes_jax import metrics_log
from pwes_jax import model as model_lib
from pwes_jax import progress as progress_lib
from pwes_jax import run_dir
from pwes_jax import sharding
from pwes_jax import state as state_lib
from pwes_jax import steps
from pwes_jax.data import batching
from pwes_jax.data import folds as folds_lib
from pwes_jax.data import layout
from pwes_jax.data import source


@dataclasses.dataclass(frozen=True)
class Programs:
  """A config's model, optimizer and jitted programs, built once per run.

  Runs whose configs share :func:`config_checks.trace_key` may share one ``Programs`` (pass it
  to ``train.train_and_evaluate``) and reuse the compiled step; ``make_context`` refuses any
  other config.

  Attributes:
    model: the Flax module.
    tx: the optimizer.
    train_step: ``steps.make_train_step`` of the config (donates the state).
    forward: ``inference.make_forward`` of the model.
    trace_key: the config's ``config_checks.trace_key``.
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
                  trace_key=config_checks.trace_key(config))


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
  elif programs.trace_key != config_checks.trace_key(config):
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
      earlier = run_dir.read_fold_record(ctx.workdir, fold.index)
    except ValueError:
      earlier = None
    seconds = earlier.get("train_seconds") if isinstance(earlier, dict) else None
  names = list(fold.test_videos) + list(fold.train_videos)
  outputs = inference.infer_videos(ctx.programs.forward, params, [ctx.videos[n] for n in names],
                                   ctx.buckets, ctx.config.optim.batch_size)
  run_dir.save_outputs(ctx.workdir, fold.index, outputs)
  record = {"fold": fold.index, "test_subject": fold.test_subject,
            "test_videos": list(fold.test_videos), "train_videos": list(fold.train_videos),
            "steps": int(ctx.config.optim.steps), "train_seconds": seconds,
            "train_summary": train_summary, "finished": True}
  run_dir.write_fold_record(ctx.workdir, record)
  return record


# ------------------------------------------------------------------------------------------------
# The loop and its two drivers.


class _Driver(abc.ABC):
  """How one unit of training (a fold, or a group of folds) takes steps.

  Attributes (set by the constructor, which restores the latest checkpoints):
    folds: the folds this process trains, reports and checkpoints.
    start: the first step to take.
    resumed: ``{fold index: step}`` of the folds restored from a checkpoint.
    label: names the unit in progress lines.
  """
  folds: list
  start: int
  resumed: dict
  label: str

  @abc.abstractmethod
  def step(self, step: int, bucket: int) -> Any:
    """Takes step ``step`` (padded to ``bucket``); returns its metrics, still on device."""

  @abc.abstractmethod
  def fetch(self, window: list) -> dict:
    """``{fold index: [(step, host metrics)]}`` of a window ``[(step, device metrics)]``,
    without the steps a fold did not take."""

  @abc.abstractmethod
  def save(self, done: int) -> None:
    """Checkpoints every fold's state as step ``done``."""

  @abc.abstractmethod
  def finish(self) -> dict:
    """Closes the checkpoint managers; returns ``{fold index: trained params}``."""

  @abc.abstractmethod
  def summary_line(self, steps_run: int, seconds: float) -> str:
    """The line printed when the unit has trained."""


class _SingleFold(_Driver):
  """One fold, one jitted step (``Programs.train_step``), the state on the default device."""

  def __init__(self, ctx: RunContext, fold: folds_lib.Fold):
    self._ctx, self._fold = ctx, fold
    os.makedirs(run_dir.fold_dir(ctx.workdir, fold.index), exist_ok=True)
    state = fresh_state(ctx, fold)
    self._manager = checkpointing.fold_manager(ctx.workdir, fold.index, ctx.config)
    restored = checkpointing.restore_latest(self._manager, state)
    self.resumed = {}
    if restored is not None:
      # Orbax returns arrays committed to a device, a fresh state's are not: the step would
      # compile a second program for every bucket. ``device_put`` without a device gives
      # uncommitted arrays on the default device, as ``fresh_state`` does.
      state = jax.device_put(jax.device_get(restored))
      self.resumed[fold.index] = int(state.step)
    self._state = state
    self._sampler = fold_sampler(ctx, fold)
    self.folds, self.start, self.label = [fold], int(state.step), f"fold {fold.index}"

  def step(self, step, bucket):
    batch = self._sampler.sample(step, bucket=bucket)
    self._state, metrics = self._ctx.programs.train_step(self._state, batch)
    return metrics

  def fetch(self, window):
    return {self._fold.index: [(s, jax.device_get(m)) for s, m in window]}

  def save(self, done):
    checkpointing.save(self._manager, done, self._state)

  def finish(self):
    checkpointing.prune(self._manager, self._ctx.config.checkpoint.max_to_keep)
    self._manager.close()
    return {self._fold.index: self._state.params}

  def summary_line(self, steps_run, seconds):
    return (f"fold {self._fold.index:2d} (subject {self._fold.test_subject}): {steps_run} steps "
            f"in {seconds:.1f} s ({steps_run / max(seconds, 1e-9):.1f} steps/s)")


class _StackedGroup(_Driver):
  """A group of folds side by side: one stacked, fold-sharded state and the parallel step.

  The group is padded to ``group_size`` with copies of its first fold marked invalid: padded
  folds never update their state, never checkpoint and never report. Each process builds the
  batches of, checkpoints and reports only the folds on its own devices.
  """

  def __init__(self, ctx: RunContext, group: Sequence[folds_lib.Fold], group_size: int, mesh,
               parallel_step: Callable):
    self._ctx, self._mesh, self._pstep, self._size = ctx, mesh, parallel_step, group_size
    n_real = len(group)
    self._padded = list(group) + [group[0]] * (group_size - n_real)
    self._valid = np.array([1.0] * n_real + [0.0] * (group_size - n_real), np.float32)
    self._positions = sharding.local_fold_positions(mesh, group_size)
    self._managers, self.resumed, states = {}, {}, []
    for pos in self._positions:
      fold = self._padded[pos]
      state = fresh_state(ctx, fold)
      if self._valid[pos]:
        os.makedirs(run_dir.fold_dir(ctx.workdir, fold.index), exist_ok=True)
        self._managers[pos] = checkpointing.fold_manager(ctx.workdir, fold.index, ctx.config)
        restored = checkpointing.restore_latest(self._managers[pos], state)
        if restored is not None:
          state = restored
          self.resumed[fold.index] = int(state.step)
      states.append(jax.device_get(state))
    local_steps = [int(s.step) for s, p in zip(states, self._positions) if self._valid[p]]
    self.start = sharding.global_min(min(local_steps) if local_steps
                                     else ctx.config.optim.steps)
    self._stacked = jax.tree.map(lambda x: sharding.global_array(mesh, x, group_size),
                                 sharding.stack(states))
    self._valid_array = sharding.global_array(mesh, self._valid[self._positions], group_size)
    self._samplers = {pos: fold_sampler(ctx, self._padded[pos]) for pos in self._positions}
    self.folds = [self._padded[p] for p in self._managers]
    self.label = "folds [" + ", ".join(str(f.index) for f in group) + "]"
    self._num_folds = n_real

  def step(self, step, bucket):
    cache, rows = {}, []  # padded positions repeat their group's first fold: sample it once
    for pos in self._positions:
      key = self._padded[pos].index
      if key not in cache:
        cache[key] = self._samplers[pos].sample(step, bucket=bucket)
      rows.append(cache[key])
    batch = jax.tree.map(lambda x: sharding.global_array(self._mesh, x, self._size),
                         sharding.stack(rows))
    self._stacked, metrics = self._pstep(self._stacked, batch, self._valid_array,
                                         jnp.int32(step))
    return metrics

  def fetch(self, window):
    fetched = [(s, sharding.local_rows(m, self._positions)) for s, m in window]
    out = {}
    for i, pos in enumerate(self._positions):
      if not self._valid[pos]:
        continue
      part = [(s, {k: v[i] for k, v in m.items()}) for s, m in fetched]
      out[self._padded[pos].index] = [(s, m) for s, m in part if m["active"] > 0]
    return out

  def save(self, done):
    if not self._managers:
      return
    saved = list(self._managers)
    rows = sharding.local_rows(self._stacked, saved)  # one transfer per leaf for all local folds
    for i, pos in enumerate(saved):
      checkpointing.save(self._managers[pos], done, jax.tree.map(lambda x, i=i: x[i], rows))

  def finish(self):
    params = {}
    for pos, manager in self._managers.items():
      checkpointing.prune(manager, self._ctx.config.checkpoint.max_to_keep)
      manager.close()
      params[self._padded[pos].index] = jax.device_put(
          sharding.fold_slice(self._stacked, pos).params)
    return params

  def summary_line(self, steps_run, seconds):
    return (f"{self.label} side by side on {self._mesh.devices.size} device(s): {steps_run} "
            f"steps in {seconds:.1f} s ({steps_run * self._num_folds / max(seconds, 1e-9):.1f} "
            "fold-steps/s)")


class StoppedError(Exception):
  """A concurrently trained fold stopped because another fold failed or the run was
  interrupted (its latest checkpoint stays; rerunning resumes it)."""


def _train(ctx: RunContext, driver: _Driver, log: metrics_log.MetricsLog,
           progress: progress_lib.RunProgress,
           stop: Optional[threading.Event] = None) -> list:
  """Runs ``driver`` from its start step to ``config.optim.steps``; finishes its folds.

  Every ``config.log_every`` steps and at every save, the window's metrics come to the host,
  are checked for NaN/Inf (never checkpoint an unchecked state) and logged per fold as their
  mean; every ``config.checkpoint.every_steps`` steps and at the last step the states are
  saved. The unit's training and inference time go to ``progress`` (its phases and its
  per-fold line with the run's ETA).

  Raises:
    NonFiniteLossError: naming the fold and the step of the first non-finite loss.
    StoppedError: when ``stop`` is set (checked before every step).
  """
  config = ctx.config
  for fold in driver.folds:
    step = driver.resumed.get(fold.index, 0)
    if fold.index in driver.resumed:
      logging.info("fold %d: resumed at step %d", fold.index, step)
    log.truncate(fold.index, step)  # a fold restarted from scratch drops all its old rows
  history = {f.index: [] for f in driver.folds}
  window, t0, t_window, rates = [], time.time(), time.time(), []
  for step in range(driver.start, config.optim.steps):
    if stop is not None and stop.is_set():
      raise StoppedError(f"{driver.label} stopped at step {step}")
    window.append((step, driver.step(step, shared_bucket(ctx, step))))
    done = step + 1
    save = done % config.checkpoint.every_steps == 0 or done == config.optim.steps
    if done % config.log_every == 0 or save:
      per_fold = driver.fetch(window)
      rate = len(window) / max(time.time() - t_window, 1e-9)
      rates.append(rate)
      losses = []
      for fold_index, part in per_fold.items():
        if not part:  # a fold resumed ahead of its group waits
          continue
        metrics_log.check_finite(part, fold_index)
        history[fold_index].extend(part)
        mean = metrics_log.summarize(part)
        log.write(fold_index, done, dict(mean, steps_per_sec=rate))
        losses.append(f"{mean['loss']:.4f}")
      logging.info("%s step %d/%d: loss %s (%.1f steps/s)", driver.label, done,
                   config.optim.steps, ", ".join(losses) or "-", rate)
      window, t_window = [], time.time()
    if save:
      driver.save(done)
  seconds = time.time() - t0
  progress.add("training", seconds)
  t_infer = time.time()
  with progress.phase("inference"):
    params = driver.finish()
    records = []
    for fold in driver.folds:
      tail = history[fold.index][-config.log_every:]
      if len(tail) >= min(config.log_every, config.optim.steps):
        summary = metrics_log.summarize(tail)
      else:  # resumed too late for the last window to be in memory: rebuild it from the log
        summary = metrics_log.summary_from_rows(log.rows(fold.index), config.optim.steps,
                                                config.log_every)
      fresh = driver.resumed.get(fold.index, 0) == 0  # else this run's time is not the fold's
      records.append(finish_fold(ctx, fold, params[fold.index], summary,
                                 seconds if fresh else None))
  infer = time.time() - t_infer
  steps_run = config.optim.steps - driver.start
  steady = steps_run / float(np.median(rates)) if rates else seconds  # without the compiles
  progress.unit_done(f"{driver.summary_line(steps_run, seconds)}; inference {infer:.1f} s",
                     len(driver.folds), seconds + infer, steady + infer)
  return records


def concurrent_folds(config) -> int:
  """Folds trained at a time in threads: ``config.loso.concurrent_folds`` (1 when absent), or 1
  when folds train side by side in one step (``parallel_folds > 1``) or over processes."""
  if config.loso.parallel_folds > 1 or jax.process_count() > 1:
    return 1
  default = config_checks.ADDED_FIELDS["loso.concurrent_folds"]  # a config from before the field
  return max(int(config.loso.get("concurrent_folds", default)), 1)


def train_folds(ctx: RunContext, folds: Sequence[folds_lib.Fold],
                log: metrics_log.MetricsLog,
                progress: Optional[progress_lib.RunProgress] = None) -> list:
  """Trains ``folds`` (resuming each from its latest checkpoint) and writes their outputs.

  With ``config.loso.parallel_folds = 1`` the folds train one after another, or
  ``config.loso.concurrent_folds`` at a time in threads (:func:`concurrent_folds`): the first
  fold trains alone and compiles every program (all folds share the bucket draws), then each
  thread takes the next fold in order, calling the same compiled programs. Every fold's
  parameters and outputs are the same bits either way. Otherwise the folds train in groups of
  ``parallel_folds`` (padded up to a multiple of the mesh size), each group stacked and sharded
  over a 1-D ``fold`` mesh of ``min(devices, parallel_folds)`` devices.

  Args:
    ctx: the run (:func:`make_context`).
    folds: the folds to train, in order.
    log: the run's metrics log.
    progress: the run's phase timer and progress lines (a fresh one for ``folds`` when None).

  Returns:
    The records of the folds this process finished (``fold.json`` contents), in fold order.

  Raises:
    NonFiniteLossError: when a fold's loss becomes NaN or Inf (with concurrent folds: the
      lowest failing fold's; the other threads stop at their next step, leaving their latest
      checkpoints for a rerun to resume).
  """
  config = ctx.config
  if progress is None:
    progress = progress_lib.RunProgress(len(folds))
  if config.loso.parallel_folds > 1:
    group_size, mesh_size = sharding.group_layout(len(folds), config.loso.parallel_folds,
                                                  jax.device_count())
    mesh = sharding.fold_mesh(mesh_size)
    pstep = steps.make_parallel_step(ctx.model, ctx.tx, config, mesh)
    units = [lambda g=g: _StackedGroup(ctx, folds[g:g + group_size], group_size, mesh, pstep)
             for g in range(0, len(folds), group_size)]
  else:
    units = [lambda f=f: _SingleFold(ctx, f) for f in folds]
  width = min(concurrent_folds(config), len(units) - 1)
  if width <= 1:
    return [r for make_driver in units for r in _train_unit(ctx, make_driver, log, progress)]
  # The first fold trains alone: it compiles every program the others run (all folds share
  # the bucket draws). Compiling them with two folds under way took longer (BUILD_NOTES.md).
  progress.announce_concurrency(width)
  records = _train_unit(ctx, units[0], log, progress)
  with progress.concurrently(width):
    records += _train_threads(ctx, units[1:], width, log, progress)
  return sorted(records, key=lambda r: r["fold"])


def _train_unit(ctx: RunContext, make_driver: Callable[[], _Driver],
                log: metrics_log.MetricsLog, progress: progress_lib.RunProgress,
                stop: Optional[threading.Event] = None) -> list:
  """Builds a unit's driver and trains it; the records of its folds."""
  # A phase boundary: a failure on any process (a NaN loss, a full disk) ends the unit on
  # every process, with the failing process's message, instead of a hang in the next
  # collective.
  error, records = None, []
  progress.unit_started()
  try:
    with progress.phase("setup"):
      driver = make_driver()
    records = _train(ctx, driver, log, progress, stop)
  except (ValueError, OSError, metrics_log.NonFiniteLossError) as e:
    error = e
  sharding.agree("training a fold group", error)
  return records


# JAX's context managers hold thread-local state: a fold thread starts from the process-wide
# values, so the caller's (``jax.default_device``, a matmul precision, ``debug_nans``, ...) are
# entered again in every fold thread.
_THREAD_CONTEXTS = (
    ("jax_default_device", jax.default_device),
    ("jax_default_matmul_precision", jax.default_matmul_precision),
    ("jax_debug_nans", jax.debug_nans),
    ("jax_debug_infs", jax.debug_infs),
    ("jax_numpy_rank_promotion", jax.numpy_rank_promotion),
    ("jax_numpy_dtype_promotion", jax.numpy_dtype_promotion),
    ("jax_disable_jit", jax.disable_jit),
    ("jax_log_compiles", jax.log_compiles),
)


def _caller_jax_context() -> Callable[[], contextlib.ExitStack]:
  """A factory of a context that re-enters, in another thread, the calling thread's values of
  JAX's context managers (:data:`_THREAD_CONTEXTS`)."""
  values = [(manager, getattr(jax.config, name)) for name, manager in _THREAD_CONTEXTS]

  def enter() -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    for manager, value in values:
      stack.enter_context(manager(value))
    return stack
  return enter


def _train_threads(ctx: RunContext, units: Sequence[Callable[[], _Driver]], width: int,
                   log: metrics_log.MetricsLog, progress: progress_lib.RunProgress) -> list:
  """Trains ``units`` (single folds, in order) ``width`` at a time, one thread each.

  Each thread runs under the caller's JAX context (device, matmul precision, debug flags:
  :func:`_caller_jax_context`). The first failure stops every thread before its next step;
  the error of the earliest unit that failed is raised (as a sequential run would have raised
  it first). An exception in the calling thread (Ctrl-C's SystemExit) stops the threads too
  and waits for them: a fold's checkpoint or outputs being written are finished, not cut.
  """
  jax_context = _caller_jax_context()
  stop = threading.Event()
  lock = threading.Lock()
  pending = list(enumerate(units))
  records, errors = [], {}

  def worker():
    while not stop.is_set():
      with lock:
        if not pending:
          return
        position, make_driver = pending.pop(0)
      try:
        done = _train_unit(ctx, make_driver, log, progress, stop)
      except StoppedError:
        return
      except BaseException as e:  # pylint: disable=broad-except  (re-raised by the caller)
        with lock:
          errors[position] = e
        stop.set()
        return
      with lock:
        records.extend(done)

  # Each thread sets its own event when it ends. The calling thread waits on the events, not
  # with ``Thread.join``: a ``join`` that an exception from a signal handler (Ctrl-C) cuts short
  # leaves the thread marked as ended on CPython 3.11, and the next ``join`` returns at once
  # while the fold still writes its checkpoint.
  ended = [threading.Event() for _ in range(width)]

  def run(event):
    try:
      with jax_context():
        worker()
    finally:
      event.set()

  threads = [threading.Thread(target=run, args=(ended[i],), name=f"pwes-fold-{i}", daemon=True)
             for i in range(width)]
  try:
    for t in threads:
      t.start()
    for event in ended:
      while not event.wait(0.5):  # a timed wait: Ctrl-C reaches the calling thread at once
        pass
  finally:
    stop.set()
    for t, event in zip(threads, ended):
      if t.ident is not None:  # started
        event.wait()
  if errors:
    raise errors[min(errors)]
  return records
