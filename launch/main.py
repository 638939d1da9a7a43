r"""Train and evaluate PWES over leave-one-subject-out folds.

  python -m launch.main --config=configs/synthetic.py --workdir=/tmp/pwes
  python -m launch.main --config=configs/casme2.py --workdir=/tmp/c2 \
      --config.data.dataset_dir=/data/casme2 --config.mplg.variant=caf1 --folds=0-3

Multi-host (one command per process; each trains the folds on its own devices):
  python -m launch.main ... --config.loso.parallel_folds=22 \
      --coordinator_address=10.0.0.1:1234 --num_processes=2 --process_id=0
"""

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from launch import quiet
from pwes_jax import runtime
from pwes_jax.workdir import output_guard
from pwes_jax import train

from launch import common

_CONFIG = config_flags.DEFINE_config_file("config", "configs/synthetic.py",
                                          "Experiment config file (path[:variant]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (checkpoints, outputs, "
                               "metrics); rerunning with it resumes.", required=True)
_FOLDS = flags.DEFINE_string("folds", None, "LOSO folds to run, e.g. '0,3,5-7' (overrides "
                             "config.loso.folds).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0, for multi-host runs.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-host run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_MULTIHOST = flags.DEFINE_bool("multihost", False,
                                "Call jax.distributed.initialize() with no arguments (TPU pods, "
                                "SLURM/Open MPI clusters that JAX detects itself).")
_HEARTBEAT = flags.DEFINE_integer("heartbeat_timeout_s", 100, "Multi-host: seconds without a "
                                  "heartbeat before a process is declared dead.", lower_bound=1)
_SHUTDOWN = flags.DEFINE_integer("shutdown_timeout_s", 60, "Multi-host: seconds the processes "
                                 "wait for each other at exit.", lower_bound=1)
_CPU_COLLECTIVES = flags.DEFINE_string("cpu_collectives", None,
                                       "CPU collectives for multi-process CPU runs ('gloo').")


def main(argv):
  del argv
  runtime.set_up_process(compile_cache=True, allocator=True)
  if _CPU_COLLECTIVES.value:
    jax.config.update("jax_cpu_collectives_implementation", _CPU_COLLECTIVES.value)
  if _COORDINATOR.value:
    if _NUM_PROCESSES.value is None or _PROCESS_ID.value is None:
      raise app.UsageError("--coordinator_address needs --num_processes and --process_id")
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value,
                               heartbeat_timeout_seconds=_HEARTBEAT.value,
                               shutdown_timeout_seconds=_SHUTDOWN.value)
  elif _NUM_PROCESSES.value is not None or _PROCESS_ID.value is not None:
    raise app.UsageError("--num_processes/--process_id need --coordinator_address "
                         "(or use --multihost)")
  elif _MULTIHOST.value:
    jax.distributed.initialize(heartbeat_timeout_seconds=_HEARTBEAT.value,
                               shutdown_timeout_seconds=_SHUTDOWN.value)
  common.exit_on_sigterm("launch.main")
  config = _CONFIG.value
  if _FOLDS.value is not None:
    with config.unlocked():
      config.loso.folds = _FOLDS.value
  with common.leave_alone(), common.errors("launch.main"):
    output_guard.check_dir_output("workdir", _WORKDIR.value,
                                  {"config.data.dataset_dir": config.data.dataset_dir},
                                  run_ok=True)
    train.train_and_evaluate(config, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main, flags_parser=common.flags_parser("launch.main"))
