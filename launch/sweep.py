"""Run an ablation sweep of `configs/sweeps.py` and print one paper-style table.

  python -m launch.sweep --config=configs/synthetic.py --sweep=table2 --workdir=/tmp/table2
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags

from configs import sweeps
from launch import quiet
from pwes_jax import compile_cache
from pwes_jax import host_memory
from pwes_jax import config_checks
from pwes_jax import fileio
from pwes_jax import output_paths
from pwes_jax import report
from pwes_jax import train
from pwes_jax import trainer

from launch import common

_CONFIG = config_flags.DEFINE_config_file("config", "configs/synthetic.py", "Base config.",
                                          lock_config=True)
_SWEEP = flags.DEFINE_string("sweep", "table1", f"One of {sorted(sweeps.SWEEPS)}.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Parent directory of the runs.", required=True)
_FOLDS = flags.DEFINE_string("folds", None, "LOSO folds of every run (default: config's).")
_ONLY = flags.DEFINE_list("only", None, "Run only these entries (row names).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a WORKDIR/report.md that is not "
                               "this sweep's own table (another sweep's, or any other file).")


def apply_overrides(config, overrides):
  """A copy of ``config`` with ``{"section.field": value}`` overrides applied."""
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


def main(argv):
  del argv
  quiet.quiet_logging()
  compile_cache.enable()
  host_memory.keep_freed_memory()
  with common.errors("launch.sweep"):
    _sweep()


def _sweep():
  entries = sweeps.get_sweep(_SWEEP.value)
  unknown = [n for n in _ONLY.value or () if n not in [name for name, _ in entries]]
  if unknown:
    raise ValueError(f"--only: no entry {', '.join(unknown)} in sweep {_SWEEP.value!r}; its "
                     f"entries: {', '.join(name for name, _ in entries)}")
  output_paths.check_dir_output("workdir", _WORKDIR.value)
  report_path = os.path.join(_WORKDIR.value, "report.md")
  if os.path.isdir(report_path):
    raise ValueError(f"{report_path} is a directory; the sweep writes its table there")
  if os.path.isfile(report_path) and not _OVERWRITE.value:
    # Only this sweep's own table is refreshed; another sweep's table or any other file stays.
    with open(report_path, encoding="utf-8", errors="replace") as f:
      first = f.readline().rstrip("\r\n")
    if first != f"# Sweep {_SWEEP.value}":
      what = (f"the report of another sweep ({first[len('# Sweep '):]!r})"
              if first.startswith("# Sweep ") else "not a sweep report")
      raise FileExistsError(f"{report_path} exists and is {what}; refusing to replace it with "
                            f"sweep {_SWEEP.value!r}'s table (use another --workdir, move it "
                            "away, or pass --overwrite)")
  todo = [(name, overrides) for name, overrides in entries
          if not _ONLY.value or name in _ONLY.value]
  for name, _ in todo:  # an entry's directory must be its run's, or hold no run's files
    entry = sweeps.entry_dir(_WORKDIR.value, name)
    output_paths.check_dir_output("workdir", entry, run_ok=True,
                                  label=f"sweep entry {name}'s directory {entry}")
  programs = {}  # entries whose model, loss and optimizer agree reuse one compiled step
  for name, overrides in todo:
    config = apply_overrides(_CONFIG.value, overrides)
    with config.unlocked():
      if _FOLDS.value is not None:
        config.loso.folds = _FOLDS.value
      if not config.data.cache_dir:  # every entry shares one generated dataset
        config.data.cache_dir = os.path.join(_WORKDIR.value, "data")
    workdir = sweeps.entry_dir(_WORKDIR.value, name)
    print(f"=== {name}: {overrides} -> {workdir}", flush=True)
    try:
      config_checks.check_run_config(config)
      key = config_checks.trace_key(config)
      if key not in programs:
        programs[key] = trainer.build_programs(config)
      train.train_and_evaluate(config, workdir, programs=programs[key])
    except (*common.USER_ERRORS, KeyError) as e:
      raise SystemExit(f"launch.sweep: {name}: {common.one_line(e)}") from None
  # The table covers every entry of the sweep that has results, including earlier --only runs.
  results, names = [], []
  for name, _ in entries:
    path = os.path.join(sweeps.entry_dir(_WORKDIR.value, name), "results.json")
    if os.path.isfile(path):
      results.append(fileio.read_json(path))
      names.append(name)
  table = report.markdown_table(results, names=names)
  with fileio.atomic_open(report_path) as f:
    f.write(f"# Sweep {_SWEEP.value}\n\n{table}\n")
  print(table)


if __name__ == "__main__":
  app.run(main, flags_parser=common.flags_parser("launch.sweep"))
