"""What every launcher shares: one-line errors for bad flags and for OS failures.

* :func:`flags_parser` is given to ``app.run(main, flags_parser=...)``: a bad flag value, an
  unknown flag or an unknown config field (``--config.optim.learnin_rate=1``) is one line on
  stderr naming the flag (and, for a config field, the close field names), exit status 2.
* :func:`errors` wraps a launcher's work: a user-facing error (bad input, bad config, an OS
  failure such as a full disk, a read-only or missing directory, a permission, a file where a
  directory should be) becomes one line ``<launcher>: <message>`` and exit status 1.
* Ctrl-C (SIGINT) is one line ``<launcher>: interrupted`` (for the training launchers with how to
  resume) and exit status 130, not a KeyboardInterrupt traceback; SIGTERM is ``<launcher>:
  terminated`` and 143 (:func:`exit_on_interrupt`, :func:`exit_on_sigterm`, both installed by
  :func:`flags_parser`). The exit happens wherever the signal lands.
* :func:`leave_alone` ends a process of a multi-process run that stops on its own (a signal, a
  lost peer) at once, after its line, instead of in JAX's shutdown, which waits for the others.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import difflib
import errno
import importlib.util
import os
import signal
import sys
import threading
from typing import Iterator

from absl import flags
from absl import logging
import jax
import ml_collections

from pwes_jax.training import metrics_log
from pwes_jax.training import sharding
from pwes_jax.data import layout
from pwes_jax.extraction import video as video_lib

# Exceptions whose message is for the user (everything else keeps its traceback: a bug).
USER_ERRORS = (OSError, ValueError, layout.DatasetError, metrics_log.NonFiniteLossError,
               video_lib.VideoReadError)

_OS_HINTS = {
    errno.ENOSPC: "the disk is full; free space and rerun (finished work is kept)",
    errno.EDQUOT: "the disk quota is exceeded; free space and rerun (finished work is kept)",
    errno.EROFS: "the file system is read-only; choose a writable path",
    errno.EACCES: "permission denied; choose a path you may write, or fix its permissions",
    errno.EPERM: "operation not permitted; choose a path you may write",
    errno.ENOTDIR: "a path component is a file, not a directory",
    errno.EISDIR: "a directory is in the way of a file",
    errno.ENOENT: "no such file or directory",
}


def one_line(e: BaseException) -> str:
  """The user's one-line message of ``e`` (OS errors: the path and what to do)."""
  if isinstance(e, OSError) and e.errno in _OS_HINTS:
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f)
    text = f"{where}: {_OS_HINTS[e.errno]}" if where else _OS_HINTS[e.errno]
    if e.errno == errno.ENOENT and e.strerror and not where:
      text = str(e)
    return text
  return " ".join(str(e).split()) or type(e).__name__


class LeavingAlone(SystemExit):
  """The exit of a process that stops on its own while the other processes of a multi-process
  run may still be mid-run or gone: a signal (:class:`Stopped`), a lost peer (:func:`errors`).
  :func:`leave_alone` ends such a process at once."""


class Stopped(LeavingAlone):
  """The exit of a signal (:func:`exit_on_interrupt`, :func:`exit_on_sigterm`): status
  ``128 + signal number``. Built without arguments it takes the pending signal's status (that is
  how :func:`_rescue_swallowed_stop` raises it again)."""

  def __init__(self, code=None):
    super().__init__(_stop["code"] if code is None else code)


@contextlib.contextmanager
def errors(name: str) -> Iterator[None]:
  """Turns a :data:`USER_ERRORS` raised in the block into ``SystemExit("<name>: <message>")``
  (a lost peer of a multi-process run: :class:`LeavingAlone`)."""
  try:
    yield
  except sharding.PeerLostError as e:
    raise LeavingAlone(f"{name}: {one_line(e)}") from None
  except USER_ERRORS as e:
    raise SystemExit(f"{name}: {one_line(e)}") from None


