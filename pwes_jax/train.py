"""LOSO training and evaluation: folds, batches, jitted steps, checkpoints, outputs.

The method itself lives in ``objective.py``; this module only orchestrates. Folds run one at a
time (``config.loso.parallel_folds = 1``) or in groups whose train states are stacked on a leading
fold axis and sharded over a device mesh (see ``sharding.py``).
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any, Optional, Sequence

from absl import logging
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from pwes_jax import checkpointing
from pwes_jax import dfcl
from pwes_jax import fileio
from pwes_jax import model as model_lib
from pwes_jax import objective as objective_lib
from pwes_jax.data import batching
from pwes_jax.data import folds as folds_lib
from pwes_jax.data import source


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or Inf; the message names the fold and the step."""


@flax.struct.dataclass
class TrainState:
  """Everything a fold's training carries; changed only through ``.replace``.

  Attributes:
    step: scalar int32, optimizer steps taken.
    params: model parameters.
    opt_state: optimizer state.
    rng: the fold's base key; step ``s`` uses ``fold_in(rng, s)``.
    bank: the DFCL memory bank (``dfcl.MemoryBank``) or None.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  bank: Any = None


def make_optimizer(config) -> optax.GradientTransformation:
  o = config.optim
  if o.weight_decay:
    return optax.adamw(o.learning_rate, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay)
  return optax.adam(o.learning_rate, b1=o.b1, b2=o.b2)


def fold_key(config, fold_index: int) -> jax.Array:
  return jax.random.fold_in(jax.random.PRNGKey(config.seed), fold_index)


def init_state(model, tx, config, key: jax.Array, feature_dim: int,
               num_bank_videos: int) -> TrainState:
  """A fresh train state (parameters from ``key``; empty memory bank of ``num_bank_videos``)."""
  init_key, run_key = jax.random.split(key)
  x = jnp.zeros((1, 8, feature_dim), jnp.float32)
  params = model.init({"params": init_key}, x, x, jnp.ones((1, 8)), train=False)["params"]
  bank = None
  if config.dfcl.enabled:
    bank = dfcl.init_bank(num_bank_videos, tuple(config.dfcl.regions), config.model.embed_dim)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=run_key, bank=bank)


def train_step(state: TrainState, batch: dict, *, model, tx, config, bank_write=1.0):
  """One optimizer step on one fold: ``(state, batch) -> (state, metrics)``. Pure.

  ``bank_write`` (a scalar in {0, 1}) can veto the memory-bank write: the fold-parallel step
  passes 0 for folds that must not move, so the bank is still updated in place.
  """
  rng = jax.random.fold_in(state.rng, state.step)
  grad_fn = jax.value_and_grad(objective_lib.objective, has_aux=True)
  (_, (metrics, region)), grads = grad_fn(state.params, batch, rng, state.bank, state.step,
                                          model=model, config=config)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  grad_norm = optax.tree.norm(grads)
  bank = state.bank
  if region is not None:
    vectors, vector_valid = region
    active = (state.step >= config.mplg.pretrain_steps).astype(jnp.float32)
    # The loss and its gradient read the bank; making the rows written depend on the gradient
    # (a finite gradient norm) orders the update after every read, so XLA updates the donated
    # bank in place instead of copying it each step (benchmarks/bank_memory.py shows it).
    write = (batch["batch_valid"] * active * bank_write
             * jnp.isfinite(grad_norm).astype(jnp.float32))
    bank = dfcl.update_bank(bank, batch["video_id"], vectors, vector_valid, write)
  metrics = dict(metrics, grad_norm=grad_norm)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state, bank=bank), metrics


def make_jitted_step(model, tx, config):
  """The sequential step, jitted once with the state donated."""
  return jax.jit(functools.partial(train_step, model=model, tx=tx, config=config),
                 donate_argnums=0)


@functools.lru_cache(maxsize=8)
def _programs(config_json: str):
  """Model, optimizer and jitted programs of a config, built once per process and config."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(json.loads(config_json))
  model = model_lib.build_model(config.model)
  tx = make_optimizer(config)
  return model, tx, make_jitted_step(model, tx, config), make_forward(model)


