"""Every check of a run's config and workdir, before any data is touched; messages name the field.

Also loads the run's extension modules (``config.extensions``), since the label miners and loss
terms they register are part of what the config names.
"""

from __future__ import annotations

import importlib
import json
import math

from absl import logging

import jax

from pwes_jax.evaluation import scoring
from pwes_jax.evaluation import operating_points
from pwes_jax.method import objective
from pwes_jax.workdir import run_files

# Config fields that may change between invocations on one workdir without changing results.
RERUN_FREE_FIELDS = ("loso.folds", "loso.parallel_folds", "loso.concurrent_folds", "log_every",
                     "tensorboard", "checkpoint.every_steps", "checkpoint.max_to_keep",
                     "data.cache_dir")

# Fields added after runs were already made, with the value that means "as before"
# (``run_files.ADDED_FIELDS``: a run's config.json is upgraded with them where it is read).
ADDED_FIELDS = run_files.ADDED_FIELDS

_POSITIVE_INTS = ("optim.steps", "optim.batch_size", "log_every", "checkpoint.every_steps",
                  "checkpoint.max_to_keep", "data.max_points", "data.max_buckets",
                  "data.bucket_multiple", "loso.parallel_folds", "loso.concurrent_folds")


def _not_found(e: ImportError, name: str) -> bool:
  """Whether ``e`` says that module ``name`` itself (or a package above it) is not on the path,
  rather than that something the module imports is missing."""
  missing = getattr(e, "name", None)
  return (isinstance(e, ModuleNotFoundError) and missing is not None
          and (name == missing or name.startswith(missing + ".")))


def _where(e: BaseException) -> str:
  """``file:line`` of the innermost frame of ``e``'s traceback outside importlib ('' if none)."""
  if isinstance(e, SyntaxError):
    return f"{e.filename}:{e.lineno}" if e.filename else ""
  tb, where = e.__traceback__, ""
  while tb is not None:
    code = tb.tb_frame.f_code
    if not code.co_filename.startswith("<frozen"):
      where = f"{code.co_filename}:{tb.tb_lineno}"
    tb = tb.tb_next
  return where


