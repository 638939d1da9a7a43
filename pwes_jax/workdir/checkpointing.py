"""Orbax checkpoints: one ``CheckpointManager`` per LOSO fold (``WORKDIR/fold_XX/checkpoints``).

Resuming restores the latest step that is intact (:func:`restore_latest`): a step that cannot be
restored although its recorded shapes are this config's (a truncated or missing data file, a
missing metadata file, any Orbax or TensorStore error) is set aside beside the checkpoint
directory (renamed ``checkpoint_<step>.damaged-<time>``, never deleted) with a warning naming
it, and the previous kept step is tried. Only a step whose recorded shapes differ from the
config's train state is "another config" (an error).

Multi-process runs: every fold belongs to one process, which writes, restores, checks and sets
aside its checkpoints alone (:func:`make_manager`): no checkpoint call waits for another
process, and each step holds its arrays whichever process wrote it.
"""

from __future__ import annotations

import errno
import logging as std_logging
import os
import re
import sys
import threading
import types
import warnings
from typing import Any, Optional

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from pwes_jax.workdir import run_files


def process_local() -> bool:
  """Whether this process checkpoints on its own: in a multi-process run every fold belongs to
  one process, and every checkpoint call of that fold runs on that process only."""
  return jax.process_count() > 1


def _local_handler() -> ocp.PyTreeCheckpointHandler:
  """The item handler of a process-local manager: this process is the primary host of the
  step's metadata (``_METADATA``) and of its arrays' TensorStore metadata.

  The standard handler a manager builds for ``StandardSave`` has Orbax's default options
  (primary host 0) whatever the manager's, and Orbax writes numpy leaves only on process 0: a
  step saved by process 1 held no ``_METADATA`` and no array at all. The type registry here holds
  only ``jax.Array`` (:func:`save` hands it every leaf as one, :func:`_process_owned`): another
  leaf type fails loudly instead of being left out. Its first replica holds the whole array
  (no replica-parallel split: the other replicas never write), and no sharding file records the
  writer's makeshift mesh (every restore names its target's shardings).
  """
  me = jax.process_index()
  registry = ocp.type_handlers.create_type_handler_registry(
      (jax.Array, ocp.type_handlers.ArrayHandler(
          primary_host=me, use_replica_parallel=False, enable_write_sharding_file=False)))
  return ocp.PyTreeCheckpointHandler(multiprocessing_options=_local_options(),
                                     type_handler_registry=registry)


def _local_options() -> ocp.options.MultiprocessingOptions:
  """Orbax's multiprocessing options of a process-local manager: only this process takes part
  (its barriers are skipped, its keys prefixed with the process index)."""
  me = jax.process_index()
  return ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me},
                                            barrier_sync_key_prefix=f"p{me}")


def make_manager(directory: str, *, keep: int = 2, read_only: bool = False
                 ) -> ocp.CheckpointManager:
  """The one way this package opens a checkpoint directory: a synchronous manager.

  In a multi-process run (:func:`process_local`) the manager is this process's alone: it
  writes and reads the steps of the folds on this process's devices with no cross-process
  barrier (a reader too: a damaged step is examined by the one process that restores it), and
  a step holds its arrays whichever process wrote it (:func:`_local_handler`); any process,
  or a later single-process run, restores it.

  Args:
    directory: the checkpoint directory (one sub-directory per step).
    keep: a writing manager keeps the latest ``keep`` checkpoints.
    read_only: a reader (``spot``, the damage check of :func:`restore_latest`): never creates
      the directory, never deletes a step, and can read item metadata before any restore.

  Returns:
    An ``ocp.CheckpointManager``; close it when done.
  """
  directory = os.path.abspath(directory)
  local = process_local()
  multiprocessing = _local_options() if local else ocp.options.MultiprocessingOptions()
  if read_only:
    # ``CheckpointManagerOptions(read_only=True)`` would only add two warnings per fold.
    options = ocp.CheckpointManagerOptions(create=False, enable_async_checkpointing=False,
                                           multiprocessing_options=multiprocessing)
    # The PyTree handler reads what the standard one wrote, and restores a part of it
    # (:func:`restore_part`: a reader keeps the parameters, not the optimizer's moments).
    return ocp.CheckpointManager(directory, options=options, item_handlers=(
        ocp.PyTreeCheckpointHandler(multiprocessing_options=multiprocessing)))
  if local:
    os.makedirs(directory, exist_ok=True)  # Orbax will not create it with active_processes.
  options = ocp.CheckpointManagerOptions(
      preservation_policy=checkpoint_managers.LatestN(keep),
      enable_async_checkpointing=False,
      create=not local,
      cleanup_tmp_directories=True,  # the half-written step directories of a killed run
      multiprocessing_options=multiprocessing,
  )
  if local:
    return ocp.CheckpointManager(directory, options=options, item_handlers=_local_handler())
  return ocp.CheckpointManager(directory, options=options)


