"""The workdir lock: one run at a time in a workdir, a stale lock taken over with a warning.

``WORKDIR/run.lock`` holds ``{"host", "pid", "started"}`` of the run that owns the workdir
(:func:`workdir_lock`); another live process finds it and stops with
:class:`WorkdirBusyError` naming that process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from typing import Optional

from absl import logging

from pwes_jax.workdir import fileio
from pwes_jax.workdir import run_files



class WorkdirBusyError(ValueError):
  """Another live process holds the workdir's lock; the message names it."""


def lock_path(workdir: str) -> str:
  return os.path.join(workdir, run_files.LOCK_FILE)


def _read_lock(path: str) -> Optional[dict]:
  try:
    doc = fileio.read_json(path)
    return doc if isinstance(doc, dict) else None
  except (OSError, ValueError):
    return None


@contextlib.contextmanager
def _one_takeover_at_a_time(workdir: str):
  """An exclusive ``flock`` on the workdir itself while a stale lock is judged and replaced:
  two runs that both found the same stale lock take it over one after the other, and the
  second then sees the first's live lock (without it, the second removed the first's fresh
  lock and both ran). Stale locks are taken over only on their own host, where ``flock``
  holds; a file system that refuses ``flock`` on a directory (some network file systems) goes
  without it, as before."""
  fd = os.open(workdir, os.O_RDONLY)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as e:
      logging.info("%s: no flock on this file system (%s); taking over without it", workdir, e)
    yield
  finally:
    os.close(fd)  # releases the flock


@contextlib.contextmanager
def _naming(workdir: str):
  """An ``OSError`` of the block (other than the lock existing) names ``workdir``: the user
  asked for the workdir, the lock's temporary file is ours."""
  try:
    yield
  except FileExistsError:
    raise
  except OSError as e:
    if e.errno is None:
      raise
    raise OSError(e.errno, e.strerror, workdir) from None


@contextlib.contextmanager
def workdir_lock(workdir: str):
  """Holds ``WORKDIR/run.lock`` (``{"host", "pid", "started"}``) for the block.

  The lock file is created with its content in one step (a hard link of a written temporary
  file), so it is never seen half-written. A lock of a process that is gone (same host, pid not
  running), or an unreadable lock, is taken over with a warning, one process at a time
  (:func:`_one_takeover_at_a_time`).

  Raises:
    WorkdirBusyError: when a live process (or a process on another host) holds the lock.
    OSError: when the lock cannot be written (a read-only or immutable workdir, no
      permission); the error names the workdir, not the lock's temporary file.
  """
  path = lock_path(workdir)
  me = {"host": socket.gethostname(), "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S")}
  tmp = fileio.temp_path(path)
  try:
    with _naming(workdir):
      with open(tmp, "w") as f:
        json.dump(me, f)
  except OSError:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise
  try:
    for attempt in range(3):
      try:
        with _naming(workdir):
          os.link(tmp, path)
        break
      except FileExistsError:
        pass
      with _one_takeover_at_a_time(workdir):
        holder = _read_lock(path)
        if holder is None and not os.path.lexists(path):
          continue  # released meanwhile: try again
        if holder is None:
          stale = "unreadable"
        elif holder.get("host") == me["host"] and (
            holder.get("pid") == me["pid"]
            or not fileio.process_alive(int(holder.get("pid", -1)))):
          stale = f"process {holder.get('pid')} on {holder.get('host')} is gone"
        else:
          stale = None
        if stale is None or attempt == 2:
          h = holder or {}
          raise WorkdirBusyError(
              f"workdir {workdir} is in use by process {h.get('pid')} on host "
              f"{h.get('host')} (since {h.get('started')}; lock {path}); wait for "
              "that run to end, or remove the lock file if no run is using the workdir"
          ) from None
        logging.warning("%s: taking over a stale lock (%s)", path, stale)
        with contextlib.suppress(FileNotFoundError):
          os.remove(path)
        try:
          os.link(tmp, path)
          break
        except FileExistsError:  # a new run took the freed name: judged again
          continue
    else:
      raise WorkdirBusyError(f"workdir {workdir}: could not take the lock {path} after three "
                             "tries; another run keeps taking it")
  finally:
    os.remove(tmp)
  try:
    yield
  finally:
    if _read_lock(path) == me:
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)
