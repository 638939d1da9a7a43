"""LOSO folds side by side: train states stacked on a fold axis and sharded over a device mesh.

A group of ``G`` folds keeps one stacked :class:`~pwes_jax.train.TrainState` whose every leaf has
a leading fold axis, sharded as ``NamedSharding(mesh, P("fold"))``. One jitted step trains every
fold of the group at once: ``jax.shard_map`` over the fold axis around ``jax.vmap`` of the
sequential step (a plain ``jit(vmap(step))`` with a sharded fold axis fails to compile on this JAX
version when a convolution has fewer output channels than devices). All folds of a step share one
length bucket; each fold draws its batch from its own training subjects, exactly as it would when
trained alone, so a parallel run reproduces the sequential one.

The group is padded to a multiple of the mesh size with copies of its first fold marked invalid
by ``fold_valid``: padded folds never update their state, never checkpoint and never report.

Multi-host: after ``jax.distributed.initialize`` the mesh spans every process's devices; each
process builds the batches of, checkpoints and reports only the folds on its own devices.
"""

from __future__ import annotations

import functools
import math
import os
import time
from typing import Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from pwes_jax import checkpointing
from pwes_jax import train as train_lib

FOLD_AXIS = "fold"


def fold_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh named ``fold`` over ``num_devices`` devices (all by default).

  In a multi-process run every process contributes the same number of its local devices, in
  process order, so each process holds a contiguous block of the group's folds.
  """
  n = num_devices or jax.device_count()
  procs = jax.process_count()
  if procs == 1:
    return jax.make_mesh((n,), (FOLD_AXIS,), devices=jax.devices()[:n])
  if n % procs:
    raise ValueError(f"{n} fold-mesh devices cannot be split evenly over {procs} processes; "
                     f"make config.loso.parallel_folds a multiple of {procs}")
  per = n // procs
  by_proc = {}
  for d in jax.devices():
    by_proc.setdefault(d.process_index, []).append(d)
  if any(len(v) < per for v in by_proc.values()):
    raise ValueError(f"every process needs {per} devices for a {n}-device fold mesh")
  devices = [d for p in sorted(by_proc) for d in by_proc[p][:per]]
  return jax.sharding.Mesh(np.array(devices), (FOLD_AXIS,))


def group_layout(num_folds: int, parallel_folds: int, num_devices: int) -> tuple:
  """``(group_size, mesh_size)`` for ``num_folds`` folds, ``parallel_folds`` at a time.

  The mesh takes ``min(num_devices, parallel_folds)`` devices; a group's fold count is padded
  up to a multiple of the mesh size (padded folds are masked out by ``fold_valid``).
  """
  parallel_folds = max(1, parallel_folds)
  per_group = max(1, min(parallel_folds, num_folds))
  mesh_size = max(1, min(num_devices, parallel_folds))
  return int(math.ceil(per_group / mesh_size) * mesh_size), mesh_size


def stack(trees: Sequence) -> object:
  """Stacks pytrees of equal structure on a new leading (fold) axis."""
  return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def make_parallel_step(model, tx, config, mesh):
  """``(states, batches, fold_valid [G], step) -> (states, metrics)``, jitted, states donated.

  A fold updates only where ``fold_valid`` and its own ``state.step == step`` (so folds resumed
  from checkpoints at different steps wait for the group to reach them).
  """
  one = functools.partial(train_lib.train_step, model=model, tx=tx, config=config)

  def per_fold(state, batch, valid, step):
    active = jnp.logical_and(valid > 0, state.step == step)
    # The bank write is vetoed inside the step (an in-place scatter); a where() over the bank
    # would keep the old bank alive beside the new one and copy it every step.
    new, metrics = one(state, batch, bank_write=active.astype(jnp.float32))
    bank = new.bank
    new = jax.tree.map(lambda n, o: jnp.where(active, n, o), new.replace(bank=None),
                       state.replace(bank=None))
    metrics = dict(metrics, active=active.astype(jnp.float32))
    return new.replace(bank=bank), metrics

  def local(states, batches, fold_valid, step):
    return jax.vmap(per_fold, in_axes=(0, 0, 0, None))(states, batches, fold_valid, step)

  sharded = jax.shard_map(local, mesh=mesh,
                          in_specs=(P(FOLD_AXIS), P(FOLD_AXIS), P(FOLD_AXIS), P()),
                          out_specs=(P(FOLD_AXIS), P(FOLD_AXIS)))
  return jax.jit(sharded, donate_argnums=0)


def _global_array(mesh, local_rows: np.ndarray, global_rows: int) -> jax.Array:
  """A fold-sharded global array from this process's rows (all rows on a single host)."""
  sharding = NamedSharding(mesh, P(FOLD_AXIS))
  shape = (global_rows,) + local_rows.shape[1:]
  return jax.make_array_from_process_local_data(sharding, local_rows, shape)


def local_fold_positions(mesh, group_size: int) -> list:
  """Positions in the group of the folds whose shards live on this process's devices."""
  sharding = NamedSharding(mesh, P(FOLD_AXIS))
  idx = sharding.addressable_devices_indices_map((group_size,))
  pos = set()
  for sl in idx.values():
    pos.update(range(*sl[0].indices(group_size)))
  return sorted(pos)


def _local_rows(tree, positions: Sequence[int]):
  """This process's fold rows of a fold-sharded pytree, fetched once per leaf: leaves
  ``[len(positions), ...]`` in the order of ``positions``."""
  def rows(x):
    parts = {}
    for shard in x.addressable_shards:
      lo = shard.index[0].indices(x.shape[0])[0]
      data = np.asarray(shard.data)
      for j in range(data.shape[0]):
        parts[lo + j] = data[j]
    missing = [p for p in positions if p not in parts]
    if missing:
      raise ValueError(f"fold positions {missing} are not on this process")
    return np.stack([parts[p] for p in positions])
  return jax.tree.map(rows, tree)


