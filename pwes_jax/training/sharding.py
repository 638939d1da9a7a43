"""The fold mesh and the array helpers of folds trained side by side.

A group of ``G`` folds keeps one stacked train state whose every leaf has a leading fold axis,
sharded as ``NamedSharding(mesh, P("fold"))`` over a 1-D mesh named ``fold``
(:func:`fold_mesh`). The step that trains such a group is ``steps.make_parallel_step``; the loop
that drives it is ``loop.train_folds``. This module only builds meshes, lays out groups and
moves rows of fold-sharded arrays between hosts and devices.

The group is padded to a multiple of the mesh size (:func:`group_layout`) with copies of its
first fold that the step marks invalid.

Multi-host: after ``jax.distributed.initialize`` the mesh spans every process's devices; each
process holds a contiguous block of the group's folds (:func:`local_fold_positions`), builds
their batches from its own rows (:func:`global_array`) and reads back only those
(:func:`local_rows`). Phase boundaries share every process's failure (:func:`agree`); a process
that is gone makes the next collective of the others fail as :class:`PeerLostError`
(:func:`peers_lost_as_error`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from typing import Any, Iterator, Mapping, Optional, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

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


def global_array(mesh, rows: np.ndarray, global_rows: int) -> jax.Array:
  """A fold-sharded global array ``[global_rows, ...]`` from this process's ``rows`` (all rows
  on a single host)."""
  sharding = NamedSharding(mesh, P(FOLD_AXIS))
  shape = (global_rows,) + rows.shape[1:]
  return jax.make_array_from_process_local_data(sharding, rows, shape)


def local_fold_positions(mesh, group_size: int) -> list:
  """Positions in the group of the folds whose shards live on this process's devices."""
  sharding = NamedSharding(mesh, P(FOLD_AXIS))
  idx = sharding.addressable_devices_indices_map((group_size,))
  pos = set()
  for sl in idx.values():
    pos.update(range(*sl[0].indices(group_size)))
  return sorted(pos)


def local_rows(tree, positions: Sequence[int]):
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
  return jax.tree.map(lambda x: x[0], local_rows(stacked, [position]))


def global_min(value: int) -> int:
  """The minimum of ``value`` over all processes (``value`` itself on a single host).

  Raises:
    PeerLostError: when another process is gone.
  """
  if jax.process_count() == 1:
    return int(value)
  with peers_lost_as_error("agreeing on a fold group's first step"):
    return int(np.min(multihost_utils.process_allgather(np.array(value))))


def sync(name: str) -> None:
  """A barrier across processes (no-op on a single host).

  Raises:
    PeerLostError: when another process is gone.
  """
  if jax.process_count() > 1:
    with peers_lost_as_error(f"the barrier '{name}'"):
      multihost_utils.sync_global_devices(name)


def check_peers(phase: str) -> None:
  """A tiny all-gather that fails at once when another process is gone (no-op on one process).

  Folds side by side train without any collective between the group's first step and its
  end, so a process would train on for the rest of the group (until JAX's heartbeat timeout
  aborts it) after a peer died; the loop calls this at every log window instead.

  Raises:
    PeerLostError: when another process is gone.
  """
  if jax.process_count() > 1:
    with peers_lost_as_error(phase):
      multihost_utils.process_allgather(np.zeros(1, np.int8))


class PeerFailedError(ValueError):
  """Another process of a multi-process run failed; the message is that process's."""


class PeerLostError(ConnectionError):
  """Another process of a multi-process run is gone (killed, crashed, interrupted): a collective
  with it failed. The message names the process (when it can be told) and how to resume."""


# What a collective's error says when its peer process is gone: its connection closed (Gloo's
# TCP pairs on CPUs), or another failure of the transport or of the coordination service.
_CLOSED_WORDS = ("connection closed by peer", "connection reset by peer", "broken pipe",
                 "socket closed")
_LOST_PEER_WORDS = _CLOSED_WORDS + ("is not connected", "gloo", "unavailable:")


def lost_peer(e: BaseException) -> bool:
  """Whether ``e``, raised by a collective of a multi-process run, says a peer process is gone."""
  text = str(e).lower()
  return jax.process_count() > 1 and any(w in text for w in _LOST_PEER_WORDS)


def _lost_message(phase: str, e: BaseException) -> str:
  """The one line of :class:`PeerLostError`: who is gone (named when it can only be one), where
  this process was, and how to resume."""
  me, count = jax.process_index(), jax.process_count()
  others = [p for p in range(count) if p != me]
  who = (f"process {others[0]} of {count}" if len(others) == 1
         else f"another of the {count} processes")
  text = str(e).lower()
  why = ("its connection closed" if any(w in text for w in _CLOSED_WORDS)
         else " ".join(str(e).split())[:160])
  return (f"{who} stopped while this process was at {phase} ({why}); finished folds and "
          "checkpoints are kept: start every process again with the same command to resume")


