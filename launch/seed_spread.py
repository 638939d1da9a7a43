r"""Mean and spread over seeds of a sweep run once per seed, and which rows the seeds tell apart.

Usage::

  for s in 0 1 2; do python -m launch.sweep --config=configs/synthetic.py --sweep=table1 \
      --workdir=/tmp/t1_seed$s --config.seed=$s --config.data.point_seed=$s; done
  python -m launch.seed_spread --sweep=table1 \
      --workdirs=/tmp/t1_seed0,/tmp/t1_seed1,/tmp/t1_seed2 [--output=spread.md] [--overwrite]

Reads ``<workdir>/<row>/results.json`` of every row of the sweep (``configs/sweeps.py``) in
every workdir (one workdir per seed) and prints ``seed_spread.markdown``: mean ± sample sd of
F1, F1(0.5), F1(1.0), REC, PRE (protocol ``paper``) per row and operating point, then the
differences between neighbouring rows, and between the last row and the first, paired by seed
with a 95 % paired t-test. The workdirs must be distinct and their rows run with distinct seeds
(``config.json``'s ``seed``, ``data.point_seed``).
"""

import os
import sys

from absl import app
from absl import flags

from configs import sweeps
from launch import common
from launch import quiet
from pwes_jax import runtime
from pwes_jax.workdir import fileio
from pwes_jax.workdir import output_guard
from pwes_jax import seed_spread

_SWEEP = flags.DEFINE_string("sweep", "table1", f"One of {sorted(sweeps.SWEEPS)}.")
_WORKDIRS = flags.DEFINE_list("workdirs", None, "The sweep's workdirs, one per seed.",
                              required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Also write the markdown table to this file.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --output.")


def main(argv):
  runtime.set_up_process()
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  with common.errors("launch.seed_spread"):
    out = output_guard.check_file_outputs(
        {"output": _OUTPUT.value}, [("workdirs", w) for w in _WORKDIRS.value],
        overwrite=_OVERWRITE.value).get("output")
    text = seed_spread.markdown(seed_spread.load_runs(
        _SWEEP.value, sweeps.get_sweep(_SWEEP.value), _WORKDIRS.value,
        entry_dir=sweeps.entry_dir)) + "\n"
  print(text, end="")
  if out:
    with common.errors("launch.seed_spread"):
      os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
      with fileio.atomic_open(out) as f:
        f.write(text)
    print(f"table written to {out}", file=sys.stderr)


if __name__ == "__main__":
  app.run(main, flags_parser=common.flags_parser("launch.seed_spread"))
