"""An ablation sweep: one LOSO run per entry of a base config with overrides, then one table.

:func:`run_sweep` trains and evaluates each entry of a sweep (``configs/sweeps.py`` lists the
paper's tables as ``(row name, {config path: value})``) in its own run directory under one
parent, reusing the compiled programs between entries whose configs share
``context.trace_key``, and writes the paper-style table of every entry with results to
``PARENT/report.md``. That file is refreshed only when it is this sweep's own table (its first
line ``# Sweep <name>``); another sweep's table, or any other file, is replaced only with
``overwrite``.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, Mapping, Optional, Sequence

from pwes_jax import report
from pwes_jax import train
from pwes_jax.training import checks
from pwes_jax.training import context
from pwes_jax.workdir import fileio
from pwes_jax.workdir import output_guard

# What an entry's check, build or run raises for its user (bad config or data, an OS failure, a
# diverged loss), re-raised as :class:`EntryError` naming the entry; anything else is a bug and
# propagates as it is.
ENTRY_ERRORS = (OSError, ValueError, KeyError, train.NonFiniteLossError)


class EntryError(Exception):
  """An entry of the sweep failed with one of :data:`ENTRY_ERRORS` (also its ``__cause__``).

  Attributes:
    entry: the entry's row name.
    error: the exception it raised.
  """

  def __init__(self, entry: str, error: BaseException):
    super().__init__(f"{entry}: {error}")
    self.entry = entry
    self.error = error


def apply_overrides(config, overrides: Mapping):
  """A copy of ``config`` with ``{"section.field": value}`` overrides applied.

  Args:
    config: the base ``ConfigDict`` (left unchanged).
    overrides: ``{dotted config path: value}``.

  Returns:
    The overridden copy (references resolved).

  Raises:
    KeyError: naming an override whose field does not exist.
  """
  config = config.copy_and_resolve_references()
  with config.unlocked():
    for path, value in overrides.items():
      node = config
      *parents, leaf = path.split(".")
      for p in parents:
        node = node[p]
      if leaf not in node:
        raise KeyError(f"override {path!r}: no such config field")
      node[leaf] = value
  return config


def _check_report_path(report_path: str, sweep: str, overwrite: bool) -> None:
  """Refuses a ``report.md`` that is a directory, or a file other than this sweep's own table
  (unless ``overwrite``)."""
  if os.path.isdir(report_path):
    raise ValueError(f"{report_path} is a directory; the sweep writes its table there")
  if os.path.isfile(report_path) and not overwrite:
    # Only this sweep's own table is refreshed; another sweep's table or any other file stays.
    with open(report_path, encoding="utf-8", errors="replace") as f:
      first = f.readline().rstrip("\r\n")
    if first != f"# Sweep {sweep}":
      what = (f"the report of another sweep ({first[len('# Sweep '):]!r})"
              if first.startswith("# Sweep ") else "not a sweep report")
      raise FileExistsError(f"{report_path} exists and is {what}; refusing to replace it with "
                            f"sweep {sweep!r}'s table (use another --workdir, move it "
                            "away, or pass --overwrite)")


def _write_table(workdir: str, sweep: str, names: Iterable[str],
                 entry_dir: Callable[[str, str], str], report_path: str) -> str:
  """Writes and returns the table of every entry of ``names`` that has a ``results.json``."""
  results, shown = [], []
  for name in names:
    path = os.path.join(entry_dir(workdir, name), "results.json")
    if os.path.isfile(path):
      results.append(fileio.read_json(path))
      shown.append(name)
  table = report.markdown_table(results, names=shown)
  if any(res.get("pseudo_labels") for res in results):  # the miners' label quality
    table += "\n\n" + report.pseudo_label_table(results, shown)
  with fileio.atomic_open(report_path) as f:
    f.write(f"# Sweep {sweep}\n\n{table}\n")
  return table


def run_sweep(base_config, sweep: str, entries: Sequence[tuple], workdir: str, *,
              entry_dir: Callable[[str, str], str], folds: Optional[str] = None,
              only: Optional[Sequence[str]] = None, overwrite: bool = False) -> str:
  """Trains and evaluates every entry of a sweep, then writes its table to ``report.md``.

  Each entry runs ``train.train_and_evaluate`` on ``base_config`` with the entry's overrides in
  ``entry_dir(workdir, name)`` (a rerun resumes its unfinished folds); entries without a
  ``data.cache_dir`` share one generated dataset in ``workdir/data``. Entries whose configs
  share ``context.trace_key`` reuse one ``context.Programs``. Prints one line per entry
  (``=== name: overrides -> directory``) before its run. Every path is checked before any
  work: ``workdir``, ``workdir/report.md`` and the directory of every entry to run.

  Args:
    base_config: the base ``ConfigDict`` (left unchanged).
    sweep: the sweep's name (``report.md``'s heading ``# Sweep <name>``).
    entries: the sweep's ``(row name, {config path: value})`` in table order
      (``configs/sweeps.get_sweep``).
    workdir: the parent directory of the entries' runs.
    entry_dir: ``(workdir, row name) -> the entry's run directory``
      (``configs/sweeps.entry_dir``).
    folds: LOSO folds of every entry (``config.loso.folds``); None keeps the config's.
    only: run only these row names (None or empty: all). The table still covers every entry
      with results, including those of earlier runs.
    overwrite: replace a ``report.md`` that is not this sweep's own table.

  Returns:
    The markdown table (``report.markdown_table``) written under the heading to
    ``workdir/report.md``.

  Raises:
    ValueError: ``only`` names no entry of the sweep (listing its entries), ``report.md`` is a
      directory, or an output path is refused (``output_guard.OutputPathError``).
    FileExistsError: ``report.md`` is another sweep's table or not a sweep report, without
      ``overwrite``.
    KeyError: an override names no config field.
    EntryError: an entry's config check, build or run failed with one of
      :data:`ENTRY_ERRORS` (naming the entry).
    OSError: reading a result or writing the table failed.
  """
  unknown = [n for n in only or () if n not in [name for name, _ in entries]]
  if unknown:
    raise ValueError(f"--only: no entry {', '.join(unknown)} in sweep {sweep!r}; its "
                     f"entries: {', '.join(name for name, _ in entries)}")
  output_guard.check_dir_output("workdir", workdir)
  report_path = os.path.join(workdir, "report.md")
  _check_report_path(report_path, sweep, overwrite)
  todo = [(name, overrides) for name, overrides in entries if not only or name in only]
  for name, _ in todo:  # an entry's directory must be its run's, or hold no run's files
    entry = entry_dir(workdir, name)
    output_guard.check_dir_output("workdir", entry, run_ok=True,
                                  label=f"sweep entry {name}'s directory {entry}")
  programs = {}  # entries whose model, loss and optimizer agree reuse one compiled step
  for name, overrides in todo:
    config = apply_overrides(base_config, overrides)
    with config.unlocked():
      if folds is not None:
        config.loso.folds = folds
      if not config.data.cache_dir:  # every entry shares one generated dataset
        config.data.cache_dir = os.path.join(workdir, "data")
    run_dir = entry_dir(workdir, name)
    print(f"=== {name}: {overrides} -> {run_dir}", flush=True)
    try:
      checks.check_run_config(config)
      key = context.trace_key(config)
      if key not in programs:
        programs[key] = context.build_programs(config)
      train.train_and_evaluate(config, run_dir, programs=programs[key])
    except ENTRY_ERRORS as e:
      raise EntryError(name, e) from e
  # The table covers every entry of the sweep that has results, including earlier --only runs.
  return _write_table(workdir, sweep, [name for name, _ in entries], entry_dir, report_path)
