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
import re
import threading
from typing import Mapping, Sequence

from absl import logging
import jax
import numpy as np

from pwes_jax.workdir import fileio
from pwes_jax.workdir import run_files

# A window of fetched metrics: ``[(step, {name: scalar})]`` in step order.
History = Sequence[tuple]


# A metrics log of a run: ``metrics.jsonl``, or ``metrics.p<i>.jsonl`` of process i.
_LOG_NAME = re.compile(r"^metrics(\.p\d+)?\.jsonl$")


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or Inf; the message names the fold and the step."""


def _parse_row(line: bytes):
  try:
    row = json.loads(line)
  except ValueError:
    return None
  return row if isinstance(row, dict) and "fold" in row and "step" in row else None


class MetricsLog:
  """Appends JSON lines to ``workdir/metrics.jsonl`` (and TensorBoard events when available).

  Opening repairs the file left by a killed run or damaged since: lines that are not a whole row
  (a row torn by the kill, bytes that are not UTF-8 JSON) are appended to
  ``metrics.jsonl.torn`` with a warning, and a missing final newline is restored, so the next
  row never glues onto a half line and the file loads as JSON lines. A training run opens it
  even when every fold has finished.

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
    # Folds trained concurrently (``config.loso.concurrent_folds``) share this log: a row
    # appended while another fold's ``truncate`` rewrites the file would be lost.
    self._lock = threading.RLock()
    self._repair()

  def _repair(self) -> None:
    if not os.path.isfile(self.path):
      return
    with open(self.path, "rb") as f:
      data = f.read()
    good, bad = [], []
    for line in data.split(b"\n"):
      if line.strip():
        (good if _parse_row(line) is not None else bad).append(line)
    if not bad and (not data or data.endswith(b"\n")):
      return
    if bad:
      with open(self.path + ".torn", "ab") as f:
        f.write(b"".join(line + b"\n" for line in bad))
      logging.warning("%s: %d torn or damaged line(s) (a run killed mid-write) set aside in "
                      "%s.torn", self.path, len(bad), self.path)
    with fileio.atomic_open(self.path, "wb") as f:
      f.write(b"".join(line + b"\n" for line in good))

  def rows(self, fold: int) -> list:
    """``fold``'s rows, in file order.

    When this log holds none, the rows of the first other metrics log of the workdir that has
    some (a fold another process, or a run with another process count, trained: a
    single-process rerun of a two-process run rebuilding a fold of process 1's).
    """
    with self._lock:
      for path in [self.path] + self._other_logs():
        rows = self._rows(fold, path)
        if rows:
          return rows
      return []

  def _other_logs(self) -> list:
    """The workdir's other metrics logs (``metrics.jsonl``, ``metrics.p<i>.jsonl``)."""
    names = sorted(os.listdir(self._workdir)) if os.path.isdir(self._workdir) else []
    return [os.path.join(self._workdir, n) for n in names
            if _LOG_NAME.match(n) and os.path.join(self._workdir, n) != self.path]

  @staticmethod
  def _rows(fold: int, path: str) -> list:
    if not os.path.isfile(path):
      return []
    with open(path, "rb") as f:
      rows = [_parse_row(line) for line in f if line.strip()]
    return [r for r in rows if r is not None and r["fold"] == fold]

  def write(self, fold: int, step: int, values: Mapping) -> None:
    """Appends one row for ``fold`` at ``step`` (values converted to float)."""
    row = {"fold": fold, "step": step, **{k: float(v) for k, v in values.items()}}
    with self._lock:
      with open(self.path, "a") as f:
        f.write(json.dumps(row) + "\n")
    if self._use_tb:
      w = self._writer(fold)
      if w is not None:
        for k, v in values.items():
          w.add_scalar(k, float(v), step)
        w.flush()

  def truncate(self, fold: int, step: int) -> None:
    """Drops ``fold``'s rows after ``step`` (a resumed fold logs those steps again; a fold
    restarted from scratch, ``step = 0``, loses all its old rows)."""
    with self._lock:
      self._truncate(fold, step)

  def _truncate(self, fold: int, step: int) -> None:
    if not os.path.isfile(self.path):
      return
    with open(self.path) as f:
      lines = f.readlines()
    keep = []
    for line in lines:
      row = _parse_row(line) if line.strip() else None
      if row is None or row["fold"] != fold or row["step"] <= step:
        keep.append(line)
    if len(keep) != len(lines):
      with fileio.atomic_open(self.path) as f:
        f.writelines(keep)

  def _writer(self, fold: int):
    with self._lock:
      return self._make_writer(fold)

  def _make_writer(self, fold: int):
    if fold not in self._tb:
      try:
        # Optional dependency, imported on first use: runs without tensorboardX log JSON only.
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
        self._tb[fold] = SummaryWriter(os.path.join(run_files.fold_dir(self._workdir, fold),
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


_QUALITY = re.compile(r"^pl_(\w+)_(labelled|correct|true)$")
_DERIVED = re.compile(r"^pl_\w+_(precision|recall)$")


def with_label_quality(summary: Mapping) -> dict:
  """``summary`` plus ``pl_<class>_precision`` (correct / labelled) and ``pl_<class>_recall``
  (correct / true) for every class whose pseudo-label counts it holds (0 when the denominator
  is 0). The counts are means over the same steps, so these ratios are those of their sums."""
  out = {k: v for k, v in summary.items() if not _DERIVED.match(k)}
  for k in list(out):
    m = _QUALITY.match(k)
    if m and m.group(2) == "labelled":
      c = m.group(1)
      correct = out.get(f"pl_{c}_correct", 0.0)
      labelled, true = out[k], out.get(f"pl_{c}_true", 0.0)
      out[f"pl_{c}_precision"] = float(correct / labelled) if labelled > 0 else 0.0
      out[f"pl_{c}_recall"] = float(correct / true) if true > 0 else 0.0
  return out


def summarize(history: History) -> dict:
  """The mean of every metric over ``history`` (a non-empty ``[(step, metrics)]``), with the
  pseudo-label precision and recall of the window (:func:`with_label_quality`)."""
  keys = history[0][1].keys()
  return with_label_quality(
      {k: float(np.mean([float(m[k]) for _, m in history])) for k in keys})


def fold_summary(rows: Sequence[Mapping], fold: int, last_step: int, window: int) -> dict:
  """The ``train_summary`` of a fold whose last window is no longer in memory (a resume that
  took no step, or too few), rebuilt from its logged ``rows`` (:func:`summary_from_rows`).

  When no row covers the last window (its rows were torn or damaged and set aside by the
  repair), the latest ``window`` steps that have rows stand in for it, with a warning naming
  both; a fold with no row at all gets ``{}`` with a warning saying why.
  """
  summary = summary_from_rows(rows, last_step, window)
  if summary:
    return summary
  logged = sorted(r["step"] for r in rows if r["step"] <= last_step)
  if not logged:
    logging.warning("fold %d: no metrics log of the workdir holds a row of this fold (torn or "
                    "damaged rows are set aside in metrics.jsonl.torn); its train_summary is "
                    "empty", fold)
    return {}
  latest = logged[-1]
  logging.warning("fold %d: the metrics log holds no row of steps %d-%d (torn or damaged rows "
                  "are set aside in metrics.jsonl.torn); its train_summary is the mean of "
                  "steps %d-%d instead", fold, max(last_step - window, 0) + 1, last_step,
                  max(latest - window, 0) + 1, latest)
  return summary_from_rows(rows, latest, window)


def summary_from_rows(rows: Sequence[Mapping], last_step: int, window: int) -> dict:
  """The mean metrics of a fold's last ``window`` steps, rebuilt from its logged rows.

  Each row holds the mean over the steps since the fold's previous row; the rows whose steps
  lie in ``(last_step - window, last_step]`` are averaged weighted by the steps they cover
  (``steps_per_sec`` left out). Used when a fold's record is written after a resume that took
  no step (its window is no longer in memory). ``{}`` when there is no such row.
  """
  rows = sorted((r for r in rows if r["step"] <= last_step), key=lambda r: r["step"])
  picked, prev = [], 0
  for r in rows:
    if r["step"] > last_step - window:
      picked.append((r, r["step"] - prev))
    prev = r["step"]
  if not picked:
    return {}
  keys = [k for k in picked[-1][0]
          if k not in ("fold", "step", "steps_per_sec") and not _DERIVED.match(k)]
  total = sum(w for _, w in picked)
  return with_label_quality(
      {k: float(sum(float(r[k]) * w for r, w in picked if k in r) / total) for k in keys})
