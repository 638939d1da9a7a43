"""Where the README's main job spends its time: phases of the run, and a profile of one step.

  python -m benchmarks.main_job --workdir=/tmp/pwes_bench            # the job + the profile
  python -m benchmarks.main_job --workdir=/tmp/pwes_bench --job=False  # the profile only
  python -m benchmarks.main_job --workdir=/tmp/pwes_bench --profile=False --folds=0-3

**The job** is ``train.train_and_evaluate`` of ``--config`` (default: the README's
``configs/synthetic.py``, every LOSO fold) in ``--workdir`` (wiped first unless
``--keep_workdir``): the same call ``launch.main`` makes, with the same progress lines, then a
table of the phases: dataset generation and loading (``data``), each fold's fresh state and
checkpoint restore (``setup``), training per fold, its outputs (``inference``), ``evaluation``
(proposals, MEGC metrics, results files) and ``report`` (the table), with the programs XLA
compiled or loaded from the persistent cache (count and seconds, counted inside the phases).
The compilation cache is ``launch.main``'s (``$PWES_COMPILE_CACHE`` or
``~/.cache/pwes_jax/xla``); ``--compile_cache=off`` measures a cold run, a fresh directory a
first run.

**The profile** splits one default train step (fold 0's sampler, bucket ``--bucket``, default
the bucket holding the dataset's mean length) by timing nested programs, each compiled alone
and run ``--steps`` times after a warm-up (median, every run ended by ``block_until_ready``):

* ``model``: forward and backward of the network with the loss terms but no mining and no DFCL
  (``mplg.variant=none``, ``dfcl.enabled=False``), no optimizer;
* ``optimizer``: the whole step of that config minus ``model`` (Adam update, norms);
* ``MPLG``: the step with the config's label miner minus the step without;
* ``DFCL``: the config's step (miner + DFCL region vectors, contrastive loss, bank write) minus
  the step with the miner alone;
* ``host``: building the step's batch on the host (``BatchSampler.sample``), which the loop does
  before dispatching the step (the CPU runs both);

plus XLA's FLOP count of the full step against a dense fp32 matmul timed in the same run (the
share shows whether the step is compute-bound). The load average and the CPU model are printed
with every figure. Nothing is asserted.
"""

from __future__ import annotations

import shutil
import time

from absl import app
from absl import flags
import jax
from ml_collections import config_flags
import numpy as np

from benchmarks import machine
from launch import quiet
from pwes_jax import runtime
from pwes_jax.training import checks
from pwes_jax.method import objective
from pwes_jax.training import progress as progress_lib
from pwes_jax.training import state as state_lib
from pwes_jax.training import steps
from pwes_jax.method import model as model_lib
from pwes_jax import train
from pwes_jax.training import context
from pwes_jax.training import loop
from pwes_jax.data import folds as folds_lib
from pwes_jax.data import source