def fold_slice(stacked, position: int):
  """One fold's state (host numpy) out of the stacked, sharded state."""
  return jax.tree.map(lambda x: x[0], _local_rows(stacked, [position]))


def train_folds_parallel(ctx: train_lib.RunContext, folds: Sequence, log) -> list:
  """Trains ``folds`` in groups of ``config.loso.parallel_folds``; writes their outputs."""
  config = ctx.config
  group_size, mesh_size = group_layout(len(folds), config.loso.parallel_folds,
                                       jax.device_count())
  mesh = fold_mesh(mesh_size)
  pstep = make_parallel_step(ctx.model, ctx.tx, config, mesh)
  forward = train_lib.make_forward(ctx.model)
  records = []
  for g0 in range(0, len(folds), group_size):
    group = list(folds[g0:g0 + group_size])
    records += _train_group(ctx, group, group_size, mesh, pstep, forward, log)
  return records


def _train_group(ctx, group, group_size, mesh, pstep, forward, log) -> list:
  config = ctx.config
  n_real = len(group)
  padded = group + [group[0]] * (group_size - n_real)
  fold_valid = np.array([1.0] * n_real + [0.0] * (group_size - n_real), np.float32)
  positions = local_fold_positions(mesh, group_size)
  feature_dim = ctx.dataset.info.feature_dim
  managers, states = {}, []
  for pos in positions:
    fold = padded[pos]
    state = train_lib.init_state(ctx.model, ctx.tx, config, train_lib.fold_key(config, fold.index),
                                 feature_dim, ctx.bank_videos)
    if fold_valid[pos]:
      fdir = checkpointing.fold_dir(ctx.workdir, fold.index)
      os.makedirs(fdir, exist_ok=True)
      managers[pos] = checkpointing.make_manager(
          os.path.join(fdir, "checkpoints"), keep=config.checkpoint.max_to_keep,
          single_process=jax.process_count() > 1)
      restored = checkpointing.restore_latest(managers[pos], state)
      if restored is not None:
        state = restored
        logging.info("fold %d: resumed at step %d", fold.index, int(state.step))
    states.append(jax.device_get(state))
  local_steps = [int(s.step) for s, p in zip(states, positions) if fold_valid[p]]
  start = min(local_steps) if local_steps else config.optim.steps
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    start = int(np.min(multihost_utils.process_allgather(np.array(start))))
  stacked = jax.tree.map(lambda x: _global_array(mesh, x, group_size), stack(states))
  valid_arr = _global_array(mesh, fold_valid[positions], group_size)
  samplers = {pos: train_lib.fold_sampler(ctx, padded[pos]) for pos in positions}
  names = ", ".join(str(f.index) for f in group)
  history = {pos: [] for pos in positions}
  window, t0, t_window = [], time.time(), time.time()
  for pos, st in zip(positions, states):
    if fold_valid[pos] and int(st.step) > 0:
      log.truncate(padded[pos].index, int(st.step))
  for step in range(start, config.optim.steps):
    bucket = train_lib.shared_bucket(ctx, step)
    cache = {}  # padded positions repeat their group's first fold: sample it once
    rows = []
    for pos in positions:
      key = padded[pos].index
      if key not in cache:
        cache[key] = samplers[pos].sample(step, bucket=bucket)
      rows.append(cache[key])
    batch = jax.tree.map(lambda x: _global_array(mesh, x, group_size), stack(rows))
    stacked, metrics = pstep(stacked, batch, valid_arr, jnp.int32(step))
    window.append((step, metrics))
    done = step + 1
    save = done % config.checkpoint.every_steps == 0 or done == config.optim.steps
    if done % config.log_every == 0 or save:  # never checkpoint an unchecked (NaN) state
      rate = len(window) / max(time.time() - t_window, 1e-9)
      fetched = [(s, _local_rows(m, positions)) for s, m in window]  # one transfer per leaf
      for i, pos in enumerate(positions):
        if not fold_valid[pos]:
          continue
        part = [(s, {k: v[i] for k, v in m.items()}) for s, m in fetched]
        part = [(s, m) for s, m in part if m["active"] > 0]  # folds ahead of the group wait
        if not part:
          continue
        history[pos].extend(part)
        train_lib.check_finite(part, padded[pos].index)
        log.write(padded[pos].index, done, dict(train_lib.summarize(part), steps_per_sec=rate))
      logging.info("folds [%s] step %d/%d (%.1f group steps/s)", names, done,
                   config.optim.steps, rate)
      window, t_window = [], time.time()
    if save and managers:
      saved = list(managers)
      rows = _local_rows(stacked, saved)  # one transfer per leaf for all local folds
      for i, pos in enumerate(saved):
        checkpointing.save(managers[pos], done, jax.tree.map(lambda x, i=i: x[i], rows))
  seconds = time.time() - t0
  steps_run = config.optim.steps - start
  print(f"folds [{names}] side by side on {mesh.devices.size} device(s): {steps_run} steps in "
        f"{seconds:.1f} s ({steps_run * len(group) / max(seconds, 1e-9):.1f} fold-steps/s)",
        flush=True)
  records = []
  for pos, manager in managers.items():
    manager.close()
    fold = padded[pos]
    params = jax.device_put(fold_slice(stacked, pos).params)
    summary = train_lib.summarize(history[pos][-config.log_every:]) if history[pos] else {}
    records.append(train_lib.finish_fold(ctx, fold, params, summary, seconds, forward))
  return records
