"""The default: PWES on the synthetic CAS(ME)^2-statistics benchmark, sized for a laptop CPU.

The dataset (98 videos, 22 subjects, 57 ME + 300 MaE, 30 fps, 8-frame snippets) is generated on
first use with 128-d features instead of I3D's 1024, and the model is narrower than the paper's,
so the whole 22-fold LOSO run trains and evaluates in minutes on a CPU:
  python -m launch.main --config=configs/synthetic.py --workdir=/tmp/pwes
Tiny variant (seconds; used by the tests):
  python -m launch.main --config=configs/synthetic.py:tiny --workdir=/tmp/pwes_tiny
Mechanism variant: the same statistics and intervals with the failure modes the paper names
(context events, multi-phase expressions, many patterns per class; docs/synthetic.md):
  python -m launch.main --config=configs/synthetic.py:mechanism --workdir=/tmp/pwes_mechanism
"""

from configs import common


def get_config(arg=None):
  c = common.base_config()
  c.data.synthetic_preset = "casme2"
  c.data.synthetic_feature_dim = 128
  c.model.embed_dim = 128
  c.model.attention_hidden = 64
  c.optim.steps = 300
  c.optim.learning_rate = 1e-3
  c.mplg.pretrain_steps = 80
  c.checkpoint.every_steps = 100
  # Two folds at a time, each in its own thread: a model this narrow leaves part of two CPU
  # cores idle in every step; each fold computes exactly what it computes alone (same bits).
  c.loso.concurrent_folds = 2
  if arg == "tiny":
    common.shrink_for_tiny(c)
  elif arg == "mechanism":
    c.data.synthetic_preset = "mechanism"
  elif arg:
    raise ValueError(f"unknown variant {arg!r}; use 'tiny', 'mechanism' or nothing")
  return c
