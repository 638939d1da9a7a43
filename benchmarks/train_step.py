"""Speed of one training step per length bucket, against a dense matmul's FLOP/s.

  python -m benchmarks.train_step [--config=configs/casme2.py] [--batch_size=8] [--steps=2]
      [--warmup=1] [--buckets=auto|168,248,...] [--variant=both|baseline|full]

For the config's model (``configs/casme2.py``: the paper's sizes, 1024-d I3D features, D = 2048,
attention hidden 512) it builds the run's length buckets exactly as training does
(``batching.make_buckets``) from the snippet counts ``(num_frames - 1) // L`` of the synthetic
preset's videos (``synthetic.plan``: no feature files are generated), pads batches of random
features with ``batching.pad_batch`` (videos of the bucket's own lengths, points from the plan's
annotations), and times the sequential jitted step (``steps.make_train_step``, state donated)
on each bucket:

* compile seconds (``lower`` + ``compile``; the compiled executable is then run directly);
* steps/s and ms/step (median of ``--steps`` timed steps after ``--warmup`` untimed ones, every
  step ended by ``block_until_ready``);
* XLA-counted FLOPs per step (``compiled.cost_analysis()['flops']``), the achieved FLOP/s and
  its share of the practical peak: a jitted dense fp32 ``N x N @ N x N`` matmul (best of
  ``--matmul_repeats``) timed in the same run right before each bucket, so that the peak follows
  the load of a shared machine (also printed at the start and the end);
* the compiled memory stats (``compiled.memory_analysis()``: arguments, temporaries, peak);
* per variant the bucket-weighted mean step time (weights: share of the dataset's videos in each
  bucket, which is how training draws buckets) and the expected share of padded snippets
  (``batching.padding_share``), beside the padded share of each benchmark batch.

Variants: ``baseline`` (``mplg.variant = none``, DFCL off) and ``full`` (the config as given:
PWES with MPLG and DFCL), run back to back on each bucket so both see the same load. Both
compute every term from step 0 (the pretraining switch is a ``jnp.where``), so the difference is
the MPLG / DFCL overhead. The load average
(``os.getloadavg``) is printed at the start and end: on a shared machine the figures move with
it. Nothing is asserted.
"""

from __future__ import annotations

import time

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags
import numpy as np

from benchmarks import machine
from benchmarks import step_inputs
from pwes_jax import runtime
from pwes_jax.data import batching

_CONFIG = config_flags.DEFINE_config_file("config", "configs/casme2.py",
                                          "Experiment config (model sizes, losses, preset).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Videos per batch.")
_STEPS = flags.DEFINE_integer("steps", 2, "Timed steps per bucket and variant.")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed steps per bucket after compiling.")
_BUCKETS = flags.DEFINE_string("buckets", "auto",
                               "'auto' (make_buckets of the preset's lengths) or a comma list.")
_VARIANT = flags.DEFINE_enum("variant", "both", ["both", "baseline", "full"],
                             "baseline = MPLG none + DFCL off; full = the config as given.")
_MATMUL_SIZE = flags.DEFINE_integer("matmul_size", 2048, "N of the peak N x N @ N x N matmul.")
_MATMUL_REPEATS = flags.DEFINE_integer("matmul_repeats", 3,
                                       "Timed matmuls per peak measurement (best is kept).")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed of features and video choice.")


def _mb(x) -> str:
  return f"{x / 2 ** 20:8.1f}" if x is not None else "     n/a"


def bench_bucket(run: dict, batch: dict, steps: int, warmup: int) -> dict:
  """Compiles ``run``'s step for ``batch``'s shapes, then times it (updates ``run['state']``).

  Returns:
    ``compile_s``, ``step_s`` (median of the timed steps), ``flops`` (XLA count per step),
    ``mem`` (``memory_analysis()`` or None) and the last step's ``loss``.
  """
  state = run["state"]
  t0 = time.perf_counter()
  compiled = run["step_fn"].lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", np.nan)) if cost else np.nan
  try:
    mem = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    mem = None
  metrics = None
  for _ in range(warmup):
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - t0)
  run["state"] = state
  return dict(compile_s=compile_s, step_s=float(np.median(times)), flops=flops, mem=mem,
              loss=float(metrics["loss"]))


def _print_row(variant: str, length: int, r: dict, peak: float) -> None:
  mem, achieved = r["mem"], r["flops"] / r["step_s"]
  print(f"{length:6d} {variant:8s} {r['compile_s']:9.2f} {1.0 / r['step_s']:8.3f} "
        f"{1e3 * r['step_s']:9.1f} {r['flops'] / 1e9:10.1f} {achieved / 1e9:8.1f} "
        f"{peak / 1e9:8.1f} {100.0 * achieved / peak:6.1f} "
        f"{_mb(getattr(mem, 'argument_size_in_bytes', None))} "
        f"{_mb(getattr(mem, 'temp_size_in_bytes', None))} "
        f"{_mb(getattr(mem, 'peak_memory_in_bytes', None))}  {r['loss']:.4f}", flush=True)


