"""The process a launcher runs in: terminal logging, JAX's compilation cache, the host allocator.

:func:`set_up_process` is what every launcher calls first thing in ``main``; each part is also
callable alone.

**Terminal logging** (:func:`quiet_logging`): progress and warnings on the terminal, library
internals only with ``--verbosity`` / ``-v``. absl (and with it Python's root logger: JAX's
``xla_bridge`` backend probing, Orbax's restore steps) logs at WARNING; Orbax's own lines, at any
level, are dropped (after a kill or on a damaged checkpoint it warns about its internals, which
our own warnings report in the user's terms); warnings read ``warning: <message>`` instead of
absl's prefix of level, date, thread id and file:line.

**Compilation cache** (:func:`enable`, :func:`counts`): XLA compiles one train step per length
bucket and one forward per padded length; on a CPU that is tens of seconds a run. With the cache
on, a rerun, the next row of a sweep or ``launch.spot`` loads those programs from disk instead of
compiling them again (JAX's own cache, ``jax_compilation_cache_dir``; the key covers the program,
the backend, the devices and the jax/jaxlib versions, so a stale entry is never used).

* :func:`enable` points JAX at ``$PWES_COMPILE_CACHE`` or ``$XDG_CACHE_HOME/pwes_jax/xla``
  (``~/.cache/pwes_jax/xla``); ``PWES_COMPILE_CACHE=off`` turns it off. Programs that compile
  in under ``MIN_COMPILE_SECONDS`` are not written unless JAX's own
  ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` is set, which then wins. A cache directory set
  before (a test session, the user's own ``JAX_COMPILATION_CACHE_DIR``) is left as it is.
* A cache that cannot be used (a read-only home, a file where the directory should be) is one
  warning and a run without the cache, never a traceback (:func:`usable_dir`).
* A damaged entry (a truncated file from a killed or full-disk write) is set aside as
  ``<entry>.damaged`` the first time JAX fails to read it, with one line saying so, and the
  program is compiled and written again (:func:`set_aside_damaged`); JAX itself would warn and
  recompile on every later run without ever replacing it.
* :func:`counts` reads how many programs XLA compiled in this process and for how long, and how
  many were loaded from the cache (JAX's ``jax.monitoring`` events).

**Host allocator** (:func:`keep_freed_memory`): glibc's allocator tuned for XLA CPU's per-step
buffers. Every train step on the CPU allocates its temporaries (megabytes each) and frees them at
the end; with glibc's defaults large blocks are ``mmap``-ed and returned to the kernel when
freed, so the next step faults every page in again. Raising the mmap and trim thresholds
(``mallopt``) keeps those blocks in the heap (BUILD_NOTES.md has the measurement: system time
12 s -> 1.4 s per two folds, training ~18 % faster, peak RSS +8 %). It changes no number the run
computes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import errno
import logging as std_logging
import os
import tempfile
import threading
import warnings
from typing import Optional

from absl import flags
from absl import logging
import jax

try:  # JAX's own reader of cache entries (private), to tell a damaged entry from a good one
  from jax._src import compilation_cache as _jax_cache
except ImportError:
  _jax_cache = None

ENV = "PWES_COMPILE_CACHE"
# Programs that compile faster than this are not written to the cache (reading one back is
# not free either); a step of the default config compiles in seconds.
MIN_COMPILE_SECONDS = 0.3

_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
_CACHE_HIT = "/jax/compilation_cache/cache_hits"
_SAVED = "/jax/compilation_cache/compile_time_saved_sec"


@dataclasses.dataclass(frozen=True)
class Counts:
  """Compiles seen in this process since it started (or between two :func:`counts`).

  Attributes:
    programs: XLA executables built (JAX's backend-compile events: compiled or loaded).
    compile_seconds: seconds spent building them (compiling, or reading the cache).
    from_cache: of ``programs``, those loaded from the persistent cache.
    saved_seconds: compile seconds the cache saved (as recorded when they were written).
  """
  programs: int = 0
  compile_seconds: float = 0.0
  from_cache: int = 0
  saved_seconds: float = 0.0

  @property
  def compiled(self) -> int:
    """Programs XLA compiled (not found in the cache, or the cache off)."""
    return self.programs - self.from_cache

  def __sub__(self, other: "Counts") -> "Counts":
    return Counts(self.programs - other.programs, self.compile_seconds - other.compile_seconds,
                  self.from_cache - other.from_cache, self.saved_seconds - other.saved_seconds)


_lock = threading.Lock()
_totals = {"programs": 0, "compile_seconds": 0.0, "from_cache": 0, "saved_seconds": 0.0}
_listening = False


def _on_event(event: str, **kwargs) -> None:
  del kwargs
  if event == _CACHE_HIT:
    with _lock:
      _totals["from_cache"] += 1


def _on_duration(event: str, seconds: float, **kwargs) -> None:
  del kwargs
  with _lock:
    if event == _BACKEND_COMPILE:
      _totals["programs"] += 1
      _totals["compile_seconds"] += float(seconds)
    elif event == _SAVED:
      _totals["saved_seconds"] += float(seconds)


def listen() -> None:
  """Starts counting compiles (idempotent; :func:`enable` calls it)."""
  global _listening
  with _lock:
    if _listening:
      return
    _listening = True
  jax.monitoring.register_event_listener(_on_event)
  jax.monitoring.register_event_duration_secs_listener(_on_duration)


def counts() -> Counts:
  """The compiles counted so far (zeros before :func:`listen`)."""
  with _lock:
    return Counts(**_totals)


def default_dir() -> str:
  """``$XDG_CACHE_HOME/pwes_jax/xla``, or ``~/.cache/pwes_jax/xla``."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "pwes_jax", "xla")


def usable_dir(directory: str) -> Optional[str]:
  """Why ``directory`` cannot hold the cache (created if missing), or None when it can.

  The directory must exist (or be creatable) and take a new file: a read-only file system, a
  directory without write permission or a file in the way each give the reason in words.
  """
  try:
    os.makedirs(directory, exist_ok=True)
    probe = tempfile.NamedTemporaryFile(dir=directory, prefix=".pwes_probe_", delete=True)
    probe.close()
  except OSError as e:
    reason = {errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
              errno.EPERM: "permission denied", errno.ENOTDIR: "a path component is a file",
              errno.EEXIST: "a file is in the way", errno.ENOSPC: "the disk is full"}.get(
                  e.errno, e.strerror or type(e).__name__)
    return f"{reason} ({e.filename or directory})"
  return None


def enable(directory: Optional[str] = None) -> Optional[str]:
  """Turns JAX's persistent compilation cache on (call before the first compile).

  Args:
    directory: the cache directory; default ``$PWES_COMPILE_CACHE`` or :func:`default_dir`.
      ``"off"`` (or ``PWES_COMPILE_CACHE=off``) leaves the cache off.

  Returns:
    The cache directory in use, or None when the cache is off, or unusable: then one warning
    says why and how to choose another (:func:`usable_dir`), and the run goes on without it. A
    directory configured before (``jax_compilation_cache_dir``) is kept and returned.
  """
  listen()
  current = jax.config.jax_compilation_cache_dir
  if current:
    watch_damaged_entries()
    return current
  directory = directory or os.environ.get(ENV) or default_dir()
  if directory.lower() == "off":
    return None
  problem = usable_dir(directory)
  if problem is not None:
    logging.warning("compilation cache %s cannot be used: %s; running without it (set %s to a "
                    "writable directory, or to off)", directory, problem, ENV)
    return None
  watch_damaged_entries()
  jax.config.update("jax_compilation_cache_dir", directory)
  if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:  # the user's own wins
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return directory


_DAMAGED = "Error reading persistent compilation cache entry for '"
_watching = False


def set_aside_damaged(directory: str, module: str) -> list:
  """Renames the damaged cache entries of ``module`` in ``directory`` to ``<entry>.damaged``.

  An entry (``<module>-<key>-cache``) is damaged when it cannot be decompressed as JAX wrote it
  (a truncated or overwritten file). JAX then compiles the program and, the name being free,
  writes a fresh entry.

  Returns:
    The entries set aside (file names).
  """
  if _jax_cache is None:  # another JAX layout: leave the cache as it is
    return []
  moved = []
  try:
    names = os.listdir(directory)
  except OSError:
    return []
  for name in names:
    if not (name.startswith(module + "-") and name.endswith("-cache")):
      continue
    path = os.path.join(directory, name)
    try:
      with open(path, "rb") as f:
        _jax_cache.extract_executable_and_time(_jax_cache.decompress_executable(f.read()))
    except OSError:
      continue
    except Exception:  # noqa: BLE001 - anything JAX's reader would fail on is damage.
      try:
        os.replace(path, path + ".damaged")
        moved.append(name)
      except OSError:
        pass
  return moved


def watch_damaged_entries() -> None:
  """Sets damaged cache entries aside when JAX reports one (:func:`set_aside_damaged`).

  JAX warns (``warnings.warn``) when an entry cannot be read and then compiles the program; at
  that warning the entry is renamed, so the compiled program is written afresh, and the warning
  becomes one line naming the entry. Idempotent.
  """
  global _watching
  if _watching:
    return
  _watching = True
  previous = warnings.showwarning

  def showwarning(message, category, filename, lineno, file=None, line=None):
    text = str(message)
    directory = jax.config.jax_compilation_cache_dir
    if text.startswith(_DAMAGED) and directory:
      module = text[len(_DAMAGED):].split("'", 1)[0]
      moved = set_aside_damaged(directory, module)
      if moved:
        logging.warning("compilation cache: damaged entr%s %s set aside (.damaged) in %s; the "
                        "program is compiled and cached again", "y" if len(moved) == 1 else "ies",
                        ", ".join(moved), directory)
        return
    previous(message, category, filename, lineno, file, line)

  warnings.showwarning = showwarning


def describe(c: Counts) -> str:
  """``"80 programs built in 5.7 s: 73 compiled, 7 loaded from the compilation cache (saved
  ~20 s)"``."""
  text = f"{c.programs} program(s) built in {c.compile_seconds:.1f} s: {c.compiled} compiled"
  if jax.config.jax_compilation_cache_dir:
    text += f", {c.from_cache} loaded from the compilation cache"
    if c.from_cache:
      text += f" (saved ~{max(c.saved_seconds, 0.0):.0f} s)"
  else:
    text += " (compilation cache off)"
  return text


# ------------------------------------------------------------------------------------------------
# Terminal logging.

_ORBAX_DIR = f"{os.sep}orbax{os.sep}"


def _not_orbax(record) -> bool:
  """A ``logging`` filter: False for records logged from inside the ``orbax`` package."""
  return _ORBAX_DIR not in (record.pathname or "")


class TerminalFormatter(std_logging.Formatter):
  """``<level>: <message>`` (``warning: ...``), a traceback after it when the record has one:
  absl's prefix (``W1201 01:29:57.466414 140028805933952 layout.py:343]``) says nothing a user
  of a launcher needs."""

  def format(self, record) -> str:
    return f"{record.levelname.lower()}: {super().format(record)}"


def quiet_logging() -> None:
  """absl and Python logging at WARNING, no Orbax lines, and :class:`TerminalFormatter`'s
  prefix, unless ``--verbosity`` was given (call in ``main``)."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
    handler = logging.get_absl_handler()
    if _not_orbax not in handler.filters:
      handler.addFilter(_not_orbax)
    handler.setFormatter(TerminalFormatter("%(message)s"))


# ------------------------------------------------------------------------------------------------
# Host allocator.



# mallopt parameters (glibc malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 256 * 2 ** 20   # blocks up to this size come from the heap, not mmap
TRIM_THRESHOLD = 1024 * 2 ** 20  # free heap top kept before returning it to the kernel
TOP_PAD = 64 * 2 ** 20           # extra heap grown at a time

_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def keep_freed_memory() -> bool:
  """Sets the thresholds above with ``mallopt`` (glibc only; call once, early).

  Left alone when the user set any ``MALLOC_*_`` variable above (their tuning wins) or when
  the C library has no ``mallopt`` (macOS, musl).

  Returns:
    True when the thresholds were set.
  """
  if any(v in os.environ for v in _ENV):
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
  ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
  ok = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
  ok = mallopt(_M_TOP_PAD, TOP_PAD) == 1 and ok
  return ok


# ------------------------------------------------------------------------------------------------
# One set-up for every launcher.


def set_up_process(*, compile_cache: bool = False, allocator: bool = False) -> None:
  """Quiet terminal logging; with ``compile_cache`` JAX's persistent cache (:func:`enable`), with
  ``allocator`` the host allocator's thresholds (:func:`keep_freed_memory`).

  Call first thing in a launcher's ``main`` (after absl parsed the flags): the launchers that
  compile programs (training, sweeps, spotting) ask for the cache, those that train for the
  allocator setting.
  """
  quiet_logging()
  if compile_cache:
    enable()  # reruns, sweeps and launch.spot reuse the compiled programs
  if allocator:
    keep_freed_memory()  # no page-fault churn from XLA's per-step buffers
