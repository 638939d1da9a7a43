"""Folds trained concurrently, one thread each, calling the same compiled programs.

Folds trained one after another may also run ``config.loso.concurrent_folds`` at a time: every
fold still runs exactly its sequential computation (bit for bit the same parameters and
outputs), while the threads fill the cores a narrow model's step leaves idle. This module owns
the thread plumbing (JAX's thread-local context, stopping on the first failure, Ctrl-C); the
loop hands in the function that trains one unit.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Sequence

import jax


class StoppedError(Exception):
  """A concurrently trained fold stopped because another fold failed or the run was
  interrupted (its latest checkpoint stays; rerunning resumes it)."""


# JAX's context managers hold thread-local state: a fold thread starts from the process-wide
# values, so the caller's (``jax.default_device``, a matmul precision, ``debug_nans``, ...) are
# entered again in every fold thread.
_THREAD_CONTEXTS = (
    ("jax_default_device", jax.default_device),
    ("jax_default_matmul_precision", jax.default_matmul_precision),
    ("jax_debug_nans", jax.debug_nans),
    ("jax_debug_infs", jax.debug_infs),
    ("jax_numpy_rank_promotion", jax.numpy_rank_promotion),
    ("jax_numpy_dtype_promotion", jax.numpy_dtype_promotion),
    ("jax_disable_jit", jax.disable_jit),
    ("jax_log_compiles", jax.log_compiles),
)


def _caller_jax_context() -> Callable[[], contextlib.ExitStack]:
  """A factory of a context that re-enters, in another thread, the calling thread's values of
  JAX's context managers (:data:`_THREAD_CONTEXTS`)."""
  values = [(manager, getattr(jax.config, name)) for name, manager in _THREAD_CONTEXTS]

  def enter() -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    for manager, value in values:
      stack.enter_context(manager(value))
    return stack
  return enter


def train_threads(units: Sequence[Any], width: int, train_unit: Callable) -> list:
  """Runs ``train_unit(unit, stop)`` for each of ``units`` (in order), ``width`` at a time, one
  thread each; returns the records they return, concatenated (in the order they finished).

  ``train_unit`` raises :class:`StoppedError` when ``stop`` (a ``threading.Event``) is set before
  one of its steps; the caller passes the loop's unit function (this module imports no loop).

  Each thread runs under the caller's JAX context (device, matmul precision, debug flags:
  :func:`_caller_jax_context`). The first failure stops every thread before its next step;
  the error of the earliest unit that failed is raised (as a sequential run would have raised
  it first). An exception in the calling thread (Ctrl-C's SystemExit) stops the threads too
  and waits for them: a fold's checkpoint or outputs being written are finished, not cut.
  """
  jax_context = _caller_jax_context()
  stop = threading.Event()
  lock = threading.Lock()
  pending = list(enumerate(units))
  records, errors = [], {}

  def worker():
    while not stop.is_set():
      with lock:
        if not pending:
          return
        position, unit = pending.pop(0)
      try:
        done = train_unit(unit, stop)
      except StoppedError:
        return
      except BaseException as e:  # pylint: disable=broad-except  (re-raised by the caller)
        with lock:
          errors[position] = e
        stop.set()
        return
      with lock:
        records.extend(done)

  # Each thread sets its own event when it ends. The calling thread waits on the events, not
  # with ``Thread.join``: a ``join`` that an exception from a signal handler (Ctrl-C) cuts short
  # leaves the thread marked as ended on CPython 3.11, and the next ``join`` returns at once
  # while the fold still writes its checkpoint.
  ended = [threading.Event() for _ in range(width)]

  def run(event):
    try:
      with jax_context():
        worker()
    finally:
      event.set()

  threads = [threading.Thread(target=run, args=(ended[i],), name=f"pwes-fold-{i}", daemon=True)
             for i in range(width)]
  try:
    for t in threads:
      t.start()
    for event in ended:
      while not event.wait(0.5):  # a timed wait: Ctrl-C reaches the calling thread at once
        pass
  finally:
    stop.set()
    for t, event in zip(threads, ended):
      if t.ident is not None:  # started
        event.wait()
  if errors:
    raise errors[min(errors)]
  return records