def bucket_weights(lengths, buckets) -> np.ndarray:
  """Share of the preset's videos per bucket; uniform when some video fits no bucket."""
  if int(lengths.max()) > int(max(buckets)):
    logging.warning("some videos are longer than the largest bucket %d: uniform weights",
                    max(buckets))
    return np.full(len(buckets), 1.0 / len(buckets))
  return batching.bucket_probs(lengths, buckets)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  runtime.keep_freed_memory()  # as launch.main does
  config = _CONFIG.value
  feature_dim = config.data.synthetic_feature_dim
  lengths, points, labels, bank_videos = step_inputs.preset_videos(config)
  if _BUCKETS.value == "auto":
    buckets = batching.make_buckets(lengths, batch_size=_BATCH_SIZE.value,
                                    max_buckets=config.data.max_buckets,
                                    multiple=config.data.bucket_multiple)
  else:
    try:
      buckets = tuple(sorted(int(b) for b in _BUCKETS.value.split(",") if b.strip()))
    except ValueError as e:
      raise app.UsageError(f"--buckets={_BUCKETS.value!r}: expected 'auto' or integers") from e
    if not buckets or min(buckets) < 1:
      raise app.UsageError(f"--buckets={_BUCKETS.value!r}: need positive lengths")
  weights = bucket_weights(lengths, buckets)
  print(f"machine: {machine.cpu_model()}, {jax.device_count()} {jax.default_backend()} device(s); "
        f"jax {jax.__version__}")
  print(f"start: {machine.load()}")
  print(f"preset {config.data.synthetic_preset}: {len(lengths)} videos, {int(lengths.min())}-"
        f"{int(lengths.max())} snippets (median {int(np.median(lengths))}); model F={feature_dim} "
        f"D={config.model.embed_dim} hidden={config.model.attention_hidden}; "
        f"batch {_BATCH_SIZE.value}; bank {bank_videos} videos")
  print(f"buckets {buckets}, weights {np.round(weights, 3).tolist()}")
  if int(lengths.max()) <= int(max(buckets)):
    print(f"expected padded-snippet share: {100 * batching.padding_share(lengths, buckets):.1f}%")
  rng = np.random.default_rng(_SEED.value)
  lowers = (0,) + tuple(buckets[:-1])
  batches = {b: step_inputs.random_batch(rng, lengths, points, labels, lo, b, _BATCH_SIZE.value,
                                         feature_dim, config.data.max_points)
             for lo, b in zip(lowers, buckets)}
  for b in buckets:
    share = 1.0 - batches[b]["valid"].mean()
    print(f"  bucket {b}: padded share of the benchmark batch {100 * share:.1f}%")
  n, reps = _MATMUL_SIZE.value, _MATMUL_REPEATS.value
  peak0 = machine.matmul_flops_per_s(n, reps)
  print(f"dense fp32 matmul {n}^3 (start): {peak0 / 1e9:.1f} GFLOP/s")
  variants = ("baseline", "full") if _VARIANT.value == "both" else (_VARIANT.value,)
  runs = {v: step_inputs.setup_variant(config, v, bank_videos) for v in variants}
  for v, run in runs.items():
    print(f"  {v}: mplg.variant={run['cfg'].mplg.variant} dfcl.enabled={run['cfg'].dfcl.enabled}")
  print(f"\n{'bucket':>6} {'variant':8s} {'compile s':>9} {'steps/s':>8} {'ms/step':>9} "
        f"{'GFLOP/step':>10} {'GFLOP/s':>8} {'peak':>8} {'% peak':>6} {'args MB':>8} "
        f"{'temp MB':>8} {'peak MB':>8}  loss")
  results = {v: {} for v in variants}
  peaks = {}
  for length in buckets:
    batch = jax.device_put(batches[length])
    peaks[length] = machine.matmul_flops_per_s(n, reps)  # the peak now, as the load moves
    for v in variants:
      results[v][length] = bench_bucket(runs[v], batch, _STEPS.value, _WARMUP.value)
      _print_row(v, length, results[v][length], peaks[length])
  peak1 = machine.matmul_flops_per_s(n, reps)
  print(f"\ndense fp32 matmul {n}^3 (end): {peak1 / 1e9:.1f} GFLOP/s")
  print(f"end: {machine.load()}")
  peak_w = sum(w * peaks[b] for w, b in zip(weights, buckets))
  print(f"\nbucket-weighted means (weights = share of videos per bucket; peak = weighted "
        f"per-bucket matmul, {peak_w / 1e9:.1f} GFLOP/s):")
  summary = {}
  for v, rows in results.items():
    step_s = sum(w * rows[b]["step_s"] for w, b in zip(weights, buckets))
    flops = sum(w * rows[b]["flops"] for w, b in zip(weights, buckets))
    compile_s = sum(rows[b]["compile_s"] for b in buckets)
    summary[v] = (step_s, flops)
    print(f"  {v:8s}: {1e3 * step_s:8.1f} ms/step ({1 / step_s:.3f} steps/s), "
          f"{flops / 1e9:.1f} GFLOP/step, {flops / step_s / 1e9:.1f} GFLOP/s "
          f"({100 * flops / step_s / peak_w:.1f}% of peak); compile total {compile_s:.1f} s")
  if len(summary) == 2:
    (tb, fb), (tf, ff) = summary["baseline"], summary["full"]
    print(f"  MPLG+DFCL overhead: step time x{tf / tb:.3f} ({100 * (tf / tb - 1):+.1f}%), "
          f"XLA FLOPs x{ff / fb:.4f} ({100 * (ff / fb - 1):+.2f}%)")

if __name__ == "__main__":
  app.run(main)