def fold_manager(workdir: str, fold_index: int, config) -> ocp.CheckpointManager:
  """The writing manager of a fold of a training run (``config.checkpoint.max_to_keep``)."""
  return make_manager(run_files.checkpoint_dir(workdir, fold_index),
                      keep=config.checkpoint.max_to_keep)


def _save_args(state: Any) -> ocp.args.CheckpointArgs:
  """What :func:`save` hands Orbax: the standard item on a single process; on a process-local
  manager the PyTree item with every leaf as :func:`_process_owned`."""
  if not process_local():
    return ocp.args.StandardSave(state)
  return ocp.args.PyTreeSave(jax.tree.map(_process_owned, state))


def _process_owned(x) -> jax.Array:
  """``x`` (a host or single-device array) as Orbax saves a fold's leaf on this process.

  Orbax writes numpy leaves only on process 0 and refuses a fully addressable ``jax.Array`` in a
  multi-process run. So the leaf becomes a global array replicated over a mesh of this process's
  first device followed by one device of every other process: Orbax writes its first replica,
  the one on this process, and the other processes are never asked for theirs (the array only
  ever goes to the checkpoint writer, never into a computation).
  """
  mine = jax.local_devices()[0]
  others = {}
  for d in jax.devices():
    if d.process_index != mine.process_index:
      others.setdefault(d.process_index, d)
  mesh = jax.sharding.Mesh(np.array([mine, *others.values()]), ("replica",))
  local = jax.device_put(np.asarray(x) if not isinstance(x, jax.Array) else x, mine)
  return jax.make_array_from_single_device_arrays(
      local.shape, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()), [local])


def _restore_args(abstract: Any) -> ocp.args.CheckpointArgs:
  """What a restore hands Orbax for ``abstract`` (``jax.ShapeDtypeStruct`` leaves, shardings
  included): the standard item, or on a process-local manager the PyTree item."""
  if not process_local():
    return ocp.args.StandardRestore(abstract)
  return ocp.args.PyTreeRestore(
      item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract))


# A save's failure as TensorStore words it -> the errno a launcher gives its advice for.
_SAVE_ERRNOS = (("No space left", errno.ENOSPC), ("Disk quota exceeded", errno.EDQUOT),
                ("Read-only file system", errno.EROFS), ("Permission denied", errno.EACCES))


def save(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
  """Saves ``state`` as checkpoint ``step`` and waits until it is on disk.

  Raises:
    OSError: the save failed for want of space or permission (errno ENOSPC, EDQUOT, EROFS or
      EACCES, read from Orbax's or TensorStore's message), the checkpoint directory as its
      filename when the error named none.
      After any failure, the debris its writer threads report later ("Event loop is closed",
      hundreds of lines) is dropped like a failed restore's (the filters are in place before
      the save starts).
  """
  _drop_restore_noise()
  try:
    manager.save(int(step), args=_save_args(state))
    manager.wait_until_finished()
  except Exception as e:  # pylint: disable=broad-except  (Orbax/TensorStore raise anything)
    directory = os.fspath(manager.directory)
    if isinstance(e, OSError):
      if e.filename or e.errno is None:
        raise
      raise OSError(e.errno, f"saving checkpoint step {step} failed: {e.strerror}",
                    directory) from None  # Orbax's metadata writes name no file
    for words, code in _SAVE_ERRNOS:
      if words.lower() in str(e).lower():
        raise OSError(code, f"saving checkpoint step {step} failed: {_brief(e)}",
                      directory) from None
    raise


def restore(manager: ocp.CheckpointManager, step: int, abstract: Any, *,
            expected: str = "this config's train state", remedy: str = "use a new --workdir"
            ) -> Any:
  """Restores checkpoint ``step`` into ``abstract`` (a pytree of ``jax.ShapeDtypeStruct``,
  shardings included).

  Raises:
    ValueError: ``<directory>: checkpoint step <step> does not match <expected> (<error>);
      <remedy>`` when the checkpoint does not fit ``abstract``.
  """
  _drop_restore_noise()
  try:
    return manager.restore(step, args=_restore_args(abstract))
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{manager.directory}: checkpoint step {step} does not match {expected} "
                     f"({type(e).__name__}: {str(e)[:300]}); {remedy}") from None