def load_extensions(config) -> None:
  """Imports every module of ``config.extensions`` (they register miners and loss terms).

  Raises:
    ValueError: naming the field and the module, in one line: when the module is not found
      (with the ``PYTHONPATH`` hint), or when importing it fails (the error, and where it was
      raised, inside the module or what it imports).
  """
  for name in tuple(config.get("extensions", ())):
    try:
      importlib.import_module(name)
    except Exception as e:  # pylint: disable=broad-except  (a user module may raise anything)
      if isinstance(e, ImportError) and _not_found(e, name):
        raise ValueError(f"config.extensions: cannot import {name!r}: module {e.name!r} not "
                         "found; give a module path importable from the working directory, "
                         "e.g. examples.temporal_smoothness, or add the directory holding it to "
                         "PYTHONPATH (PYTHONPATH=/path/to/dir python -m launch.main ...)"
                         ) from None
      message = " ".join(str(e).split())
      raise ValueError(f"config.extensions: importing {name!r} failed: {type(e).__name__}: "
                       f"{message} (at {_where(e)})") from None


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
    holder = config[section] if section else config
    # A config written before a field was added holds what it meant then.
    value = holder.get(name, ADDED_FIELDS[field]) if field in ADDED_FIELDS else holder[name]
    need(isinstance(value, int) and not isinstance(value, bool) and value >= 1, field, value,
         "must be a positive integer")
  need(config.mplg.pretrain_steps >= 0, "mplg.pretrain_steps", config.mplg.pretrain_steps,
       "must be >= 0")

  def number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)

  m, o = config.model, config.optim
  for field in ("embed_dim", "attention_hidden", "embed_kernel", "attention_kernel",
                "fusion_kernel", "classifier_kernel"):
    need(isinstance(m[field], int) and m[field] >= 1, f"model.{field}", m[field],
         "must be a positive integer")
  need(number(m.dropout_rate) and 0 <= m.dropout_rate < 1, "model.dropout_rate",
       m.dropout_rate, "must be in [0, 1)")
  need(number(m.negative_slope) and 0 <= m.negative_slope < 1, "model.negative_slope",
       m.negative_slope, "must be in [0, 1) (LeakyReLU slope)")
  need(number(o.learning_rate) and 0 < o.learning_rate < math.inf, "optim.learning_rate",
       o.learning_rate, "must be a positive finite number")
  for field in ("b1", "b2"):
    need(number(o[field]) and 0 <= o[field] < 1, f"optim.{field}", o[field], "must be in [0, 1)")
  need(number(o.weight_decay) and 0 <= o.weight_decay < math.inf, "optim.weight_decay",
       o.weight_decay, "must be >= 0 and finite")
  # Loss weights: only a negative weight is refused (NaN/Inf show up at once as a named
  # non-finite loss through the NaN guard).
  for field, value in config.loss.items():
    if field.endswith("_weight"):
      need(number(value) and not value < 0, f"loss.{field}", value, "must be >= 0")
  def counts(v, n):
    return (isinstance(v, (tuple, list)) and len(v) == n
            and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v))

  def flag(section, name):
    value = config[section].get(name, ADDED_FIELDS[f"{section}.{name}"])
    need(isinstance(value, bool), f"{section}.{name}", value, "must be True or False")

  for section, name in (("mplg", "point_classes_only"), ("mplg", "features_before_dropout"),
                        ("dfcl", "main_region"), ("dfcl", "features_before_dropout"),
                        ("inference", "class_wise_nms")):
    flag(section, name)
  mil_k = config.loss.get("mil_k_snippets", (0, 0, 0))
  need(counts(mil_k, 3), "loss.mil_k_snippets", tuple(mil_k),
       "must be 3 integers >= 0 (ME, MaE, background; 0 = the ratio loss.mil_ratios)")
  caps = config.inference.get("max_per_class", (0, 0))
  need(counts(caps, 2), "inference.max_per_class", tuple(caps),
       "must be 2 integers >= 0 (ME, MaE; 0 = no cap)")
  need(len(config.loss.mil_ratios) == 3 and all(number(r) and r > 0
                                                 for r in config.loss.mil_ratios),
       "loss.mil_ratios", tuple(config.loss.mil_ratios), "must be 3 positive numbers")
  need(number(config.mplg.top_ratio) and 0 < config.mplg.top_ratio <= 1, "mplg.top_ratio",
       config.mplg.top_ratio, "must be in (0, 1]")
  need(number(config.mplg.neg_ratio) and config.mplg.neg_ratio >= 0, "mplg.neg_ratio",
       config.mplg.neg_ratio, "must be >= 0")
  need(number(config.dfcl.weight) and not config.dfcl.weight < 0, "dfcl.weight",
       config.dfcl.weight, "must be >= 0")
  need(len(config.dfcl.regions) == 3 and all(isinstance(r, int) and r >= 1
                                              for r in config.dfcl.regions),
       "dfcl.regions", tuple(config.dfcl.regions), "must be 3 positive integers")
  need(number(config.inference.me_max_seconds) and config.inference.me_max_seconds > 0,
       "inference.me_max_seconds", config.inference.me_max_seconds, "must be positive")
  need(number(config.inference.flank_ratio) and config.inference.flank_ratio >= 0,
       "inference.flank_ratio", config.inference.flank_ratio, "must be >= 0")
  need(config.model.dtype in ("float32", "bfloat16"), "model.dtype", config.model.dtype,
       "must be 'float32' or 'bfloat16'")
  need(config.eval.protocol in scoring.PROTOCOLS, "eval.protocol", config.eval.protocol,
       f"must be one of {scoring.PROTOCOLS}")
  honest = config.eval.get("honest_point", operating_points.DEFAULT_HONEST_POINT)
  need(honest in operating_points.HONEST_POINTS, "eval.honest_point", honest,
       f"must be one of {operating_points.HONEST_POINTS}")
  try:
    scoring.settings(me_seconds=config.eval.get("me_seconds", scoring.ME_SECONDS),
                        me_long_seconds=config.eval.get("me_long_seconds",
                                                        scoring.ME_LONG_SECONDS),
                        max_per_video=config.eval.get("max_per_video", scoring.MAX_PER_VIDEO))
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

  An unreadable ``config.json`` (empty, half-written) is set aside with a warning and the
  workdir is treated as new for the config (``run_files.read_config_dict``).

  Raises:
    ValueError: naming up to five differing fields, old -> new.
  """
  doc = run_files.read_config_dict(workdir, set_aside_damaged=True)
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


def warn_unannotated_folds(dataset, folds) -> list:
  """Warns about every fold whose training videos hold no annotated interval (its MIL and
  point losses have no positive to learn from); returns those fold indices.

  Args:
    dataset: the run's ``layout.Dataset``.
    folds: the folds to train (``data.folds.Fold``).
  """
  annotated = {a.video for a in dataset.annotations}
  empty = [f.index for f in folds if not any(v in annotated for v in f.train_videos)]
  for index in empty:
    logging.warning("fold %d: none of its %d training videos has an annotated interval; it "
                    "learns no expression (check the dataset's annotations.csv)", index,
                    len(next(f for f in folds if f.index == index).train_videos))
  return empty


def config_fields(config) -> dict:
  """``{"section.field": value}`` of every field of the config (JSON values): what every process
  of one run must share (``sharding.agree`` names the first field that differs)."""
  return _plain(config)
