"""The LOSO fold loop: one loop for a single fold or a sharded group of folds side by side.

:func:`train_folds` trains folds one after another (``config.loso.parallel_folds = 1``), each
with the single jitted step, or in groups whose train states are stacked on a leading fold axis
and sharded over a device mesh. Both go through one loop (:func:`_train`) that owns the step
window, the log/save cadence, the NaN check, checkpoints and timing; what differs lives behind
``drivers.Driver``. Folds trained one after another may run ``config.loso.concurrent_folds`` at
a time in threads (``threads.train_threads``), each still its exact sequential computation.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional, Sequence

from absl import logging
import jax
import numpy as np

from pwes_jax.data import folds as folds_lib
from pwes_jax.training import context
from pwes_jax.training import drivers
from pwes_jax.training import metrics_log
from pwes_jax.training import progress as progress_lib
from pwes_jax.training import sharding
from pwes_jax.training import steps
from pwes_jax.training import threads

# Raised by a concurrently trained fold that another fold's failure stopped.
StoppedError = threads.StoppedError


def _train(ctx: context.RunContext, driver: drivers.Driver, log: metrics_log.MetricsLog,
           progress: progress_lib.RunProgress,
           stop: Optional[threading.Event] = None) -> list:
  """Runs ``driver`` from its start step to ``config.optim.steps``; finishes its folds.

  Every ``config.log_every`` steps and at every save, the window's metrics come to the host,
  are checked for NaN/Inf (never checkpoint an unchecked state) and logged per fold as their
  mean, and a multi-process run checks that its other processes are still there; every
  ``config.checkpoint.every_steps`` steps and at the last step the states are saved. The unit's
  training and inference time go to ``progress`` (its phases and its per-fold line with the
  run's ETA).

  Raises:
    NonFiniteLossError: naming the fold and the step of the first non-finite loss.
    StoppedError: when ``stop`` is set (checked before every step).
    sharding.PeerLostError: when another process is gone.
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
      raise threads.StoppedError(f"{driver.label} stopped at step {step}")
    window.append((step, driver.step(step, context.shared_bucket(ctx, step))))
    done = step + 1
    save = done % config.checkpoint.every_steps == 0 or done == config.optim.steps
    if done % config.log_every == 0 or save:
      sharding.check_peers(f"training step {done}")
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
        summary = metrics_log.fold_summary(log.rows(fold.index), fold.index,
                                           config.optim.steps, config.log_every)
      fresh = driver.resumed.get(fold.index, 0) == 0  # else this run's time is not the fold's
      records.append(context.finish_fold(ctx, fold, params[fold.index], summary,
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
  # A config written before the field trained one fold at a time.
  return max(int(config.loso.get("concurrent_folds", 1)), 1)


def train_folds(ctx: context.RunContext, folds: Sequence[folds_lib.Fold],
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
    units = [lambda g=g: drivers.StackedGroup(ctx, folds[g:g + group_size], group_size, mesh, pstep)
             for g in range(0, len(folds), group_size)]
  else:
    units = [lambda f=f: drivers.SingleFold(ctx, f) for f in folds]
  width = min(concurrent_folds(config), len(units) - 1)
  if width <= 1:
    return [r for make_driver in units for r in _train_unit(ctx, make_driver, log, progress)]
  # The first fold trains alone: it compiles every program the others run (all folds share
  # the bucket draws). Compiling them with two folds under way took longer (BUILD_NOTES.md).
  progress.announce_concurrency(width)
  records = _train_unit(ctx, units[0], log, progress)
  with progress.concurrently(width):
    records += threads.train_threads(
        units[1:], width, lambda unit, stop: _train_unit(ctx, unit, log, progress, stop))
  return sorted(records, key=lambda r: r["fold"])


def _train_unit(ctx: context.RunContext, make_driver: Callable[[], drivers.Driver],
                log: metrics_log.MetricsLog, progress: progress_lib.RunProgress,
                stop: Optional[threading.Event] = None) -> list:
  """Builds a unit's driver and trains it; the records of its folds.

  Raises:
    sharding.PeerLostError: when another process of a multi-process run is gone (its
      collectives fail at once; there is no boundary left to agree at).
  """
  # A phase boundary: a failure on any process (a NaN loss, a full disk) ends the unit on
  # every process, with the failing process's message, instead of a hang in the next
  # collective.
  error, records = None, []
  progress.unit_started()
  try:
    with sharding.peers_lost_as_error("training a fold group"):
      with progress.phase("setup"):
        driver = make_driver()
      records = _train(ctx, driver, log, progress, stop)
  except sharding.PeerLostError:
    raise
  except (ValueError, OSError, metrics_log.NonFiniteLossError) as e:
    error = e
  sharding.agree("training a fold group", error)
  return records