def restore_part(manager: ocp.CheckpointManager, step: int, abstract: Any, *,
                 expected: str = "this config's train state",
                 remedy: str = "use a new --workdir") -> Any:
  """Restores only the sub-trees of checkpoint ``step`` that ``abstract`` names (a dict whose
  keys are top-level keys of the saved state, e.g. ``{"params": ...}``; ``jax.ShapeDtypeStruct``
  leaves, shardings included); the rest of the state is never read.

  ``manager`` must be a reader (``make_manager(..., read_only=True)``).

  Raises:
    ValueError: ``<directory>: checkpoint step <step> does not match <expected> (<error>);
      <remedy>`` when the checkpoint does not fit ``abstract``.
  """
  _drop_restore_noise()
  args = ocp.args.PyTreeRestore(item=abstract,
                                restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
                                partial_restore=True)
  try:
    return manager.restore(step, args=args)
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{manager.directory}: checkpoint step {step} does not match {expected} "
                     f"({type(e).__name__}: {str(e)[:300]}); {remedy}") from None


def _stored_shapes(directory: str, step: int) -> Optional[list]:
  """Sorted leaf shapes recorded in checkpoint ``step``'s metadata; None when unreadable."""
  reader = make_manager(directory, read_only=True)
  try:
    meta = reader.item_metadata(step)
  except Exception:  # pylint: disable=broad-except  (any unreadable metadata means damaged)
    return None
  finally:
    reader.close()
  leaves = jax.tree.leaves(getattr(meta, "tree", meta)) if meta is not None else []
  if not leaves:
    return None
  return sorted(tuple(getattr(leaf, "shape", ()) or ()) for leaf in leaves)


_LOOP_CLOSED = "Event loop is closed"


def _restore_noise(exc: Optional[BaseException], obj: Any = None) -> bool:
  """Whether an exception nobody can catch is the debris of a failed restore: TensorStore
  reads of the damaged step finishing after Orbax closed the restore's event loop
  (``RuntimeError('Event loop is closed')``), or Orbax's read coroutines of that restore
  garbage-collected with the read error they hold."""
  if isinstance(exc, RuntimeError) and str(exc) == _LOOP_CLOSED:
    return True
  code = getattr(obj, "cr_code", None) if isinstance(obj, types.CoroutineType) else None
  return code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename


def _not_restore_noise_record(record) -> bool:
  """A filter of the ``asyncio`` logger: False for what its default exception handler reports
  ("Task/Future exception was never retrieved", "Exception in callback ...") of a failed
  restore's reads: Orbax's coroutines, TensorStore's OCDBT errors, or a read's future that
  finished with ``RuntimeError('Event loop is closed')`` after Orbax closed the restore's loop
  (seen when two folds restore damaged steps at once)."""
  message = record.getMessage()
  if "exception was never retrieved" not in message and "Exception in callback" not in message:
    return True
  exc = record.exc_info[1] if record.exc_info else None
  return not (_restore_noise(exc) or _LOOP_CLOSED in message or any(
      k in message for k in (f"{os.sep}orbax{os.sep}", "OCDBT", "TensorStore")))


def _drop_restore_noise() -> None:
  """Installs (once per process) ``sys.unraisablehook``, ``sys.excepthook`` and
  ``threading.excepthook`` (Orbax's own threads) wrappers that drop
  :func:`_restore_noise` and pass everything else on to the hooks they replace, the
  ``asyncio`` logger's filter :func:`_not_restore_noise_record`, and a filter of the
  "coroutine ... was never awaited" warnings of Orbax's read coroutines.

  A restore of a damaged step leaves work behind in TensorStore's threads and in coroutines that
  is only reported later (thousands of lines of tracebacks on a run whose every step is
  damaged), after :func:`restore_latest` has set the step aside with its own warning; so the
  hooks stay installed for the rest of the process. They are installed before the first restore
  or save is tried, not after it failed: TensorStore's threads may report a read finishing on
  the closed loop before the failed call has returned to us (seen with two folds restoring at
  once on a loaded machine). Everything else passes through unchanged.
  """
  with _HOOKS_LOCK:  # two fold threads may get here at once
    if not getattr(sys.unraisablehook, "_pwes_restore_noise", False):
      _install_noise_filters()


