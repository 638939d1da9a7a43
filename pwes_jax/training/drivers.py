"""How one unit of training takes steps: a single fold, or a sharded group of folds side by side.

The loop (``loop.train_folds``) is the same for both; what differs lives behind :class:`Driver`:
how a state is restored, how a step's batch is built and taken, how metrics come back to the
host, how states are saved and which parameters a finished fold has. :class:`SingleFold` runs
the single jitted step; :class:`StackedGroup` stacks the group's train states on a leading fold
axis sharded over a device mesh and runs the stacked step (``steps.make_parallel_step``).
"""

from __future__ import annotations

import abc
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pwes_jax.data import folds as folds_lib
from pwes_jax.training import context
from pwes_jax.training import sharding
from pwes_jax.workdir import checkpointing
from pwes_jax.workdir import run_files


class Driver(abc.ABC):
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


class SingleFold(Driver):
  """One fold, one jitted step (``Programs.train_step``), the state on the default device."""

  def __init__(self, ctx: context.RunContext, fold: folds_lib.Fold):
    self._ctx, self._fold = ctx, fold
    os.makedirs(run_files.fold_dir(ctx.workdir, fold.index), exist_ok=True)
    state = context.fresh_state(ctx, fold)
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
    self._sampler = context.fold_sampler(ctx, fold)
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


class StackedGroup(Driver):
  """A group of folds side by side: one stacked, fold-sharded state and the parallel step.

  The group is padded to ``group_size`` with copies of its first fold marked invalid: padded
  folds never update their state, never checkpoint and never report. Each process builds the
  batches of, checkpoints and reports only the folds on its own devices.
  """

  def __init__(self, ctx: context.RunContext, group: Sequence[folds_lib.Fold], group_size: int, mesh,
               parallel_step: Callable):
    self._ctx, self._mesh, self._pstep, self._size = ctx, mesh, parallel_step, group_size
    n_real = len(group)
    self._padded = list(group) + [group[0]] * (group_size - n_real)
    self._valid = np.array([1.0] * n_real + [0.0] * (group_size - n_real), np.float32)
    self._positions = sharding.local_fold_positions(mesh, group_size)
    self._managers, self.resumed, states = {}, {}, []
    for pos in self._positions:
      fold = self._padded[pos]
      state = context.fresh_state(ctx, fold)
      if self._valid[pos]:
        os.makedirs(run_files.fold_dir(ctx.workdir, fold.index), exist_ok=True)
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
    self._samplers = {pos: context.fold_sampler(ctx, self._padded[pos]) for pos in self._positions}
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
