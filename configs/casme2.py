"""CAS(ME)^2: the paper's model and hyperparameters (Sections 3.2, 4.3).

Real data (after `launch.import_dataset`):
  python -m launch.main --config=configs/casme2.py --workdir=/tmp/casme2 \
      --config.data.dataset_dir=/data/casme2
Synthetic stand-in with CAS(ME)^2's statistics (1024-d features, generated on first use):
  python -m launch.main --config=configs/casme2.py --workdir=/tmp/casme2_syn
Tiny smoke run:
  python -m launch.main --config=configs/casme2.py:tiny --workdir=/tmp/casme2_tiny
"""

from configs import common


def get_config(arg=None):
  c = common.base_config()
  c.data.synthetic_preset = "casme2"
  if arg == "tiny":
    common.shrink_for_tiny(c)
  elif arg:
    raise ValueError(f"unknown variant {arg!r}; use 'tiny' or nothing")
  return c
