"""Orbax checkpoints: one ``CheckpointManager`` per LOSO fold under ``workdir/fold_XX/``."""

from __future__ import annotations

import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers


def fold_dir(workdir: str, fold_index: int) -> str:
  return os.path.join(workdir, f"fold_{fold_index:02d}")


def make_manager(directory: str, *, keep: int = 2,
                 single_process: bool = False) -> ocp.CheckpointManager:
  """A synchronous manager that keeps the latest ``keep`` checkpoints.

  With ``single_process`` (multi-host runs) only this process takes part: each process writes the
  checkpoints of the folds on its own devices, as host-local arrays, without cross-host barriers.
  """
  multiprocessing = ocp.options.MultiprocessingOptions()
  directory = os.path.abspath(directory)
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


def save(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
  manager.save(int(step), args=ocp.args.StandardSave(state))
  manager.wait_until_finished()


def restore_latest(manager: ocp.CheckpointManager, target: Any) -> Optional[Any]:
  """Restores the latest checkpoint into the structure (and shardings) of ``target``.

  Returns None when the directory holds no checkpoint.
  """
  step = manager.latest_step()
  if step is None:
    return None
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  try:
    return manager.restore(step, args=ocp.args.StandardRestore(abstract))
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{manager.directory}: checkpoint step {step} does not match this config's "
                     f"train state ({type(e).__name__}: {str(e)[:300]}); use a new --workdir"
                     ) from None