def programs(config):
  """``(model, tx, jitted step, jitted forward)`` for ``config``; cached so that repeated runs in
  one process (sweeps, tests) reuse the compiled programs."""
  return _programs(config.to_json())


def make_forward(model):
  """Jitted inference: ``(params, rgb, flow, valid) -> outputs`` (eval mode, no dropout)."""
  @jax.jit
  def forward(params, rgb, flow, valid):
    out = model.apply({"params": params}, rgb, flow, valid, train=False)
    return {k: out[k] for k in ("attention", "probs", "suppressed")}
  return forward


# ------------------------------------------------------------------------------------------------
# Run-level context shared by all folds.


@flax.struct.dataclass
class RunContext:
  """What every fold of a run shares (static, not a pytree of arrays)."""
  config: Any = flax.struct.field(pytree_node=False)
  workdir: str = flax.struct.field(pytree_node=False)
  dataset: Any = flax.struct.field(pytree_node=False)
  videos: dict = flax.struct.field(pytree_node=False)
  buckets: tuple = flax.struct.field(pytree_node=False)
  bucket_probs: Any = flax.struct.field(pytree_node=False)
  bank_videos: int = flax.struct.field(pytree_node=False)
  model: Any = flax.struct.field(pytree_node=False)
  tx: Any = flax.struct.field(pytree_node=False)


def make_context(config, workdir: str, dataset, fold_list: Sequence[folds_lib.Fold]
                 ) -> RunContext:
  """Loads features and points and fixes the run's buckets and bank size."""
  videos = source.load_video_arrays(dataset, config)
  lengths = [v.rgb.shape[0] for v in videos.values()]
  buckets = batching.make_buckets(lengths, batch_size=config.optim.batch_size,
                                  max_buckets=config.data.max_buckets,
                                  multiple=config.data.bucket_multiple)
  probs = np.asarray(batching.bucket_probs(lengths, buckets), np.float64)
  # A bucket some fold cannot fill (all its short videos belong to the held-out subject) is
  # never drawn: every fold of a step shares the bucket.
  for f in fold_list:
    shortest = min(videos[n].length for n in f.train_videos)
    probs[np.asarray(buckets) < shortest] = 0.0
  if probs.sum() <= 0:
    raise ValueError("no length bucket fits a training video of every fold; raise "
                     "config.data.max_buckets or check the dataset's video lengths")
  bank_videos = max(len(f.train_videos) for f in fold_list)
  model, tx = programs(config)[:2]
  return RunContext(config=config, workdir=workdir, dataset=dataset, videos=videos,
                    buckets=tuple(int(b) for b in buckets), bucket_probs=probs / probs.sum(),
                    bank_videos=bank_videos, model=model, tx=tx)


def shared_bucket(ctx: RunContext, step: int) -> int:
  """The length bucket of ``step``: a function of (seed, step) only, shared by all folds."""
  rng = np.random.default_rng([ctx.config.seed, step, 0xB0C])
  return int(rng.choice(len(ctx.buckets), p=ctx.bucket_probs))


def fold_sampler(ctx: RunContext, fold: folds_lib.Fold) -> batching.BatchSampler:
  train = [ctx.videos[n] for n in fold.train_videos]
  return batching.BatchSampler(train, ctx.buckets, ctx.config.optim.batch_size,
                               ctx.config.data.max_points,
                               seed=ctx.config.seed * 100_003 + fold.index,
                               bucket_probs=ctx.bucket_probs)


# ------------------------------------------------------------------------------------------------
# Logging helpers.


