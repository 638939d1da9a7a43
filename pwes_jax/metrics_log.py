"""Training metrics: ``WORKDIR/metrics.jsonl`` (+ TensorBoard), the NaN guard and summaries.

Every row of ``metrics.jsonl`` is one JSON object ``{"fold": int, "step": int, <metric>: float}``
holding the mean of each metric over the steps since the fold's previous row (``step`` counts
optimizer steps taken), plus ``steps_per_sec``. Load it with
``pandas.read_json(path, lines=True)``. In a multi-process run each process writes
``metrics.p<process index>.jsonl`` for the folds on its own devices.
"""

from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

import jax
import numpy as np

from pwes_jax import fileio
from pwes_jax import run_dir

# A window of fetched metrics: ``[(step, {name: scalar})]`` in step order.
History = Sequence[tuple]


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or Inf; the message names the fold and the step."""


class MetricsLog:
  """Appends JSON lines to ``workdir/metrics.jsonl`` (and TensorBoard events when available).

  Args:
    workdir: the run directory.
    use_tensorboard: also write ``fold_XX/tensorboard/`` events when ``tensorboardX`` is
      installed (silently skipped when it is not).
  """

  def __init__(self, workdir: str, use_tensorboard: bool):
    name = ("metrics.jsonl" if jax.process_count() == 1
            else f"metrics.p{jax.process_index()}.jsonl")
    self.path = os.path.join(workdir, name)
    self._tb = {}
    self._use_tb = use_tensorboard
    self._workdir = workdir

  def write(self, fold: int, step: int, values: Mapping) -> None:
    """Appends one row for ``fold`` at ``step`` (values converted to float)."""
    row = {"fold": fold, "step": step, **{k: float(v) for k, v in values.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    if self._use_tb:
      w = self._writer(fold)
      if w is not None:
        for k, v in values.items():
          w.add_scalar(k, float(v), step)
        w.flush()

  def truncate(self, fold: int, step: int) -> None:
    """Drops ``fold``'s rows after ``step`` (a resumed fold logs those steps again)."""
    if not os.path.isfile(self.path):
      return
    with open(self.path) as f:
      lines = f.readlines()
    keep = []
    for line in lines:
      row = json.loads(line) if line.strip() else None
      if row is None or row["fold"] != fold or row["step"] <= step:
        keep.append(line)
    if len(keep) != len(lines):
      with fileio.atomic_open(self.path) as f:
        f.writelines(keep)

  def _writer(self, fold: int):
    if fold not in self._tb:
      try:
        # Optional dependency, imported on first use: runs without tensorboardX log JSON only.
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
        self._tb[fold] = SummaryWriter(os.path.join(run_dir.fold_dir(self._workdir, fold),
                                                    "tensorboard"))
      except ImportError:
        self._tb[fold] = None
    return self._tb[fold]


def check_finite(history: History, fold_index: int) -> None:
  """Raises :class:`NonFiniteLossError` naming the first step whose loss is not finite.

  Args:
    history: ``[(step, metrics)]`` with host scalars; ``step`` is the 0-based step index, so
      the message's "at step s" is the step whose update produced the bad loss.
    fold_index: the fold, for the message.
  """
  for step, m in history:
    loss = float(m["loss"])
    if not np.isfinite(loss):
      raise NonFiniteLossError(f"fold {fold_index}: loss is {loss} at step {step}; "
                               f"terms: { {k: float(v) for k, v in m.items()} }")


def summarize(history: History) -> dict:
  """The mean of every metric over ``history`` (a non-empty ``[(step, metrics)]``)."""
  keys = history[0][1].keys()
  return {k: float(np.mean([float(m[k]) for _, m in history])) for k in keys}
