"""Writes a synthetic expression-spotting dataset with a real benchmark's statistics.

  python -m launch.make_synthetic --preset=casme2 --output_dir=/tmp/syn_casme2
  python -m launch.make_synthetic --preset=samm_lv --output_dir=/tmp/syn_samm --seed=1 \\
      --feature_dim=128
  python -m launch.make_synthetic --preset=tiny --output_dir=/tmp/syn_tiny --overwrite

Presets: tiny, casme2, samm_lv, casme3, mechanism (pwes_jax/data/synthetic.py; model in
docs/synthetic.md).
"""

import json
import sys

from absl import app
from absl import flags

from launch import quiet
from pwes_jax import runtime
from pwes_jax.workdir import output_guard
from pwes_jax.data import synthetic

from launch import common

_PRESET = flags.DEFINE_enum("preset", "casme2", sorted(synthetic.PRESETS), "Dataset statistics.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Dataset directory to write.",
                                  required=True)
_SEED = flags.DEFINE_integer("seed", 0, "Random seed; the same seed gives the same dataset.",
                             lower_bound=0)
_FEATURE_DIM = flags.DEFINE_integer(
    "feature_dim", None, "Feature width F (default: the preset's, 1024 for real presets).",
    lower_bound=synthetic.MIN_FEATURE_DIM)
_OVERWRITE = flags.DEFINE_bool("overwrite", False,
                               "Replace a dataset already in --output_dir.")


def main(argv):
  runtime.set_up_process()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    output_guard.check_dir_output("output_dir", _OUTPUT_DIR.value)
    summary = synthetic.generate(_PRESET.value, _OUTPUT_DIR.value, seed=_SEED.value,
                                 feature_dim=_FEATURE_DIM.value, overwrite=_OVERWRITE.value)
  except common.USER_ERRORS as e:
    raise SystemExit(f"make_synthetic: error: {common.one_line(e)}") from None
  print(f"done in {summary['seconds']:.1f} s", file=sys.stderr)
  print(json.dumps(summary, indent=2))


if __name__ == "__main__":
  app.run(main, flags_parser=common.flags_parser("make_synthetic"))