class MetricsLog:
  """Appends JSON lines to ``workdir/metrics.jsonl`` (and TensorBoard events when available)."""

  def __init__(self, workdir: str, use_tensorboard: bool):
    name = ("metrics.jsonl" if jax.process_count() == 1
            else f"metrics.p{jax.process_index()}.jsonl")
    self.path = os.path.join(workdir, name)
    self._tb = {}
    self._use_tb = use_tensorboard
    self._workdir = workdir

  def write(self, fold: int, step: int, values: dict) -> None:
    row = {"fold": fold, "step": step, **{k: float(v) for k, v in values.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    if self._use_tb:
      w = self._writer(fold)
      if w is not None:
        for k, v in values.items():
          w.add_scalar(k, float(v), step)
        w.flush()

  def truncate(self, fold: int, step: int) -> None:
    """Drops ``fold``'s rows after ``step`` (a resumed fold logs those steps again)."""
    if not os.path.isfile(self.path):
      return
    with open(self.path) as f:
      lines = f.readlines()
    keep = []
    for line in lines:
      row = json.loads(line) if line.strip() else None
      if row is None or row["fold"] != fold or row["step"] <= step:
        keep.append(line)
    if len(keep) != len(lines):
      with fileio.atomic_open(self.path) as f:
        f.writelines(keep)

  def _writer(self, fold: int):
    if fold not in self._tb:
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
        self._tb[fold] = SummaryWriter(os.path.join(checkpointing.fold_dir(self._workdir, fold),
                                                    "tensorboard"))
      except ImportError:
        self._tb[fold] = None
    return self._tb[fold]


def check_finite(history: list, fold_index: int) -> None:
  """Raises :class:`NonFiniteLossError` naming the first step whose loss is not finite."""
  for step, m in history:
    loss = float(m["loss"])
    if not np.isfinite(loss):
      raise NonFiniteLossError(f"fold {fold_index}: loss is {loss} at step {step}; "
                               f"terms: { {k: float(v) for k, v in m.items()} }")


def summarize(history: list) -> dict:
  keys = history[0][1].keys()
  return {k: float(np.mean([float(m[k]) for _, m in history])) for k in keys}


# ------------------------------------------------------------------------------------------------
# Outputs of a trained fold.


def infer_videos(ctx: RunContext, params, names: Sequence[str], forward=None) -> dict:
  """Runs the model over videos; returns ``{name: {attention [T], probs [T,C+1], suppressed}}``."""
  forward = forward or make_forward(ctx.model)
  arrays = [ctx.videos[n] for n in names]
  out = {}
  for batch in batching.iterate_padded(arrays, ctx.buckets, ctx.config.optim.batch_size,
                                       ctx.config.data.max_points):
    res = jax.device_get(forward(params, batch["rgb"], batch["flow"], batch["valid"]))
    for row, vid in enumerate(batch["video_id"]):
      if vid < 0:
        continue
      t = arrays[vid].rgb.shape[0]
      out[arrays[vid].name] = {k: np.asarray(v[row, :t]) for k, v in res.items()}
  return out


def save_outputs(path: str, outputs: dict) -> None:
  flat = {f"{k}__{name}": v for name, d in outputs.items() for k, v in d.items()}
  with fileio.atomic_open(path, "wb") as f:
    np.savez(f, **flat)


def load_outputs(path: str) -> dict:
  out = {}
  with np.load(path) as z:
    for key in z.files:
      kind, name = key.split("__", 1)
      out.setdefault(name, {})[kind] = z[key]
  return out


def fold_record_path(workdir: str, fold_index: int) -> str:
  return os.path.join(checkpointing.fold_dir(workdir, fold_index), "fold.json")


def read_fold_record(workdir: str, fold_index: int) -> Optional[dict]:
  path = fold_record_path(workdir, fold_index)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def finish_fold(ctx: RunContext, fold: folds_lib.Fold, params, train_summary: dict,
                seconds: float, forward=None) -> dict:
  """Writes the fold's per-video outputs (test and training videos) and its record."""
  fdir = checkpointing.fold_dir(ctx.workdir, fold.index)
  names = list(fold.test_videos) + list(fold.train_videos)
  outputs = infer_videos(ctx, params, names, forward)
  save_outputs(os.path.join(fdir, "outputs.npz"), outputs)
  record = {"fold": fold.index, "test_subject": fold.test_subject,
            "test_videos": list(fold.test_videos), "train_videos": list(fold.train_videos),
            "steps": int(ctx.config.optim.steps), "train_seconds": seconds,
            "train_summary": train_summary, "finished": True}
  with fileio.atomic_open(fold_record_path(ctx.workdir, fold.index)) as f:
    json.dump(record, f, indent=1)
  return record


# ------------------------------------------------------------------------------------------------
# Sequential folds.


def train_fold(ctx: RunContext, fold: folds_lib.Fold, step_fn, log: MetricsLog,
               forward=None) -> dict:
  """Trains one fold (resuming from its latest checkpoint) and writes its outputs."""
  config = ctx.config
  fdir = checkpointing.fold_dir(ctx.workdir, fold.index)
  os.makedirs(fdir, exist_ok=True)
  feature_dim = ctx.dataset.info.feature_dim
  state = init_state(ctx.model, ctx.tx, config, fold_key(config, fold.index), feature_dim,
                     ctx.bank_videos)
  manager = checkpointing.make_manager(os.path.join(fdir, "checkpoints"),
                                       keep=config.checkpoint.max_to_keep)
  restored = checkpointing.restore_latest(manager, state)
  if restored is not None:
    state = restored
    logging.info("fold %d: resumed at step %d", fold.index, int(state.step))
    log.truncate(fold.index, int(state.step))
  sampler = fold_sampler(ctx, fold)
  start = int(state.step)
  history, window, t0, t_window = [], [], time.time(), time.time()
  for step in range(start, config.optim.steps):
    batch = sampler.sample(step, bucket=shared_bucket(ctx, step))
    state, metrics = step_fn(state, batch)
    window.append((step, metrics))
    done = step + 1
    save = done % config.checkpoint.every_steps == 0 or done == config.optim.steps
    if done % config.log_every == 0 or save:  # never checkpoint an unchecked (NaN) state
      window = [(s, jax.device_get(m)) for s, m in window]
      check_finite(window, fold.index)
      rate = len(window) / max(time.time() - t_window, 1e-9)
      mean = summarize(window)
      log.write(fold.index, done, dict(mean, steps_per_sec=rate))
      logging.info("fold %d step %d/%d: loss %.4f (%.1f steps/s)", fold.index, done,
                   config.optim.steps, mean["loss"], rate)
      history.extend(window)
      window, t_window = [], time.time()
    if save:
      checkpointing.save(manager, done, state)
  manager.close()
  seconds = time.time() - t0
  summary = summarize(history[-config.log_every:]) if history else {}
  steps_run = config.optim.steps - start
  print(f"fold {fold.index:2d} (subject {fold.test_subject}): {steps_run} steps in "
        f"{seconds:.1f} s ({steps_run / max(seconds, 1e-9):.1f} steps/s)", flush=True)
  return finish_fold(ctx, fold, state.params, summary, seconds, forward)


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains every selected LOSO fold, writes per-video outputs, evaluates, reports.

  Rerunning with the same ``workdir`` skips finished folds and resumes unfinished ones from their
  latest checkpoint; a resumed fold ends with the same parameters as an uninterrupted one.

  Returns:
    The evaluation result (see ``pwes_jax.report.evaluate_run``).
  """
  check_run_config(config)
  if jax.process_count() > 1 and config.loso.parallel_folds <= 1:
    raise ValueError("a multi-process run needs config.loso.parallel_folds > 1 (each process "
                     "trains the folds on its own devices); got "
                     f"{config.loso.parallel_folds}")
  lead = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  if lead:
    check_workdir_config(config, workdir)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=1))
    dataset = source.prepare_dataset(config, workdir)
  _sync("dataset ready")
  if not lead:
    dataset = source.prepare_dataset(config, workdir)
  all_folds = folds_lib.loso_folds(dataset)
  selected = folds_lib.select_folds(all_folds, config.loso.folds)
  ctx = make_context(config, workdir, dataset, all_folds)
  log = MetricsLog(workdir, config.tensorboard)
  todo = []
  for fold in selected:
    record = read_fold_record(workdir, fold.index)
    if record is not None and record.get("finished"):
      logging.info("fold %d already finished; skipping", fold.index)
    else:
      todo.append(fold)
  if todo:
    if config.loso.parallel_folds > 1:
      from pwes_jax import sharding  # pylint: disable=g-import-not-at-top
      sharding.train_folds_parallel(ctx, todo, log)
    else:
      _, _, step_fn, forward = programs(config)
      for fold in todo:
        train_fold(ctx, fold, step_fn, log, forward)
  _sync("folds finished")
  if not lead:
    return {}
  # Evaluate every finished fold of the workdir, not only this invocation's selection, so that
  # runs split over several invocations (--folds=0-10, then 11-21) report all their folds.
  finished = [f.index for f in all_folds
              if (read_fold_record(workdir, f.index) or {}).get("finished")]
  from pwes_jax import report  # pylint: disable=g-import-not-at-top
  return report.evaluate_run(workdir, ctx.dataset, config, finished)


def check_run_config(config) -> None:
  """Fails before any data is touched, naming the field, on values the run cannot use."""
  objective_lib.check_config(config)
  from pwes_jax import evaluation  # pylint: disable=g-import-not-at-top
  from pwes_jax import mplg  # pylint: disable=g-import-not-at-top

  def need(ok, field, value, what):
    if not ok:
      raise ValueError(f"config.{field}={value!r}: {what}")

  for field in ("optim.steps", "optim.batch_size", "log_every", "checkpoint.every_steps",
                "checkpoint.max_to_keep", "data.max_points", "data.max_buckets",
                "data.bucket_multiple", "loso.parallel_folds"):
    section, _, name = field.rpartition(".")
    value = (config[section] if section else config)[name]
    need(isinstance(value, int) and value >= 1, field, value, "must be a positive integer")
  need(config.mplg.pretrain_steps >= 0, "mplg.pretrain_steps", config.mplg.pretrain_steps,
       "must be >= 0")
  need(config.model.dtype in ("float32", "bfloat16"), "model.dtype", config.model.dtype,
       "must be 'float32' or 'bfloat16'")
  need(config.eval.protocol in evaluation.PROTOCOLS, "eval.protocol", config.eval.protocol,
       f"must be one of {evaluation.PROTOCOLS}")
  need(0 < config.inference.top_ratio <= 1, "inference.top_ratio", config.inference.top_ratio,
       "must be in (0, 1]")
  need(0 <= config.inference.nms_threshold <= 1, "inference.nms_threshold",
       config.inference.nms_threshold, "must be in [0, 1]")
  need(config.data.point_mode in ("random", "apex"), "data.point_mode", config.data.point_mode,
       "must be 'random' or 'apex'")
  if config.dfcl.enabled:
    need(config.dfcl.tau > 0, "dfcl.tau", config.dfcl.tau, "must be positive")
  if config.mplg.variant not in ("none", "pplm"):
    try:
      mplg.check_options(top_ratio=config.mplg.top_ratio, theta=config.mplg.theta,
                         neg_ratio=config.mplg.neg_ratio, variant=config.mplg.variant,
                         threshold_mode=config.mplg.threshold_mode)
    except ValueError as e:
      raise ValueError(f"config.mplg: {e}") from None


# Config fields that may change between invocations on one workdir without changing results.
_RERUN_FREE_FIELDS = ("loso.folds", "loso.parallel_folds", "log_every", "tensorboard",
                      "checkpoint.every_steps", "checkpoint.max_to_keep", "data.cache_dir")


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def check_workdir_config(config, workdir: str) -> None:
  """Refuses to resume or extend a workdir trained with a different config.

  Finished folds are skipped and unfinished ones resumed, so mixing configs in one workdir
  would silently mix methods; ``config.json`` is also what ``launch.spot``/``launch.report``
  rebuild the model from.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    return
  with open(path) as f:
    old = _flatten(json.load(f))
  new = _flatten(json.loads(config.to_json_best_effort()))
  diff = [k for k in sorted(set(old) | set(new))
          if k not in _RERUN_FREE_FIELDS and old.get(k) != new.get(k)]
  if diff:
    shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:5])
    raise ValueError(f"workdir {workdir} was trained with a different config ({shown}); "
                     "use a new --workdir")


def _sync(name: str) -> None:
  """A barrier across processes (no-op on a single host)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)
