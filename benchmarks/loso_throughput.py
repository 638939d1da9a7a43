"""LOSO fold-steps per second: folds one after another vs side by side on a fold mesh.

  python -m benchmarks.loso_throughput [--model=casme2|synthetic] [--folds=1,2,4]
      [--steps=1] [--warmup=1] [--length=328] [--batch_size=8] [--devices=N]
      [--modes=sequential,parallel] [--max_memory_gb=0 (= half the RAM)]

For each fold count ``G`` of ``--folds`` it trains ``G`` folds for ``--steps`` timed steps on
one bucket length (``--length`` snippets, batch ``--batch_size``, random features), two ways:

* ``sequential``: the folds one after another with the single-fold step
  (``steps.make_train_step``, compiled once for all G), a fresh ``state.init_state`` per fold,
  as ``loop.train_folds`` does;
* ``parallel``: one stacked state of G folds (``sharding.stack``, placed with
  ``NamedSharding(mesh, P('fold'))`` by ``sharding.global_array``) trained by
  ``steps.make_parallel_step`` over a fold mesh of ``min(devices, G)`` devices, with the
  group padded to a multiple of the mesh as ``sharding.group_layout`` says.

It prints per (mode, G): compile seconds, fold-steps/s (G x steps / seconds of the timed steps,
each step ended by ``block_until_ready``, after ``--warmup`` untimed steps), the speed-up of
parallel over sequential, XLA's FLOPs per call, the compiled memory stats
(``compiled.memory_analysis()``: arguments, temporaries; per device for the sharded step) and
the process's peak RSS (``ru_maxrss``) with its growth during the run (a high-water mark: runs go
in increasing G, sequential first, so a growth belongs to the run that caused it). A parallel run
whose compiled arguments + temporaries + outputs on all devices exceed ``--max_memory_gb``
(default: half the physical memory) is skipped after compiling; the host copies of the stacked
states and batches come on top (the casme2 model needs ~0.45 GB per fold at length 328, so 22
folds need ~10 GB compiled plus ~5 GB on the host).

Fake CPU devices: ``--devices=N`` (default: ``$PWES_BENCH_DEVICES`` or the number of CPUs) sets
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` before JAX starts; an
``xla_force_host_platform_device_count`` already in ``XLA_FLAGS`` wins. On a 2-core CPU the fake
devices share the same two cores, so the parallel speed-up is limited to what batching G folds
into wider kernels buys. Nothing is asserted.

The defaults (casme2 model: 1024-d inputs, D = 2048, hidden 512; G = 1, 2, 4; 1 step) take a few
minutes on a 2-core CPU. The full sweep: ``--folds=1,2,4,8,22 --steps=3`` (tens of minutes with
the casme2 model; ``--model=synthetic`` runs it in a few).
"""

from __future__ import annotations

import os
import sys


def _devices_from_argv(argv) -> int:
  """``--devices=N`` / ``--devices N`` from the command line, else env / CPU count."""
  value = os.environ.get("PWES_BENCH_DEVICES", str(os.cpu_count() or 1))
  for i, arg in enumerate(argv):
    if arg.startswith("--devices="):
      value = arg.split("=", 1)[1]
    elif arg == "--devices" and i + 1 < len(argv):
      value = argv[i + 1]
  try:
    n = int(value)
  except ValueError:
    raise SystemExit(f"--devices / PWES_BENCH_DEVICES: expected an integer, got {value!r}")
  if n < 1:
    raise SystemExit(f"--devices / PWES_BENCH_DEVICES: must be >= 1, got {n}")
  return n


_REQUESTED_DEVICES = _devices_from_argv(sys.argv)
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={_REQUESTED_DEVICES}"
                             ).strip()

