"""Mean and spread over seeds of a sweep's paper-style columns, and which rows the spread can
tell apart.

A sweep run once per seed (``launch.sweep`` with ``--config.seed=s``, one workdir each) leaves
one ``results.json`` per row and seed. :func:`spread_rows` gives every row's mean and sample
standard deviation of the paper's columns (``report.COLUMNS``, protocol ``paper``) at each
operating point; :func:`paired_differences` compares two rows seed by seed (the same seed
draws the same point labels and the same initial parameters for every row, so the rows'
differences are paired) with a two-sided paired t-test at the 95 % level: with n seeds the
mean difference must exceed ``t(0.975, n - 1) * sd / sqrt(n)`` (4.30 sd/sqrt(3) for three
seeds). A difference below that is one the seeds cannot tell apart; the table says so
instead of ranking the rows.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy import stats

from pwes_jax import report
from pwes_jax.workdir import fileio


@dataclasses.dataclass(frozen=True)
class Spread:
  """One row and operating point over seeds.

  Attributes:
    name: the sweep row.
    point: the operating point (``tuned``, ``honest_cross_fold``, ``honest_train_subjects``).
    values: ``[S, len(report.COLUMNS)]`` float64, one line per seed (NaN where missing).
    mean, sd: ``[len(report.COLUMNS)]`` mean and sample standard deviation (ddof 1; NaN for
      one seed).
  """
  name: str
  point: str
  values: np.ndarray
  mean: np.ndarray
  sd: np.ndarray


@dataclasses.dataclass(frozen=True)
class Difference:
  """``b - a`` of one column at one operating point, seed by seed.

  Attributes:
    a, b: the rows compared; column: the column's name (``report.COLUMNS``).
    per_seed: ``[S]`` differences; mean, sd: their mean and sample standard deviation.
    t: the paired t statistic ``mean / (sd / sqrt(S))`` (inf when sd is 0 and mean is not).
    critical: ``t(0.975, S - 1)``.
    distinguishable: ``|t| > critical`` (two-sided, 95 %); False with fewer than two seeds.
  """
  a: str
  b: str
  point: str
  column: str
  per_seed: np.ndarray
  mean: float
  sd: float
  t: float
  critical: float
  distinguishable: bool


def _values(results: Sequence[Mapping], point: str) -> np.ndarray:
  out = np.full((len(results), len(report.COLUMNS)), np.nan)
  for s, res in enumerate(results):
    if point in res:
      out[s] = [np.nan if v is None else float(v) for v in report.paper_row(res[point])]
  return out


def spread_rows(runs: Mapping[str, Sequence[Mapping]],
                points: Sequence[str] = tuple(p for p, _ in report.OPERATING_POINTS)
                ) -> list:
  """:class:`Spread` of every row of ``runs`` (``{row: [results.json per seed]}``, seeds in the
  same order for every row) at each operating point."""
  out = []
  for name, results in runs.items():
    for point in points:
      v = _values(results, point)
      sd = np.std(v, axis=0, ddof=1) if len(v) > 1 else np.full(v.shape[1], np.nan)
      out.append(Spread(name, point, v, np.mean(v, axis=0), sd))
  return out


def paired_differences(runs: Mapping[str, Sequence[Mapping]], a: str, b: str,
                       point: str) -> list:
  """:class:`Difference` ``b - a`` of every column at ``point``, paired by seed.

  Raises:
    ValueError: if the two rows do not have the same number of seeds.
  """
  va, vb = _values(runs[a], point), _values(runs[b], point)
  if va.shape != vb.shape:
    raise ValueError(f"rows {a!r} and {b!r} have {len(va)} and {len(vb)} seeds; pair them by "
                     "seed")
  n = len(va)
  critical = float(stats.t.ppf(0.975, n - 1)) if n > 1 else math.inf
  out = []
  for j, column in enumerate(report.COLUMNS):
    d = vb[:, j] - va[:, j]
    mean = float(np.mean(d))
    sd = float(np.std(d, ddof=1)) if n > 1 else math.nan
    if n < 2 or not np.isfinite(mean):
      t = math.nan
    elif sd == 0.0:
      t = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
    else:
      t = mean / (sd / math.sqrt(n))
    out.append(Difference(a, b, point, column, d, mean, sd, t, critical,
                          bool(np.isfinite(critical) and abs(t) > critical)))
  return out


def _num(x: float) -> str:
  text = f"{x:.3f}"
  return text[1:] if text == "-0.000" else text


def _pm(mean: float, sd: float) -> str:
  if not np.isfinite(mean):
    return "-"
  return _num(mean) if not np.isfinite(sd) else f"{_num(mean)} ± {_num(sd)}"


def markdown(runs: Mapping[str, Sequence[Mapping]],
             columns: Sequence[str] = ("F1", "F1(0.5)", "F1(1.0)", "REC", "PRE")) -> str:
  """The spread table (mean ± sample sd over seeds) of every row and operating point, then the
  paired differences of each row from the one before it and of the last row from the first
  (``*`` where the seeds tell them apart at 95 %)."""
  labels = dict(report.OPERATING_POINTS)
  idx = [report.COLUMNS.index(c) for c in columns]
  n = max(len(r) for r in runs.values())
  lines = ["| row | operating point | " + " | ".join(columns) + " |",
           "|" + "---|" * (len(columns) + 2)]
  for s in spread_rows(runs):
    cells = " | ".join(_pm(s.mean[j], s.sd[j]) for j in idx)
    lines.append(f"| {s.name} | {labels.get(s.point, s.point)} | {cells} |")
  names = list(runs)
  if n < 2:
    lines += ["", "One seed: no spread and no paired differences (run the sweep with more "
              "seeds)."]
  if len(names) > 1 and n > 1:
    crit = float(stats.t.ppf(0.975, n - 1))
    lines += ["", "Paired differences (each row minus the row above it, then the last row "
              f"minus the first; mean ± sd over the {n} seeds; `*`: |t| > t(0.975, {n - 1}) = "
              f"{crit:.2f}, i.e. told apart at 95 %):", "",
              "| rows | operating point | " + " | ".join(columns) + " |",
              "|" + "---|" * (len(columns) + 2)]
    pairs = list(zip(names, names[1:]))
    if len(names) > 2:
      pairs.append((names[0], names[-1]))  # the whole method against the baseline
    for a, b in pairs:
      for point, label in report.OPERATING_POINTS:
        diffs = {d.column: d for d in paired_differences(runs, a, b, point)}
        cells = " | ".join(
            f"{_pm(diffs[c].mean, diffs[c].sd)}{' *' if diffs[c].distinguishable else ''}"
            for c in columns)
        lines.append(f"| {b} - {a} | {label} | {cells} |")
  quality = label_quality_markdown(runs)
  if quality:
    lines += ["", "Pseudo labels (the miner's labels of the last logged window against the "
              "ground truth, pooled over folds; mean ± sd over seeds):", "", quality]
  return "\n".join(lines)


_QUALITY_CLASSES = ("me", "mae", "bg")


def label_quality_markdown(runs: Mapping[str, Sequence[Mapping]]) -> str:
  """Mean ± sample sd over seeds of each row's pseudo-label precision and recall per class
  (``results.json``'s ``pseudo_labels``, ``report.pseudo_label_quality``); '' when no run has
  them (runs made before they were logged)."""
  if not any(res.get("pseudo_labels") for results in runs.values() for res in results):
    return ""
  head = "| row | " + " | ".join(f"{c} precision | {c} recall" for c in _QUALITY_CLASSES) + " |"
  lines = [head, "|" + "---|" * (2 * len(_QUALITY_CLASSES) + 1)]
  for name, results in runs.items():
    cells = []
    for c in _QUALITY_CLASSES:
      for key in ("precision", "recall"):
        v = np.array([float(((res.get("pseudo_labels") or {}).get(c) or {}).get(key, np.nan))
                      for res in results])
        sd = float(np.std(v, ddof=1)) if len(v) > 1 else math.nan
        cells.append(_pm(float(np.mean(v)), sd))
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def load_runs(sweep: str, entries: Sequence, workdirs: Sequence[str], *,
              entry_dir: Callable[[str, str], str]) -> dict:
  """``{row: [results.json of each workdir]}`` of every row of a sweep.

  Args:
    sweep: the sweep's name (for messages).
    entries: its ``(row name, overrides)`` entries, in order (``configs.sweeps.get_sweep``).
    workdirs: the sweep's workdirs, one per seed.
    entry_dir: ``(workdir, row name) -> the row's run directory`` (``configs.sweeps.entry_dir``).

  Raises:
    FileNotFoundError: naming the first ``results.json`` missing (a row not run for a seed).
    ValueError: on an unreadable results file (naming it), no workdir, a
      workdir given twice, or two workdirs whose row was run with the same seeds.
  """
  workdirs = [w for w in workdirs if w.strip()]
  if not workdirs:
    raise ValueError("--workdirs is empty; give the sweep's workdirs, one per seed")
  real = [os.path.realpath(w) for w in workdirs]
  twice = sorted({w for w in real if real.count(w) > 1})
  if twice:
    raise ValueError(f"--workdirs names {twice[0]} more than once; each workdir is one seed")
  runs = {}
  for name, _ in entries:
    paths = [os.path.join(entry_dir(w, name), "results.json") for w in workdirs]
    for p in paths:
      if not os.path.isfile(p):
        raise FileNotFoundError(f"{p}: no results for row {name!r} of sweep {sweep!r}; run "
                                f"that seed's sweep to the end (launch.sweep --only={name})")
    runs[name] = [fileio.read_json(p) for p in paths]
    seeds = {}
    for w in workdirs:
      cfg = os.path.join(entry_dir(w, name), "config.json")
      if os.path.isfile(cfg):
        c = fileio.read_json(cfg)
        key = (c.get("seed"), (c.get("data") or {}).get("point_seed"))
        if key in seeds:
          raise ValueError(f"{cfg}: row {name!r} has seed {key[0]} and point_seed {key[1]}, as "
                           f"in {seeds[key]}: the same seed twice is no spread (run each "
                           "workdir with its own --config.seed and --config.data.point_seed)")
        seeds[key] = cfg
  return runs