@contextlib.contextmanager
def leave_alone() -> Iterator[None]:
  """In a multi-process run, a :class:`LeavingAlone` exit of the block ends the process at once
  (``os._exit``, after its message and the unwinding of the block: the workdir lock is released).

  JAX's shutdown at exit waits for every process at a barrier; after a lost peer, or while the
  others are still mid-run (this process was interrupted), it waited out its timeout and then
  aborted with a C++ check failure. The others notice this process is gone at their next
  collective (``sharding.PeerLostError``). On a single process it changes nothing.
  """
  try:
    yield
  except LeavingAlone as e:
    if jax.process_count() == 1:
      raise
    code = e.code
    if isinstance(code, str):
      sys.stderr.write(code + "\n")
      code = 1
    for stream in (sys.stdout, sys.stderr):
      with contextlib.suppress(OSError, ValueError):
        stream.flush()
    with contextlib.suppress(Exception):  # pylint: disable=broad-except  (leaving anyway)
      logging.flush()
    os._exit(int(code) if code is not None else 0)  # pylint: disable=protected-access


def _config_keys(config, prefix=""):
  out = []
  for k, v in config.items():
    if isinstance(v, ml_collections.ConfigDict):
      out += _config_keys(v, f"{prefix}{k}.")
    else:
      out.append(f"{prefix}{k}")
  return out


