"""Run an ablation sweep of `configs/sweeps.py` and print one paper-style table.

  python -m launch.sweep --config=configs/synthetic.py --sweep=table2 --workdir=/tmp/table2
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from configs import sweeps
from launch import quiet
from pwes_jax import runtime
from pwes_jax import sweep

from launch import common

_CONFIG = config_flags.DEFINE_config_file("config", "configs/synthetic.py", "Base config.",
                                          lock_config=True)
_SWEEP = flags.DEFINE_string("sweep", "table1", f"One of {sorted(sweeps.SWEEPS)}.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Parent directory of the runs.", required=True)
_FOLDS = flags.DEFINE_string("folds", None, "LOSO folds of every run (default: config's).")
_ONLY = flags.DEFINE_list("only", None, "Run only these entries (row names).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a WORKDIR/report.md that is not "
                               "this sweep's own table (another sweep's, or any other file).")


def main(argv):
  del argv
  runtime.set_up_process(compile_cache=True, allocator=True)
  with common.errors("launch.sweep"):
    try:
      table = sweep.run_sweep(_CONFIG.value, _SWEEP.value, sweeps.get_sweep(_SWEEP.value),
                              _WORKDIR.value, entry_dir=sweeps.entry_dir, folds=_FOLDS.value,
                              only=_ONLY.value, overwrite=_OVERWRITE.value)
    except sweep.EntryError as e:
      raise SystemExit(f"launch.sweep: {e.entry}: {common.one_line(e.error)}") from None
    print(table)


if __name__ == "__main__":
  app.run(main, flags_parser=common.flags_parser("launch.sweep"))