# pylint: disable=g-import-not-at-top,wrong-import-position
import resource
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from configs import casme2 as casme2_config
from configs import synthetic as synthetic_config
from pwes_jax.method import model as model_lib
from pwes_jax.training import checks
from pwes_jax.training import sharding
from pwes_jax.training import state as state_lib
from pwes_jax.training import steps
from pwes_jax.data import layout
# pylint: enable=g-import-not-at-top,wrong-import-position

_MODEL = flags.DEFINE_enum("model", "casme2", ["casme2", "synthetic"],
                           "casme2: paper sizes (F=1024, D=2048, hidden 512); synthetic: the "
                           "narrow default model (F=128, D=128, hidden 64).")
_FOLDS = flags.DEFINE_list("folds", ["1", "2", "4"], "Fold counts G to measure.")
_STEPS = flags.DEFINE_integer("steps", 1, "Timed steps per fold.")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed steps after compiling (per G for parallel; "
                               "once for sequential).")
_LENGTH = flags.DEFINE_integer("length", 328, "Bucket length (snippets) of every batch.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Videos per batch.")
_MODES = flags.DEFINE_list("modes", ["sequential", "parallel"], "sequential and/or parallel.")
flags.DEFINE_integer("devices", _REQUESTED_DEVICES,
                     "Fake CPU devices (read from the command line before JAX starts).")
_MAX_MEMORY_GB = flags.DEFINE_float("max_memory_gb", 0.0,
                                    "Skip a parallel run whose compiled footprint (all devices) "
                                    "exceeds this; 0 = half the physical memory.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed of the batches.")


def _maxrss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _load() -> str:
  one, five, fifteen = os.getloadavg()
  return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} CPUs"


