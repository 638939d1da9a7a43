"""What a run shows on the terminal: one line per trained fold with its speed and the run's ETA,
and at the end a summary of where the time went (phases and compiles).

Progress lines go to stdout (``print``), independent of the logging verbosity: library INFO
(Orbax, JAX) is for ``--verbosity``, these lines are for the user.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Optional

from pwes_jax import compile_cache

# Phases in the order the summary lists them: ``setup`` is a fold's fresh state and checkpoint
# restore, ``inference`` its outputs after training.
PHASES = ("data", "setup", "training", "inference", "evaluation", "report")


def _clock(seconds: float) -> str:
  seconds = max(int(round(seconds)), 0)
  m, s = divmod(seconds, 60)
  return f"{m}m{s:02d}s" if m else f"{s}s"


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
    self._compiles0 = compile_cache.counts()
    self._folds_done = 0

  @contextlib.contextmanager
  def phase(self, name: str):
    """Adds the time spent inside the block to phase ``name``."""
    t0 = time.perf_counter()
    try:
      yield
    finally:
      self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

  def line(self, text: str) -> None:
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
    self._folds_done += num_folds
    self.fold_seconds.append((num_folds, seconds))
    left = max(self.total_folds - self._folds_done, 0)
    # The first unit pays the compiles; later units show the steady cost per fold.
    if len(self.fold_seconds) > 1:
      steady = self.fold_seconds[1:]
    else:
      steady = [(num_folds, seconds if steady_seconds is None else steady_seconds)]
    per_fold = sum(s for _, s in steady) / max(sum(n for n, _ in steady), 1)
    elapsed = time.perf_counter() - self._start
    eta = f", ETA {_clock(left * per_fold)}" if left else ""
    self._out(f"[{self._folds_done}/{self.total_folds}] {text}; elapsed {_clock(elapsed)}{eta}")

  def summary(self) -> str:
    """One line of phase seconds and one of compiles, for the end of the run."""
    total = time.perf_counter() - self._start
    parts = [f"{p} {self.seconds[p]:.1f} s" for p in PHASES if self.seconds.get(p)]
    c = compile_cache.counts() - self._compiles0
    return (f"time: {total:.1f} s wall = " + ", ".join(parts)
            + f" (+{max(total - sum(self.seconds.values()), 0.0):.1f} s other)\n"
            + f"compiles: {compile_cache.describe(c)}, inside the phases above")
