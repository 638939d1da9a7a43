"""CAS(ME)^3 part A: the CAS(ME)^2 hyperparameters (Section 4.3) on ~100 subjects.

  python -m launch.main --config=configs/casme3.py --workdir=/tmp/casme3 \
      --config.data.dataset_dir=/data/casme3 --config.loso.parallel_folds=8
"""

from configs import common


def get_config(arg=None):
  c = common.base_config()
  c.data.synthetic_preset = "casme3"
  c.data.max_buckets = 8  # 8.3 % padded snippets at batch 8 (10.7 % at 6)
  if arg == "tiny":
    common.shrink_for_tiny(c)
  elif arg:
    raise ValueError(f"unknown variant {arg!r}; use 'tiny' or nothing")
  return c