_HOOKS_LOCK = threading.Lock()


def _install_noise_filters() -> None:
  """The installation of :func:`_drop_restore_noise` (under its lock)."""
  unraisable, excepthook, thread_hook = sys.unraisablehook, sys.excepthook, threading.excepthook

  def on_unraisable(info):
    if not _restore_noise(info.exc_value, info.object):
      unraisable(info)

  def on_exception(kind, value, tb):
    if not _restore_noise(value):
      excepthook(kind, value, tb)

  def on_thread_exception(args):
    if not _restore_noise(args.exc_value):
      thread_hook(args)

  on_unraisable._pwes_restore_noise = True  # pylint: disable=protected-access
  sys.unraisablehook, sys.excepthook = on_unraisable, on_exception
  threading.excepthook = on_thread_exception
  std_logging.getLogger("asyncio").addFilter(_not_restore_noise_record)
  # The read coroutines of the failed restore collected unawaited (Orbax's reader, by name).
  warnings.filterwarnings(
      "ignore", category=RuntimeWarning,
      message=r"coroutine '(_read_shard|_read_array_index_and_device_put|_read_and_create_array"
              r"|async_deserialize)' was never awaited")


def _brief(e: BaseException) -> str:
  """``e``'s message on one line, without TensorStore's pointer to its details (the repr of a
  bound pybind11 method)."""
  text = " ".join(str(e).split())
  text = re.sub(r"\s*See full TensorStore details:.*$", "", text)
  text = re.sub(r"<bound method [^>]*>?", "", text).strip()
  return text[:200] or type(e).__name__


def restore_latest(manager: ocp.CheckpointManager, target: Any) -> Optional[Any]:
  """Restores the latest intact checkpoint into the structure (and shardings) of ``target``.

  A step that cannot be restored but whose recorded shapes are ``target``'s (or whose
  metadata is unreadable) is damaged: it is set aside with a warning naming its path and the
  error, and the previous kept step is tried.

  Returns:
    The restored state, or None when the directory holds no (intact) checkpoint; after
    setting damaged steps aside a warning says the fold trains from step 0.

  Raises:
    ValueError: (as :func:`restore`) when a step's recorded shapes differ from ``target``'s:
      a workdir of another config.
  """
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  wanted = sorted(tuple(x.shape) for x in jax.tree.leaves(abstract))
  directory = os.fspath(manager.directory)
  set_aside = 0
  _drop_restore_noise()
  while True:
    step = manager.latest_step()
    if step is None:
      if set_aside:
        logging.warning("%s: no intact checkpoint left; the fold trains again from step 0",
                        directory)
      return None
    try:
      return manager.restore(step, args=_restore_args(abstract))
    except Exception as e:  # pylint: disable=broad-except  (Orbax/TensorStore raise anything)
      stored = _stored_shapes(directory, step)
      if stored is not None and stored != wanted:
        raise ValueError(f"{directory}: checkpoint step {step} does not match this config's "
                         f"train state ({type(e).__name__}: {str(e)[:300]}); use a new "
                         "--workdir") from None
      path = os.path.join(directory, str(step))
      brief = _brief(e)
      run_files.set_aside(
          path, f"checkpoint step {step} cannot be restored, its files are damaged "
          f"({type(e).__name__}: {brief}); "
          "the previous kept step is tried", dest=os.path.join(
              os.path.dirname(directory), f"checkpoint_{step}"))
      set_aside += 1
      manager.reload()


def prune(manager: ocp.CheckpointManager, keep: int) -> None:
  """Deletes all but the latest ``keep`` steps (a fold resumed at its last step saves
  nothing, so the manager's own policy never ran; ``max_to_keep`` may also have changed)."""
  for step in sorted(manager.all_steps())[:-keep]:
    manager.delete(step)
