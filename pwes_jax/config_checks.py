"""Every check of a run's config and workdir, before any data is touched; messages name the field.

Also loads the run's extension modules (``config.extensions``), since the label miners and loss
terms they register are part of what the config names.
"""

from __future__ import annotations

import importlib
import json

import jax

from pwes_jax import evaluation
from pwes_jax import objective
from pwes_jax import run_dir

# Config fields that may change between invocations on one workdir without changing results.
RERUN_FREE_FIELDS = ("loso.folds", "loso.parallel_folds", "log_every", "tensorboard",
                     "checkpoint.every_steps", "checkpoint.max_to_keep", "data.cache_dir")

# Fields added after runs were already made, with the value that means "as before": a workdir
# whose config.json predates a field is accepted when the field holds this value.
ADDED_FIELDS = {
    "extensions": [],
    "loss.terms": ["mil", "mil_suppressed", "guide", "sparsity", "mutual", "snippet"],
    "eval.me_seconds": 0.5,
    "eval.me_long_seconds": 1.0,
    "eval.max_per_video": 14,
    "eval.honest_point": "cross_fold",
}

_POSITIVE_INTS = ("optim.steps", "optim.batch_size", "log_every", "checkpoint.every_steps",
                  "checkpoint.max_to_keep", "data.max_points", "data.max_buckets",
                  "data.bucket_multiple", "loso.parallel_folds")


def load_extensions(config) -> None:
  """Imports every module of ``config.extensions`` (they register miners and loss terms).

  Raises:
    ValueError: naming the field and the module when one cannot be imported.
  """
  for name in tuple(config.get("extensions", ())):
    try:
      importlib.import_module(name)
    except ImportError as e:
      raise ValueError(f"config.extensions: cannot import {name!r} ({e}); give a module path "
                       "importable from the working directory, e.g. examples.temporal_smoothness"
                       ) from None


def check_run_config(config) -> None:
  """Fails before any data is touched, naming the field, on values the run cannot use.

  Loads ``config.extensions`` first, then checks the objective's names (``mplg.variant``,
  ``loss.terms``) and settings, sizes, intervals, dtype, protocol and inference settings, and
  that a multi-process run trains folds side by side.

  Raises:
    ValueError: ``config.<field>=<value>: <what is wrong>``.
  """
  load_extensions(config)
  objective.check_config(config)

  def need(ok, field, value, what):
    if not ok:
      raise ValueError(f"config.{field}={value!r}: {what}")

  for field in _POSITIVE_INTS:
    section, _, name = field.rpartition(".")
    value = (config[section] if section else config)[name]
    need(isinstance(value, int) and value >= 1, field, value, "must be a positive integer")
  need(config.mplg.pretrain_steps >= 0, "mplg.pretrain_steps", config.mplg.pretrain_steps,
       "must be >= 0")
  need(config.model.dtype in ("float32", "bfloat16"), "model.dtype", config.model.dtype,
       "must be 'float32' or 'bfloat16'")
  need(config.eval.protocol in evaluation.PROTOCOLS, "eval.protocol", config.eval.protocol,
       f"must be one of {evaluation.PROTOCOLS}")
  honest = config.eval.get("honest_point", evaluation.DEFAULT_HONEST_POINT)
  need(honest in evaluation.HONEST_POINTS, "eval.honest_point", honest,
       f"must be one of {evaluation.HONEST_POINTS}")
  try:
    evaluation.settings(me_seconds=config.eval.get("me_seconds", evaluation.ME_SECONDS),
                        me_long_seconds=config.eval.get("me_long_seconds",
                                                        evaluation.ME_LONG_SECONDS),
                        max_per_video=config.eval.get("max_per_video", evaluation.MAX_PER_VIDEO))
  except ValueError as e:
    raise ValueError(f"config.eval: {e}") from None
  need(0 < config.inference.top_ratio <= 1, "inference.top_ratio", config.inference.top_ratio,
       "must be in (0, 1]")
  need(0 <= config.inference.nms_threshold <= 1, "inference.nms_threshold",
       config.inference.nms_threshold, "must be in [0, 1]")
  need(config.data.point_mode in ("random", "apex"), "data.point_mode", config.data.point_mode,
       "must be 'random' or 'apex'")
  if config.dfcl.enabled:
    need(config.dfcl.tau > 0, "dfcl.tau", config.dfcl.tau, "must be positive")
  if jax.process_count() > 1 and config.loso.parallel_folds <= 1:
    raise ValueError("a multi-process run needs config.loso.parallel_folds > 1 (each process "
                     "trains the folds on its own devices); got "
                     f"{config.loso.parallel_folds}")


def flatten(d: dict, prefix: str = "") -> dict:
  """``{"section.field": value}`` of a nested dict."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _plain(config) -> dict:
  return flatten(json.loads(config.to_json_best_effort()))


def check_workdir_config(config, workdir: str) -> None:
  """Refuses to resume or extend a workdir trained with a different config.

  Finished folds are skipped and unfinished ones resumed, so mixing configs in one workdir
  would silently mix methods; ``config.json`` is also what ``launch.spot``/``launch.report``
  rebuild the model from. Fields of :data:`RERUN_FREE_FIELDS` may differ.

  Raises:
    ValueError: naming up to five differing fields, old -> new.
  """
  doc = run_dir.read_config_dict(workdir)
  if doc is None:
    return
  old = flatten(doc)
  for field, value in ADDED_FIELDS.items():
    old.setdefault(field, value)
  new = _plain(config)
  diff = [k for k in sorted(set(old) | set(new))
          if k not in RERUN_FREE_FIELDS and old.get(k) != new.get(k)]
  if diff:
    shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:5])
    raise ValueError(f"workdir {workdir} was trained with a different config ({shown}); "
                     "use a new --workdir")


# The config sections a compiled train step and forward read (bound by closure).
TRACED_SECTIONS = ("extensions", "model", "loss", "mplg", "dfcl", "optim")


def trace_key(config) -> str:
  """What the compiled train step and forward depend on: :data:`TRACED_SECTIONS` as JSON.

  Two configs with the same key can share ``trainer.Programs`` (see ``train.train_run``).
  """
  plain = json.loads(config.to_json_best_effort())
  return json.dumps({k: plain.get(k) for k in TRACED_SECTIONS}, sort_keys=True)
