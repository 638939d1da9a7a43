"""What every launcher shares: one-line errors for bad flags and for OS failures.

* :func:`flags_parser` is given to ``app.run(main, flags_parser=...)``: a bad flag value, an
  unknown flag or an unknown config field (``--config.optim.learnin_rate=1``) is one line on
  stderr naming the flag (and, for a config field, the close field names), exit status 2.
* :func:`errors` wraps a launcher's work: a user-facing error (bad input, bad config, an OS
  failure such as a full disk, a read-only or missing directory, a permission, a file where a
  directory should be) becomes one line ``<launcher>: <message>`` and exit status 1.
* Ctrl-C (SIGINT) is one line ``<launcher>: interrupted`` (for the training launchers with how to
  resume) and exit status 130, not a KeyboardInterrupt traceback (:func:`exit_on_interrupt`,
  installed by :func:`flags_parser`).
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import importlib.util
import os
import signal
import sys
from typing import Iterator

from absl import flags
import ml_collections

from pwes_jax.training import metrics_log
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


@contextlib.contextmanager
def errors(name: str) -> Iterator[None]:
  """Turns a :data:`USER_ERRORS` raised in the block into ``SystemExit("<name>: <message>")``."""
  try:
    yield
  except USER_ERRORS as e:
    raise SystemExit(f"{name}: {one_line(e)}") from None


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
    try:
      return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as e:
      message = _config_field_hint(argv) or str(e)
      message = "; ".join(line.strip() for line in message.splitlines() if line.strip())
      sys.stderr.write(f"{name}: usage error: {message} (--helpshort lists the flags)\n")
      sys.exit(2)

  return parse



def exit_on_sigterm() -> None:
  """Restores SIGTERM's default action (the process ends at once, whatever its threads do).

  Call it after ``jax.distributed.initialize``: the distributed runtime installs a handler that
  only records the signal (for preemption), so a terminated process of a multi-process run
  trained on. What the run wrote stays valid (every state file is written atomically);
  rerunning resumes it (the lock left behind is taken over as stale, with a warning).
  """
  signal.signal(signal.SIGTERM, signal.SIG_DFL)


# What an interrupted launcher adds to ``<name>: interrupted`` (the others: nothing to add).
_INTERRUPT_HINTS = {
    "launch.main": "rerun the same command to resume (finished folds are kept)",
    "launch.sweep": "rerun the same command to resume (finished runs and folds are kept)",
}


def exit_on_interrupt(name: str) -> None:
  """Ctrl-C (SIGINT) ends the launcher with one line ``<name>: interrupted[; <how to resume>]``
  on stderr and exit status 130 (128 + SIGINT, as a shell reports an interrupted command).

  The process unwinds as on ``KeyboardInterrupt`` (``finally`` blocks run: the workdir lock is
  released; every state file is written atomically, so what was written stays valid), but with
  ``SystemExit(130)`` and no traceback. What library threads cut short print while the process
  ends (Orbax's checkpoint writer: "cannot schedule new futures after shutdown", "Event loop is
  closed") is dropped unless ``--verbosity`` was given: a rerun resumes from the last intact
  checkpoint. A second Ctrl-C while it unwinds ends it at once.
  """
  hint = _INTERRUPT_HINTS.get(name)

  def handler(signum, frame):
    del signum, frame
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.stderr.write(f"{name}: interrupted{'; ' + hint if hint else ''}\n")
    sys.stderr.flush()
    verbose = "verbosity" in flags.FLAGS and flags.FLAGS["verbosity"].present
    if not verbose:
      with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    raise SystemExit(130)

  signal.signal(signal.SIGINT, handler)
