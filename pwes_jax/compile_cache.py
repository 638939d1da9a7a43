"""JAX's persistent compilation cache in a user cache directory, and a count of compiles.

XLA compiles one train step per length bucket and one forward per padded length; on a CPU that
is tens of seconds a run. With the cache on, a rerun, the next row of a sweep or ``launch.spot``
loads those programs from disk instead of compiling them again (JAX's own cache,
``jax_compilation_cache_dir``; the key covers the program, the backend, the devices and the
jax/jaxlib versions, so a stale entry is never used).

* :func:`enable` points JAX at ``$PWES_COMPILE_CACHE`` or ``$XDG_CACHE_HOME/pwes_jax/xla``
  (``~/.cache/pwes_jax/xla``); ``PWES_COMPILE_CACHE=off`` turns it off. Programs that compile
  in under ``MIN_COMPILE_SECONDS`` are not written unless JAX's own
  ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` is set, which then wins. A cache directory set
  before (a test session, the user's own ``JAX_COMPILATION_CACHE_DIR``) is left as it is.
* :func:`counts` reads how many programs XLA compiled in this process and for how long, and how
  many were loaded from the cache (JAX's ``jax.monitoring`` events).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from typing import Optional

import jax

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


def enable(directory: Optional[str] = None) -> Optional[str]:
  """Turns JAX's persistent compilation cache on (call before the first compile).

  Args:
    directory: the cache directory; default ``$PWES_COMPILE_CACHE`` or :func:`default_dir`.
      ``"off"`` (or ``PWES_COMPILE_CACHE=off``) leaves the cache off.

  Returns:
    The cache directory in use, or None when the cache is off. A directory configured before
    (``jax_compilation_cache_dir``) is kept and returned.
  """
  listen()
  current = jax.config.jax_compilation_cache_dir
  if current:
    return current
  directory = directory or os.environ.get(ENV) or default_dir()
  if directory.lower() == "off":
    return None
  os.makedirs(directory, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", directory)
  if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:  # the user's own wins
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return directory


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
