"""Train and evaluate PWES over leave-one-subject-out folds.

  python -m launch.main --config=configs/synthetic.py --workdir=/tmp/pwes
  python -m launch.main --config=configs/casme2.py --workdir=/tmp/c2 \
      --config.data.dataset_dir=/data/casme2 --config.mplg.variant=caf1 --folds=0-3
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from pwes_jax import train

_CONFIG = config_flags.DEFINE_config_file("config", "configs/synthetic.py",
                                          "Experiment config file (path[:variant]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (checkpoints, outputs, "
                               "metrics); rerunning with it resumes.", required=True)
_FOLDS = flags.DEFINE_string("folds", None, "LOSO folds to run, e.g. '0,3,5-7' (overrides "
                             "config.loso.folds).")


def main(argv):
  del argv
  config = _CONFIG.value
  if _FOLDS.value is not None:
    with config.unlocked():
      config.loso.folds = _FOLDS.value
  train.train_and_evaluate(config, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
