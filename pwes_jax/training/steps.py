"""The train steps: one pure optimizer step, jitted alone or for a stacked group of folds.

``train_step(state, batch) -> (state, metrics)`` is the whole update of one fold (loss and
gradient from ``objective.loss_fn``, optimizer, DFCL memory-bank write). :func:`make_train_step`
jits it with the state donated; :func:`make_parallel_step` runs it for every fold of a group at
once: ``jax.shard_map`` over the mesh's fold axis around ``jax.vmap`` of :func:`train_step` (a
plain ``jit(vmap(step))`` with a sharded fold axis fails to compile on this JAX version when a
convolution has fewer output channels than devices).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import optax

from pwes_jax.method import dfcl
from pwes_jax.method import objective
from pwes_jax.training import sharding
from pwes_jax.training import state as state_lib


def train_step(state: state_lib.TrainState, batch: dict, *, model, tx, config,
               bank_write=1.0) -> tuple:
  """One optimizer step on one fold. Pure.

  Args:
    state: the fold's train state.
    batch: a padded batch of one length bucket: ``rgb, flow [B, T, F]``, ``valid [B, T]``,
      ``point_index, point_label [B, N]``, ``point_valid [B, N]``, ``video_label [B, C]``,
      ``video_id [B]``, ``row_valid [B]`` (see ``pwes_jax.data.batching``).
    model: the Flax module; tx: the optimizer; config: the run's config (bound by partial).
    bank_write: scalar in {0, 1}; 0 vetoes the memory-bank write (the fold-parallel step
      passes 0 for folds that must not move, so the bank is still updated in place).

  Returns:
    ``(state, metrics)``: the state one step later and a dict of scalar metrics
    (``objective.loss_fn``'s plus ``grad_norm``). Step ``s`` uses the dropout key
    ``fold_in(state.rng, s)``.
  """
  rng = jax.random.fold_in(state.rng, state.step)
  grad_fn = jax.value_and_grad(objective.loss_fn, has_aux=True)
  (_, (metrics, region_vectors)), grads = grad_fn(state.params, batch, rng, state.bank,
                                                  state.step, model=model, config=config)
  with jax.named_scope("optimizer"):  # labels the ops only (benchmarks/op_profile.py)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)
  bank = state.bank
  if region_vectors is not None:
    vectors, vector_valid = region_vectors
    active = (state.step >= config.mplg.pretrain_steps).astype(jnp.float32)
    # The loss and its gradient read the bank; making the rows written depend on the gradient
    # (a finite gradient norm) orders the update after every read, so XLA updates the donated
    # bank in place instead of copying it each step (benchmarks/bank_memory.py shows it).
    write = (batch["row_valid"] * active * bank_write
             * jnp.isfinite(grad_norm).astype(jnp.float32))
    with jax.named_scope("dfcl_bank"):
      bank = dfcl.update_bank(bank, batch["video_id"], vectors, vector_valid, write)
  metrics = dict(metrics, grad_norm=grad_norm)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state, bank=bank), metrics


def make_train_step(model, tx, config):
  """``(state, batch) -> (state, metrics)``: :func:`train_step` jitted, the state donated.

  Compiles once per length bucket.
  """
  return jax.jit(functools.partial(train_step, model=model, tx=tx, config=config),
                 donate_argnums=0)


def make_parallel_step(model, tx, config, mesh):
  """``(states, batches, fold_valid [G], step) -> (states, metrics)``, jitted, states donated.

  ``states`` and ``batches`` carry a leading fold axis ``G`` sharded over ``mesh``'s fold
  axis; ``step`` is the group's step (scalar int32, replicated). A fold updates only where
  ``fold_valid`` and its own ``state.step == step`` (so folds resumed from checkpoints at
  different steps wait for the group to reach them); its metrics gain ``active`` (1 where it
  moved). Every output leaf stays fold-sharded.
  """
  one = functools.partial(train_step, model=model, tx=tx, config=config)

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

  axis = sharding.FOLD_AXIS
  sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(axis), P(axis), P(axis), P()),
                          out_specs=(P(axis), P(axis)))
  return jax.jit(sharded, donate_argnums=0)