@contextlib.contextmanager
def peers_lost_as_error(phase: str) -> Iterator[None]:
  """Turns the error of a collective whose peer process is gone (:func:`lost_peer`) into
  :class:`PeerLostError`, naming ``phase``; every other error passes unchanged.

  Multi-process runs only lose a peer this way: a process that is gone (SIGKILL, a crash, its own
  Ctrl-C) closes its connections, and the next collective of every other process fails at once.
  """
  try:
    yield
  except PeerLostError:
    raise
  except (RuntimeError, ValueError, OSError) as e:  # JaxRuntimeError, Gloo's errors
    if not lost_peer(e):
      raise
    raise PeerLostError(_lost_message(phase, e)) from None


_MESSAGE_BYTES = 2048


def _allgather_bytes(data: bytes) -> list:
  """``[bytes of process p]`` of every process (two all-gathers: the lengths, then the bytes
  padded to the longest)."""
  lengths = np.asarray(multihost_utils.process_allgather(np.array([len(data)], np.int64)))
  lengths = lengths.reshape(-1)
  padded = np.zeros(int(lengths.max()), np.uint8)
  padded[:len(data)] = np.frombuffer(data, np.uint8)
  rows = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(lengths), -1)
  return [bytes(rows[p, :int(n)]) for p, n in enumerate(lengths)]


def _first_difference(settings: list, p: int) -> str:
  """``"<field>: <value> on process p, <value> on process 0"`` of the first field (in sorted
  order) whose value differs between process ``p``'s and process 0's ``settings``."""
  mine, lead = settings[p], settings[0]
  for key in sorted(set(mine) | set(lead)):
    if mine.get(key, "<absent>") != lead.get(key, "<absent>"):
      return (f"{key}: {mine.get(key, '<absent>')!r} on process {p}, "
              f"{lead.get(key, '<absent>')!r} on process 0")
  return "the same fields, hashed differently"


def agree(phase: str, error: Optional[BaseException] = None, *,
          settings: Optional[Mapping[str, Any]] = None) -> None:
  """A phase boundary: every process learns whether any process failed, and checks that all
  processes hold process 0's ``settings`` (e.g. the flattened config).

  One small all-gather of ``[failed, settings hash, message]`` rows; only when the hashes differ
  a second exchange (the settings as JSON) names the first differing field. On a single
  process it only re-raises ``error``.

  Args:
    phase: names the boundary in messages ("start (config, ...)").
    error: this process's failure before the boundary, if any.
    settings: ``{name: JSON-serialisable value}`` every process must share.

  Raises:
    the process's own ``error`` when it has one;
    PeerFailedError: on every other process, with the first failing process's message; or,
      when a process's settings differ from process 0's, on every process, naming the first
      differing field with both values.
    PeerLostError: when another process is gone.
  """
  if jax.process_count() == 1:
    if error is not None:
      raise error
    return
  with peers_lost_as_error(phase):
    _agree(phase, error, json.dumps(dict(settings or {}), sort_keys=True, default=str))


def _agree(phase: str, error: Optional[BaseException], settings_json: str) -> None:
  """:func:`agree` past its single-process shortcut (``settings`` as sorted JSON)."""
  row = np.zeros(1 + 32 + _MESSAGE_BYTES, np.uint8)
  if error is not None:
    row[0] = 1
    text = (f"{type(error).__name__}: {error}" if not isinstance(error, ValueError)
            else str(error)).encode("utf-8")[:_MESSAGE_BYTES]
    row[33:33 + len(text)] = np.frombuffer(text, np.uint8)
  row[1:33] = np.frombuffer(hashlib.sha256(settings_json.encode()).digest(), np.uint8)
  rows = np.asarray(multihost_utils.process_allgather(row)).reshape(jax.process_count(), -1)
  if error is not None:
    raise error
  for p in range(rows.shape[0]):
    if rows[p, 0]:
      message = bytes(rows[p, 33:]).rstrip(b"\0").decode("utf-8", "replace")
      raise PeerFailedError(f"process {p} failed at {phase}: {message}")
  differ = [p for p in range(rows.shape[0]) if not np.array_equal(rows[p, 1:33], rows[0, 1:33])]
  if differ:
    settings = [json.loads(b.decode("utf-8")) for b in _allgather_bytes(settings_json.encode())]
    raise PeerFailedError(
        f"at {phase}: process {differ[0]} runs another config than process 0 (first "
        f"difference: {_first_difference(settings, differ[0])}); start every process with the "
        "same config and flags")
