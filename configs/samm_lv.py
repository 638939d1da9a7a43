"""SAMM-LV: 200 fps, 32-frame snippets; 50 pretraining steps, lr 8e-4, 8 background regions.

  python -m launch.main --config=configs/samm_lv.py --workdir=/tmp/samm \
      --config.data.dataset_dir=/data/samm_lv
"""

from configs import common


def get_config(arg=None):
  c = common.base_config()
  c.data.synthetic_preset = "samm_lv"
  c.optim.learning_rate = 8e-4
  c.mplg.pretrain_steps = 50
  c.dfcl.regions = (2, 3, 8)
  c.data.max_buckets = 8  # long-tailed lengths: 12.5 % padding at 8 buckets, 16.4 % at 6
  if arg == "tiny":
    common.shrink_for_tiny(c)
  elif arg:
    raise ValueError(f"unknown variant {arg!r}; use 'tiny' or nothing")
  return c
