"""LOSO training and evaluation of a config in a workdir: checks, folds, report.

:func:`train_run` checks the config and the workdir, prepares the dataset, trains every selected
fold that has not finished (``loop.train_folds``) and waits for all processes;
:func:`train_and_evaluate` then evaluates every finished fold of the workdir
(``report.evaluate_run``). The method lives in ``method/objective.py``, the loop in
``training/loop.py``, the run's files in ``workdir/run_files.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Optional

import jax

from pwes_jax.training import checks
from pwes_jax.training import metrics_log
from pwes_jax.training import progress as progress_lib
from pwes_jax import report
from pwes_jax.workdir import lock
from pwes_jax.workdir import run_files
from pwes_jax.training import sharding
from pwes_jax.training import context
from pwes_jax.training import loop
from pwes_jax.data import folds as folds_lib
from pwes_jax.data import layout
from pwes_jax.data import source

# Re-raised by launchers as a clean exit: the message names the fold and the step.
NonFiniteLossError = metrics_log.NonFiniteLossError


@dataclasses.dataclass(frozen=True)
class TrainedRun:
  """What :func:`train_run` leaves for evaluation.

  Attributes:
    dataset: the run's dataset.
    finished: sorted indices of every finished fold of the workdir (on every process).
    lead: True on the process that writes shared files and reports (process 0).
  """
  dataset: layout.Dataset
  finished: list
  lead: bool


def train_run(config, workdir: str, *, programs: Optional[context.Programs] = None,
              progress: Optional[progress_lib.RunProgress] = None) -> TrainedRun:
  """Trains every selected LOSO fold of ``config`` that ``workdir`` has not finished.

  Rerunning with the same ``workdir`` skips finished folds and resumes unfinished ones from their
  latest checkpoint; a resumed fold ends with the same parameters as an uninterrupted one.

  Args:
    config: the run's config (``config.loso.folds`` selects folds).
    workdir: the run directory (created; see ``workdir.run_files`` for its files).
    programs: compiled programs to reuse from an earlier run in this process whose config has
      the same ``context.trace_key`` (sweeps, repeated runs); built when None.
    progress: the run's phase timer and progress lines (``data`` and the trainer's phases are
      added to it); a fresh one when None.

  Returns:
    A :class:`TrainedRun`.

  Raises:
    ValueError: on a config value the run cannot use (naming the field), or a workdir trained
      with another config.
    DatasetError: on a bad dataset (naming file, line and field).
    NonFiniteLossError: when a loss becomes NaN or Inf (naming fold and step).
  """
  with contextlib.ExitStack() as stack:
    return _train_run(config, workdir, programs, stack, progress or progress_lib.RunProgress())


# What a process may fail with before training; shared with every process (sharding.agree).
_START_ERRORS = (ValueError, OSError, layout.DatasetError)


def _train_run(config, workdir, programs, stack: contextlib.ExitStack,
               progress: progress_lib.RunProgress) -> TrainedRun:
  """:func:`train_run` under ``stack`` (which holds the workdir lock on process 0).

  Every process checks the config, the workdir and the dataset before the first collective;
  one all-gather then shares any failure (every process exits with the failing process's
  message) and compares the config with process 0's (naming the first field that differs).
  """
  lead = jax.process_index() == 0
  error, dataset = None, None
  with progress.phase("data"):
    try:
      checks.check_run_config(config)
      os.makedirs(workdir, exist_ok=True)
      if lead:
        stack.enter_context(lock.workdir_lock(workdir))
        run_files.remove_stale_temp_files(workdir)  # what runs killed mid-write left
        checks.check_workdir_config(config, workdir)
      # Every process at once: a synthetic dataset is generated beside its target and renamed
      # into place, so concurrent processes never see a half-written one.
      dataset = source.prepare_dataset(config, workdir)
    except _START_ERRORS as e:
      error = e
    sharding.agree("start (config, workdir and dataset checks)", error,
                   settings=checks.config_fields(config))
    all_folds = folds_lib.loso_folds(dataset)
    selected = folds_lib.select_folds(all_folds, config.loso.folds)
    ctx = context.make_context(config, workdir, dataset, all_folds, programs)
  if lead:
    # Written once, after the config is checked and the dataset loaded: a failed start (a
    # wrong dataset_dir) leaves no config.json behind to refuse the corrected run.
    run_files.write_config(workdir, config)
    checks.warn_unannotated_folds(dataset, selected)
  finished = run_files.finished_folds(workdir, training=True, set_aside_damaged=lead)
  skipped = [f.index for f in selected if f.index in finished]
  if skipped:
    progress.line(f"folds {skipped} already finished in {workdir}; skipping them")
  todo = [f for f in selected if f.index not in finished]
  log = metrics_log.MetricsLog(workdir, config.tensorboard)  # repairs it, even with no fold left
  if todo:
    progress.total_folds = len(todo)
    loop.train_folds(ctx, todo, log, progress)
  sharding.sync("folds finished")
  return TrainedRun(dataset=dataset, finished=list(run_files.finished_folds(workdir)), lead=lead)


def train_and_evaluate(config, workdir: str, *, programs: Optional[context.Programs] = None,
                       progress: Optional[progress_lib.RunProgress] = None) -> dict:
  """:func:`train_run`, then the evaluation of every finished fold of the workdir.

  Evaluating every finished fold, not only this invocation's selection, lets runs split over
  several invocations (``--folds=0-10``, then ``11-21``) report all their folds. Only process
  0 evaluates.

  Prints one progress line per trained fold (with the run's ETA), then a summary of the
  run's phases and compiles, then the paper-style table.

  Args and Raises: as :func:`train_run`.

  Returns:
    ``report.evaluate_run``'s result (written to ``results.json``; ``{}`` on other processes).
  """
  progress = progress or progress_lib.RunProgress()
  with contextlib.ExitStack() as stack:
    run = _train_run(config, workdir, programs, stack, progress)
    if not run.lead:
      return {}
    with progress.phase("evaluation"):
      result = report.evaluate_run(workdir, run.dataset, config, run.finished, verbose=False)
  progress.line(progress.summary())
  with progress.phase("report"):
    report.print_result(result)
  return result
