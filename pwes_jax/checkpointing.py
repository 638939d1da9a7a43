"""Orbax checkpoints: one ``CheckpointManager`` per LOSO fold (``WORKDIR/fold_XX/checkpoints``)."""

from __future__ import annotations

import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from pwes_jax import run_dir


def make_manager(directory: str, *, keep: int = 2, single_process: bool = False,
                 read_only: bool = False) -> ocp.CheckpointManager:
  """The one way this package opens a checkpoint directory: a synchronous manager.

  Args:
    directory: the checkpoint directory (one sub-directory per step).
    keep: a writing manager keeps the latest ``keep`` checkpoints.
    single_process: multi-host runs; only this process takes part: each process writes the
      checkpoints of the folds on its own devices, as host-local arrays, without cross-host
      barriers.
    read_only: a reader (``spotting``): never creates the directory, never deletes a step, and
      can read item metadata before any restore.

  Returns:
    An ``ocp.CheckpointManager``; close it when done.
  """
  directory = os.path.abspath(directory)
  if read_only:
    # ``CheckpointManagerOptions(read_only=True)`` would only add two warnings per fold.
    options = ocp.CheckpointManagerOptions(create=False, enable_async_checkpointing=False)
    return ocp.CheckpointManager(directory, options=options,
                                 item_handlers=ocp.StandardCheckpointHandler())
  multiprocessing = ocp.options.MultiprocessingOptions()
  if single_process:
    os.makedirs(directory, exist_ok=True)  # Orbax will not create it with active_processes.
    me = jax.process_index()
    multiprocessing = ocp.options.MultiprocessingOptions(
        primary_host=me, active_processes={me}, barrier_sync_key_prefix=f"p{me}")
  options = ocp.CheckpointManagerOptions(
      preservation_policy=checkpoint_managers.LatestN(keep),
      enable_async_checkpointing=False,
      create=not single_process,
      multiprocessing_options=multiprocessing,
  )
  return ocp.CheckpointManager(directory, options=options)


def fold_manager(workdir: str, fold_index: int, config) -> ocp.CheckpointManager:
  """The writing manager of a fold of a training run (``config.checkpoint.max_to_keep``)."""
  return make_manager(run_dir.checkpoint_dir(workdir, fold_index),
                      keep=config.checkpoint.max_to_keep,
                      single_process=jax.process_count() > 1)


def save(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
  """Saves ``state`` as checkpoint ``step`` and waits until it is on disk."""
  manager.save(int(step), args=ocp.args.StandardSave(state))
  manager.wait_until_finished()


def restore(manager: ocp.CheckpointManager, step: int, abstract: Any, *,
            expected: str = "this config's train state", remedy: str = "use a new --workdir"
            ) -> Any:
  """Restores checkpoint ``step`` into ``abstract`` (a pytree of ``jax.ShapeDtypeStruct``,
  shardings included).

  Raises:
    ValueError: ``<directory>: checkpoint step <step> does not match <expected> (<error>);
      <remedy>`` when the checkpoint does not fit ``abstract``.
  """
  try:
    return manager.restore(step, args=ocp.args.StandardRestore(abstract))
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{manager.directory}: checkpoint step {step} does not match {expected} "
                     f"({type(e).__name__}: {str(e)[:300]}); {remedy}") from None


def restore_latest(manager: ocp.CheckpointManager, target: Any) -> Optional[Any]:
  """Restores the latest checkpoint into the structure (and shardings) of ``target``.

  Returns None when the directory holds no checkpoint.
  """
  step = manager.latest_step()
  if step is None:
    return None
  return restore(manager, step, jax.tree.map(ocp.utils.to_shape_dtype_struct, target))
