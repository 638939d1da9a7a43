"""What a run shows on the terminal: one line per trained fold with its speed and the run's ETA,
and at the end a summary of where the time went (phases and compiles).

Progress lines go to stdout (``print``), independent of the logging verbosity: library INFO
(Orbax, JAX) is for ``--verbosity``, these lines are for the user.

Folds trained concurrently (``config.loso.concurrent_folds``) report from their own threads:
every method is thread-safe, and inside :meth:`RunProgress.concurrently` the per-fold phases
(setup, training, inference) are shares of the block's wall time, so the summary's phases still
add up to the run's wall time.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, Optional

from pwes_jax import runtime

# Phases in the order the summary lists them: ``setup`` is a fold's fresh state and checkpoint
# restore, ``inference`` its outputs after training.
PHASES = ("data", "setup", "training", "inference", "evaluation", "report")


def _clock(seconds: float) -> str:
  seconds = max(int(round(seconds)), 0)
  m, s = divmod(seconds, 60)
  return f"{m}m{s:02d}s" if m else f"{s}s"


def _per_fold(units) -> float:
  """Mean seconds per fold of ``[(folds, seconds)]`` units."""
  return sum(s for _, s in units) / max(sum(n for n, _ in units), 1)


class RunProgress:
  """Phase timer and per-fold progress of one run.

  Args:
    total_folds: folds this invocation trains (the ETA counts down from it).
    out: where lines go (default ``print`` with flush).
  """

  def __init__(self, total_folds: int = 0, out: Optional[Callable[[str], None]] = None):
    self.total_folds = int(total_folds)
    self._out = out or (lambda line: print(line, flush=True))
    self.seconds = {p: 0.0 for p in PHASES}
    self.fold_seconds = []  # per trained unit: (folds, seconds incl. inference)
    self._start = time.perf_counter()
    self._compiles0 = runtime.counts()
    self._folds_done = 0
    self._lock = threading.RLock()
    self._thread_seconds = None  # {phase: seconds summed over threads} inside concurrently()
    self._width = 1  # folds at a time inside concurrently()
    self._concurrent = []  # (width, wall seconds) of every concurrently() block
    self._running = {}  # {thread id: start time} of units under way (unit_started)
    self._concurrent_from = 0  # fold_seconds[this:] are the units done inside concurrently()
    self._next_width = 1  # folds at a time after the unit under way (announce_concurrency)

  @contextlib.contextmanager
  def phase(self, name: str):
    """Adds the time spent inside the block to phase ``name``."""
    t0 = time.perf_counter()
    try:
      yield
    finally:
      self.add(name, time.perf_counter() - t0)

  def add(self, name: str, seconds: float) -> None:
    """Adds ``seconds`` to phase ``name`` (from any thread)."""
    with self._lock:
      target = self.seconds if self._thread_seconds is None else self._thread_seconds
      target[name] = target.get(name, 0.0) + seconds

  @contextlib.contextmanager
  def concurrently(self, width: int):
    """A block in which ``width`` folds train at a time, each in its own thread.

    The phases added inside it (summed over the threads) are scaled to the block's wall time
    when it ends; the ETA fills ``width`` slots with the units under way (what is left of each)
    and the units not started, at the mean time of the units done inside the block.
    """
    t0 = time.perf_counter()
    with self._lock:
      self._thread_seconds, self._width = {}, int(width)
      self._concurrent_from = len(self.fold_seconds)
      self._next_width = 1  # announce_concurrency holds until the block starts
    try:
      yield
    finally:
      wall = time.perf_counter() - t0
      with self._lock:
        parts, self._thread_seconds, self._width = self._thread_seconds, None, 1
        total = sum(parts.values())
        for name, seconds in parts.items():
          self.seconds[name] = self.seconds.get(name, 0.0) + wall * seconds / total
        if total <= 0:
          self.seconds["training"] += wall
        self._concurrent.append((int(width), wall))

  def announce_concurrency(self, width: int) -> None:
    """Says that the units after the one under way train ``width`` at a time: until one of
    them has finished there is no figure for that, so the line printed before gives no ETA
    and says when it comes."""
    with self._lock:
      self._next_width = int(width)

  def unit_started(self) -> None:
    """Marks the calling thread's unit as under way (the ETA counts what is left of it)."""
    with self._lock:
      self._running[threading.get_ident()] = time.perf_counter()

  def _concurrent_eta(self, left: int) -> float:
    """Seconds until ``left`` folds are done, ``self._width`` at a time: each unit under way
    needs what is left of the mean concurrent unit time, then the folds not started take the
    slot that frees first, one mean unit time each."""
    per_unit = _per_fold(self.fold_seconds[self._concurrent_from:])
    now = time.perf_counter()
    slots = sorted(max(per_unit - (now - t0), 0.0) for t0 in self._running.values())
    slots += [0.0] * max(self._width - len(slots), 0)
    for _ in range(max(left - len(self._running), 0)):
      slots.sort()
      slots[0] += per_unit
    return max(slots) if slots else 0.0

  def line(self, text: str) -> None:
    with self._lock:
      self._out(text)

  def unit_done(self, text: str, num_folds: int, seconds: float,
                steady_seconds: Optional[float] = None) -> None:
    """Prints ``text`` (a fold's or group's summary) with the run's progress and ETA.

    Args:
      text: what trained, how many steps, how fast.
      num_folds: folds the unit finished.
      seconds: the unit's wall time, training and inference.
      steady_seconds: what the unit would take without compiling (its steps at its median
        logged rate, plus inference); the ETA uses it until a second unit has run.
    """
    with self._lock:
      self._running.pop(threading.get_ident(), None)
      self._folds_done += num_folds
      self.fold_seconds.append((num_folds, seconds))
      left = max(self.total_folds - self._folds_done, 0)
      if self._thread_seconds is not None:  # inside concurrently()
        remaining = self._concurrent_eta(left)
      else:
        # The first unit pays the compiles; later units show the steady cost per fold.
        if len(self.fold_seconds) > 1:
          steady = self.fold_seconds[1:]
        else:
          steady = [(num_folds, seconds if steady_seconds is None else steady_seconds)]
        remaining = left * _per_fold(steady)
      elapsed = time.perf_counter() - self._start
      eta = f", ETA {_clock(remaining)}" if left else ""
      if left and self._thread_seconds is None and self._next_width > 1:
        # No figure for folds trained side by side yet: a one-at-a-time ETA misled (46 % too
        # long on the README job), so none until one of them has finished.
        eta = f", ETA after the next folds ({self._next_width} at a time from now)"
      self._out(f"[{self._folds_done}/{self.total_folds}] {text}; elapsed {_clock(elapsed)}{eta}")

  def summary(self) -> str:
    """One line of phase seconds (and one on folds trained side by side) and one of compiles,
    for the end of the run; no compiles line when nothing was built (a rerun of a finished
    workdir)."""
    with self._lock:
      total = time.perf_counter() - self._start
      parts = [f"{p} {self.seconds[p]:.1f} s" for p in PHASES if self.seconds.get(p)]
      c = runtime.counts() - self._compiles0
      note = ""
      if self._concurrent:
        width = max(w for w, _ in self._concurrent)
        wall = sum(s for _, s in self._concurrent)
        note = (f"\nfolds trained {width} at a time for {wall:.1f} s of it (setup, training "
                "and inference are their shares of that time)")
      text = (f"time: {total:.1f} s wall = " + ", ".join(parts)
              + f" (+{max(total - sum(self.seconds.values()), 0.0):.1f} s other)" + note)
      if c.programs:  # a rerun of a finished workdir builds nothing: no line of zeros
        text += f"\ncompiles: {runtime.describe(c)}, inside the phases above"
      return text