_CONFIG = config_flags.DEFINE_config_file("config", "configs/synthetic.py", "The job's config.",
                                          lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (wiped first).", required=True)
_KEEP = flags.DEFINE_bool("keep_workdir", False, "Resume in --workdir instead of wiping it.")
_FOLDS = flags.DEFINE_string("folds", None, "LOSO folds of the job (default: the config's).")
_JOB = flags.DEFINE_bool("job", True, "Run and time the job.")
_PROFILE = flags.DEFINE_bool("profile", True, "Profile one default step.")
_BUCKET = flags.DEFINE_integer("bucket", None, "Bucket of the profiled step (default: the one "
                               "holding the dataset's mean length).")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed runs of each profiled program.")
_COMPILE_CACHE = flags.DEFINE_string("compile_cache", None,
                                     "Compilation cache dir, or 'off' (default: launch.main's).")


def run_job(config, workdir: str) -> None:
  """Runs the job and prints its phase table."""
  if not _KEEP.value:
    shutil.rmtree(workdir, ignore_errors=True)
  print(f"job start: {machine.load()}", flush=True)
  progress = progress_lib.RunProgress()
  t0 = time.perf_counter()
  train.train_and_evaluate(config, workdir, progress=progress)
  wall = time.perf_counter() - t0
  print(f"\njob end: {machine.load()}; wall {wall:.1f} s", flush=True)
  print("\n| phase | seconds | share |\n|---|---:|---:|")
  for name in progress_lib.PHASES:
    s = progress.seconds.get(name, 0.0)
    print(f"| {name} | {s:.1f} | {100 * s / wall:.1f} % |")
  other = wall - sum(progress.seconds.values())
  print(f"| other | {other:.1f} | {100 * other / wall:.1f} % |\n| **total** | {wall:.1f} | |")
  per_fold = [s for _, s in progress.fold_seconds]
  if per_fold:
    width = loop.concurrent_folds(config)
    median = float(np.median(per_fold[1:] or per_fold))
    shared = (f" each, {width} folds at a time (so ~{median / width:.1f} s of wall time per "
              "fold)" if width > 1 and len(per_fold) > 2 else "")
    print(f"per fold (training + outputs): first {per_fold[0]:.1f} s (alone; pays the "
          f"compiles), then median {median:.1f} s{shared}, max {max(per_fold):.1f} s")
  c = runtime.counts()
  print(f"compiles over the process: {runtime.describe(c)}")


def _time(fn, *args, steps: int) -> float:
  out = fn(*args)
  jax.block_until_ready(out)
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def profile_step(config, workdir: str) -> None:
  """Prints the split of one default train step (see the module docstring)."""
  dataset = source.prepare_dataset(config, workdir)
  all_folds = folds_lib.loso_folds(dataset)
  ctx = context.make_context(config, workdir, dataset, all_folds)
  fold = all_folds[0]
  lengths = [v.length for v in ctx.videos.values()]
  bucket = _BUCKET.value or min(b for b in ctx.buckets if b >= np.mean(lengths))
  if bucket not in ctx.buckets:
    raise app.UsageError(f"--bucket={bucket}: the run's buckets are {ctx.buckets}")
  bucket_index = ctx.buckets.index(bucket)
  sampler = context.fold_sampler(ctx, fold)
  step_index = config.mplg.pretrain_steps  # mining and DFCL switched on
  t0 = time.perf_counter()
  reps = 50
  for i in range(reps):
    batch = sampler.sample(step_index + i, bucket=bucket_index)
  host_s = (time.perf_counter() - t0) / reps
  batch = jax.device_put(sampler.sample(step_index, bucket=bucket_index))

  def variant(miner: str, dfcl: bool):
    c = config.copy_and_resolve_references()
    c.mplg.variant = miner
    c.dfcl.enabled = dfcl
    checks.check_run_config(c)
    model = model_lib.build_model(c.model)
    tx = state_lib.make_optimizer(c)
    state = state_lib.init_state(model, tx, c, state_lib.fold_key(c, 0),
                                 dataset.info.feature_dim, ctx.bank_videos)
    state = state.replace(step=jax.numpy.int32(step_index))
    return c, model, tx, state

  n = _STEPS.value
  base_c, model, tx, base_state = variant("none", False)

  @jax.jit
  def fwd_bwd(params, batch, rng):
    return jax.grad(lambda p: objective.loss_fn(p, batch, rng, None, jax.numpy.int32(step_index),
                                                model=model, config=base_c)[0])(params)

  rng = jax.random.PRNGKey(0)
  model_s = _time(fwd_bwd, base_state.params, batch, rng, steps=n)
  # The full steps are timed without donation so that one state serves every run.
  def step_time(c, model, tx, state):
    fn = jax.jit(lambda s, b: steps.train_step(s, b, model=model, tx=tx, config=c))
    compiled = fn.lower(state, batch).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return _time(compiled, state, batch, steps=n), float(cost.get("flops", np.nan))

  base_s, _ = step_time(base_c, model, tx, base_state)
  miner_s, _ = step_time(*variant(config.mplg.variant, False))
  full_s, full_flops = step_time(*variant(config.mplg.variant, config.dfcl.enabled))
  peak = machine.matmul_flops_per_s(1024, 3)
  total = full_s + host_s
  parts = [("model (forward + backward)", model_s), ("optimizer", base_s - model_s),
           (f"MPLG ({config.mplg.variant})", miner_s - base_s), ("DFCL", full_s - miner_s),
           ("host (batch)", host_s)]
  print(f"\nprofile of one default step: bucket {bucket} (buckets {ctx.buckets}), batch "
        f"{config.optim.batch_size}, D={config.model.embed_dim}, F={dataset.info.feature_dim}; "
        f"{_STEPS.value} runs each, median; {machine.load()}; {machine.cpu_model()}")
  print("\n| part | ms | share |\n|---|---:|---:|")
  for name, s in parts:
    print(f"| {name} | {1e3 * s:.1f} | {100 * s / total:.1f} % |")
  print(f"| **step + host** | {1e3 * total:.1f} | |")
  print(f"\nXLA FLOPs of the step: {full_flops / 1e9:.2f} GFLOP -> {full_flops / full_s / 1e9:.1f} "
        f"GFLOP/s = {100 * full_flops / full_s / peak:.1f} % of the fp32 matmul rate "
        f"({peak / 1e9:.1f} GFLOP/s, 1024^3, same run)")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  runtime.set_up_process()
  cache = runtime.enable(_COMPILE_CACHE.value)
  runtime.keep_freed_memory()
  print(f"machine: {machine.cpu_model()}, {jax.device_count()} "
        f"{jax.default_backend()} device(s), jax {jax.__version__}; compilation cache: "
        f"{cache or 'off'}", flush=True)
  config = _CONFIG.value
  if _FOLDS.value is not None:
    config.loso.folds = _FOLDS.value
  if _JOB.value:
    run_job(config, _WORKDIR.value)
  if _PROFILE.value:
    profile_step(config, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