def random_batch(rng, length: int, batch_size: int, feature_dim: int, max_points: int,
                 num_ids: int) -> dict:
  """A batch dict (keys of ``batching.BATCH_KEYS``) of random features and 1-3 points per row.

  Row lengths are uniform in ``[length / 2, length]``; ``video_id`` values are distinct and
  below ``num_ids`` (the memory bank's size).
  """
  b, c = batch_size, layout.NUM_CLASSES
  t = rng.integers(length // 2 + 1, length + 1, size=b)
  valid = (np.arange(length)[None, :] < t[:, None]).astype(np.float32)  # [B, T]
  n = rng.integers(1, 4, size=b)
  point_valid = (np.arange(max_points)[None, :] < n[:, None]).astype(np.float32)  # [B, N]
  point_index = (rng.random((b, max_points)) * t[:, None]).astype(np.int32) * (point_valid > 0)
  point_label = rng.integers(0, c, size=(b, max_points)).astype(np.int32) * (point_valid > 0)
  video_label = np.zeros((b, c), np.float32)
  for row in range(b):
    video_label[row, point_label[row, :n[row]]] = 1.0
  return {
      "rgb": rng.standard_normal((b, length, feature_dim), np.float32) * valid[..., None],
      "flow": rng.standard_normal((b, length, feature_dim), np.float32) * valid[..., None],
      "valid": valid,
      "point_index": point_index.astype(np.int32),
      "point_label": point_label.astype(np.int32),
      "point_valid": point_valid,
      "video_label": video_label,
      "video_id": rng.choice(num_ids, b, replace=False).astype(np.int32),
      "row_valid": np.ones((b,), np.float32),
  }


def _memory_limit_gb() -> float:
  if _MAX_MEMORY_GB.value > 0:
    return _MAX_MEMORY_GB.value
  try:
    return 0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
  except (ValueError, OSError):
    return 16.0


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", np.nan)) if cost else np.nan


def _mem(compiled):
  try:
    return compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None


def _footprint(mem) -> float:
  """Arguments + outputs + temporaries - aliased (donated) bytes of one device's program."""
  if mem is None:
    return float("nan")
  return float(mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes -
               mem.alias_size_in_bytes)


def _row(mode, g, mesh, compile_s, rate, flops, mem, rss0, note=""):
  args = mem.argument_size_in_bytes / 2 ** 20 if mem is not None else float("nan")
  temp = mem.temp_size_in_bytes / 2 ** 20 if mem is not None else float("nan")
  rss = _maxrss_mb()
  print(f"{mode:10s} {g:3d} {mesh:4d} {compile_s:9.2f} {rate:12.3f} {flops / 1e9:11.1f} "
        f"{args:9.1f} {temp:9.1f} {rss:9.0f} {rss - rss0:+8.0f}  {note}", flush=True)


def run_sequential(g, config, model, tx, compiled, batches, feature_dim, bank):
  """Trains G folds one after another; returns fold-steps/s of the timed steps."""
  total = 0.0
  for fold in range(g):
    state = state_lib.init_state(model, tx, config, state_lib.fold_key(config, fold),
                                 feature_dim, bank)
    batch = batches[fold]
    for _ in range(_STEPS.value):
      t0 = time.perf_counter()
      state, metrics = compiled(state, batch)
      jax.block_until_ready((state, metrics))
      total += time.perf_counter() - t0
  return g * _STEPS.value / total


def run_parallel(g, config, model, tx, stacked_batch_np, feature_dim, bank, rss0):
  """Compiles and times the stacked step for G folds; prints its row."""
  group_size, mesh_size = sharding.group_layout(g, g, jax.device_count())
  mesh = sharding.fold_mesh(mesh_size)
  pstep = steps.make_parallel_step(model, tx, config, mesh)
  states = [jax.device_get(state_lib.init_state(  # padded folds copy fold 0, as in training
      model, tx, config, state_lib.fold_key(config, i if i < g else 0), feature_dim, bank))
            for i in range(group_size)]
  fold_valid = np.array([1.0] * g + [0.0] * (group_size - g), np.float32)
  place = lambda x: sharding.global_array(mesh, x, group_size)
  stacked = jax.tree.map(place, sharding.stack(states))
  del states
  idx = np.arange(group_size) % g  # padded folds reuse the first folds' batches
  batch = jax.tree.map(lambda x: place(np.ascontiguousarray(x[idx])), stacked_batch_np)
  valid = place(fold_valid)
  t0 = time.perf_counter()
  compiled = pstep.lower(stacked, batch, valid, jnp.int32(0)).compile()
  compile_s = time.perf_counter() - t0
  mem = _mem(compiled)
  need_gb = _footprint(mem) * mesh_size / 2 ** 30
  flops = _flops(compiled)
  if need_gb > _memory_limit_gb():
    _row("parallel", g, mesh_size, compile_s, float("nan"), flops, mem, rss0,
         f"skipped: ~{need_gb:.1f} GB > {_memory_limit_gb():.1f} GB (--max_memory_gb)")
    return float("nan")
  step = 0
  for _ in range(_WARMUP.value):
    stacked, metrics = compiled(stacked, batch, valid, jnp.int32(step))
    jax.block_until_ready((stacked, metrics))
    step += 1
  total = 0.0
  for _ in range(_STEPS.value):
    t0 = time.perf_counter()
    stacked, metrics = compiled(stacked, batch, valid, jnp.int32(step))
    jax.block_until_ready((stacked, metrics))
    total += time.perf_counter() - t0
    step += 1
  if int(np.asarray(jax.device_get(stacked.step))[0]) != step:
    raise AssertionError(f"parallel G={g}: folds did not advance (step {step})")
  rate = g * _STEPS.value / total
  pad = f"group {group_size}" + (f" ({group_size - g} padded)" if group_size > g else "")
  _row("parallel", g, mesh_size, compile_s, rate, flops, mem, rss0, pad)
  return rate


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  try:
    fold_counts = sorted({int(f) for f in _FOLDS.value})
  except ValueError as e:
    raise app.UsageError(f"--folds={','.join(_FOLDS.value)}: expected integers") from e
  if not fold_counts or fold_counts[0] < 1:
    raise app.UsageError("--folds: need fold counts >= 1")
  modes = [m.strip() for m in _MODES.value]
  for m in modes:
    if m not in ("sequential", "parallel"):
      raise app.UsageError(f"--modes: unknown mode {m!r}; use sequential and/or parallel")
  if _STEPS.value < 1 or _LENGTH.value < 2 or _BATCH_SIZE.value < 1:
    raise app.UsageError("--steps >= 1, --length >= 2 and --batch_size >= 1 are needed")
  config = (casme2_config if _MODEL.value == "casme2" else synthetic_config).get_config()
  config.optim.batch_size = _BATCH_SIZE.value
  checks.check_run_config(config)
  feature_dim = config.data.synthetic_feature_dim
  bank = 97  # CAS(ME)^2: the largest fold trains on 97 of the 98 videos
  model = model_lib.build_model(config.model)
  tx = state_lib.make_optimizer(config)
  print(f"devices: {jax.device_count()} {jax.default_backend()} (XLA_FLAGS="
        f"{os.environ.get('XLA_FLAGS', '')!r}); jax {jax.__version__}")
  print(f"start: {_load()}")
  print(f"model {_MODEL.value}: F={feature_dim} D={config.model.embed_dim} "
        f"hidden={config.model.attention_hidden}; mplg={config.mplg.variant} "
        f"dfcl={config.dfcl.enabled}; batch {_BATCH_SIZE.value} x {_LENGTH.value} snippets; "
        f"{_STEPS.value} timed step(s) per fold after {_WARMUP.value} warm-up")
  rng = np.random.default_rng(_SEED.value)
  g_max = max(fold_counts)
  t0 = time.perf_counter()
  per_fold = [random_batch(rng, _LENGTH.value, _BATCH_SIZE.value, feature_dim,
                           config.data.max_points, bank) for _ in range(g_max)]
  stacked_np = sharding.stack(per_fold)
  print(f"batches for {g_max} folds made in {time.perf_counter() - t0:.1f} s")
  print(f"\n{'mode':10s} {'G':>3s} {'mesh':>4s} {'compile s':>9s} {'fold-steps/s':>12s} "
        f"{'GFLOP/call':>11s} {'args MB':>9s} {'temp MB':>9s} {'maxrss MB':>9s} {'+rss MB':>8s}")
  seq_compiled, seq_rates, par_rates = None, {}, {}
  for g in fold_counts:
    if "sequential" in modes:
      rss0 = _maxrss_mb()
      compile_s = 0.0
      if seq_compiled is None:
        step_fn = steps.make_train_step(model, tx, config)
        state = state_lib.init_state(model, tx, config, state_lib.fold_key(config, 0),
                                     feature_dim, bank)
        batch0 = jax.device_put(per_fold[0])
        t0 = time.perf_counter()
        seq_compiled = step_fn.lower(state, batch0).compile()
        compile_s = time.perf_counter() - t0
        for _ in range(_WARMUP.value):
          state, metrics = seq_compiled(state, batch0)
          jax.block_until_ready((state, metrics))
        del state, step_fn
      batches = [jax.device_put(b) for b in per_fold[:g]]
      seq_rates[g] = run_sequential(g, config, model, tx, seq_compiled, batches, feature_dim,
                                    bank)
      del batches
      _row("sequential", g, 1, compile_s, seq_rates[g], _flops(seq_compiled), _mem(seq_compiled),
           rss0, "" if compile_s else "(compiled once, at G=1)")
    if "parallel" in modes:
      rss0 = _maxrss_mb()
      par_rates[g] = run_parallel(g, config, model, tx,
                                  jax.tree.map(lambda x: x[:g], stacked_np), feature_dim, bank,
                                  rss0)
  print(f"\nend: {_load()}")
  if seq_rates and par_rates:
    print("speed-up parallel / sequential (fold-steps/s):")
    for g in fold_counts:
      print(f"  G={g:3d}: {par_rates[g] / seq_rates[g]:.2f}x")


if __name__ == "__main__":
  app.run(main)