def _load_config_file(name, argv):
  """The config of ``--<name>=path[:arg]`` (or the flag's default), or None if it cannot load."""
  spec = getattr(flags.FLAGS[name], "default_unparsed", None)
  for arg in argv[1:]:
    if arg.startswith(f"--{name}="):
      spec = arg.split("=", 1)[1]
  if not isinstance(spec, str) or not spec:
    return None
  path, _, variant = spec.partition(":")
  try:
    module_spec = importlib.util.spec_from_file_location("_pwes_config_for_hint", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(variant) if variant else module.get_config()
  except Exception:  # pylint: disable=broad-except  (only a hint; the error is reported anyway)
    return None


def _config_field_hint(argv) -> str:
  """For an unknown ``--<config flag>.<field>``: the field and the close field names."""
  for arg in argv[1:]:
    if not arg.startswith("--") or "." not in arg.split("=", 1)[0]:
      continue
    name, _, path = arg[2:].split("=", 1)[0].partition(".")
    if name not in flags.FLAGS:
      continue
    config = getattr(flags.FLAGS[name], "_value", None)
    if not isinstance(config, ml_collections.ConfigDict):
      config = _load_config_file(name, argv)
    if not isinstance(config, ml_collections.ConfigDict):
      continue
    keys = _config_keys(config)
    if path in keys:
      continue
    close = difflib.get_close_matches(path, keys, n=4, cutoff=0.6)
    section = path.rpartition(".")[0]
    if not close and section:
      close = [k for k in keys if k.startswith(section + ".")][:8]
    hint = f"; close names: {', '.join(close)}" if close else (
        f"; the config's sections and fields: {', '.join(sorted({k.split('.')[0] for k in keys}))}")
    return f"--{name}.{path}: no such config field{hint}"
  return ""


def flags_parser(name: str):
  """An ``app.run`` flags parser whose errors are one line on stderr (exit status 2)."""

  def parse(argv):
    exit_on_interrupt(name)
    exit_on_sigterm(name)
    try:
      return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as e:
      message = _config_field_hint(argv) or str(e)
      message = "; ".join(line.strip() for line in message.splitlines() if line.strip())
      sys.stderr.write(f"{name}: usage error: {message} (--helpshort lists the flags)\n")
      sys.exit(2)

  return parse


# What an interrupted launcher adds to ``<name>: interrupted`` (the others: nothing to add).
_INTERRUPT_HINTS = {
    "launch.main": "rerun the same command to resume (finished folds are kept)",
    "launch.sweep": "rerun the same command to resume (finished runs and folds are kept)",
}

# The pending signal's exit status (:class:`Stopped`) once a signal arrived; whether
# :func:`_rescue_swallowed_stop` is in place.
_stop = {"code": None, "rescuing": False}


def exit_on_interrupt(name: str) -> None:
  """Ctrl-C (SIGINT) ends the launcher with one line ``<name>: interrupted[; <how to resume>]``
  on stderr and exit status 130 (128 + SIGINT, as a shell reports an interrupted command).

  The process unwinds as on ``KeyboardInterrupt`` (``finally`` blocks run: the workdir lock is
  released; every state file is written atomically, so what was written stays valid), but with
  :class:`Stopped` (a ``SystemExit``) and no traceback, wherever the signal lands: a handler's
  exception raised inside a weakref callback or a ``__del__`` is swallowed by Python, so it is
  raised again in the main thread (:func:`_rescue_swallowed_stop`). What library threads cut
  short print while the process ends (Orbax's checkpoint writer: "cannot schedule new futures
  after shutdown", "Event loop is closed") is dropped unless ``--verbosity`` was given: a rerun
  resumes from the last intact checkpoint. A second Ctrl-C or SIGTERM while it unwinds ends it
  at once.
  """
  _stop_on(signal.SIGINT, name, "interrupted")


def exit_on_sigterm(name: str) -> None:
  """SIGTERM ends the launcher as Ctrl-C does (:func:`exit_on_interrupt`), with one line
  ``<name>: terminated[; <how to resume>]`` and exit status 143 (128 + SIGTERM).

  :func:`flags_parser` installs it; call it again after ``jax.distributed.initialize``, whose
  preemption service replaces the handler with one that only records the signal (a terminated
  process of a multi-process run trained on).
  """
  _stop_on(signal.SIGTERM, name, "terminated")


def _stop_on(signum: int, name: str, word: str) -> None:
  """Installs the handler of :func:`exit_on_interrupt` / :func:`exit_on_sigterm` for ``signum``."""
  hint = _INTERRUPT_HINTS.get(name)

  def handler(sig, frame):
    del frame
    for s in (signal.SIGINT, signal.SIGTERM):  # a second signal ends the process at once
      signal.signal(s, signal.SIG_DFL)
    _stop["code"] = 128 + sig
    sys.stderr.write(f"{name}: {word}{'; ' + hint if hint else ''}\n")
    sys.stderr.flush()
    verbose = "verbosity" in flags.FLAGS and flags.FLAGS["verbosity"].present
    if not verbose:
      with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    raise Stopped(_stop["code"])

  _rescue_swallowed_stop()
  signal.signal(signum, handler)


def _rescue_swallowed_stop() -> None:
  """Makes a signal's :class:`Stopped` end the process even where Python swallows it.

  A handler's exception raised inside a weakref callback, a ``__del__``, a garbage-collector
  callback or an ``atexit`` function is only reported to ``sys.unraisablehook`` (seen: Ctrl-C
  while the run evaluated after its last fold; it printed its line, then ran on and exited 0).
  So, once per process, the hook is wrapped: such a :class:`Stopped` is raised again in the main
  thread from a helper thread a moment later (``PyThreadState_SetAsyncExc``), once the callback
  has returned; and an ``atexit`` function ends a process whose signal never got through with
  the signal's status (``os._exit``, after flushing), as it does once the process is already
  exiting. Everything else goes to the hooks it replaces.
  """
  if _stop["rescuing"]:
    return
  _stop["rescuing"] = True
  previous = sys.unraisablehook
  exiting = threading.Event()

  def leave_with_the_signals_status():
    for stream in (sys.stdout, sys.stderr):
      with contextlib.suppress(OSError, ValueError):
        stream.flush()
    os._exit(_stop["code"])  # pylint: disable=protected-access

  def raise_again_in_main_thread():
    main = threading.main_thread()
    if exiting.is_set() or not main.is_alive() or main.ident is None:
      leave_with_the_signals_status()
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(main.ident),
                                               ctypes.py_object(Stopped))

  def hook(info):
    if not isinstance(info.exc_value, Stopped):
      previous(info)
    elif exiting.is_set():
      leave_with_the_signals_status()
    else:
      timer = threading.Timer(0.05, raise_again_in_main_thread)
      timer.daemon = True
      timer.start()

  def at_exit():
    exiting.set()
    if _stop["code"] is not None:  # interrupted: whatever the status it was going to exit with
      leave_with_the_signals_status()

  sys.unraisablehook = hook
  atexit.register(at_exit)
