"""The PWES training objective in one pure function (paper eq. 15 and eq. 18), built from parts
registered by name.

Two kinds of parts plug in by name, so a research extension lives in its own module and is
selected by the config without editing this file (docs/extending.md walks through one):

* **Label miners** (``config.mplg.variant``) turn the network's outputs into snippet labels
  after ``config.mplg.pretrain_steps`` (eq. 15). Built in: ``none`` (point labels only),
  ``pplm`` (the PPLM-style comparator) and the MPLG compositions ``c``, ``ca``, ``caf1``,
  ``caf2``, ``full`` (Section 3.3, Table II). Signature::

      miner(outputs: dict, batch: dict, config) -> labels  # [B, T, C+1]

  ``outputs`` are the model's outputs under ``stop_gradient`` (``attention [B, T]``,
  ``probs [B, T, C+1]``, ``suppressed [B, T, C]``, ``features [B, T, D]``, ...); ``batch`` is
  the padded batch (keys below); ``labels`` are non-negative snippet labels, background last.
  The objective zeroes padded snippets of the result itself.

* **Loss terms** (``config.loss.terms``, summed in that order) are the weighted parts of
  eq. 18. Built in: ``mil`` (eq. 12), ``mil_suppressed`` (eq. 13), ``guide``, ``sparsity``,
  ``mutual`` (eq. 14) and ``snippet`` (eq. 16). Signature::

      term(outputs: dict, batch: dict, labels, config) -> scalar loss

  with ``labels [B, T, C+1]`` the eq. 15 labels of this step. The weight of term ``name`` is
  ``config.loss.<name>_weight`` when the config has that field, else the ``default_weight``
  it was registered with. Every term also appears, unweighted, in the step's metrics.

The DFCL contrastive term (eq. 17, ``config.dfcl``) is not a plain term: it also returns the
region vectors the train step writes to the memory bank, so it stays here, gated by
``config.dfcl.enabled`` and switched on with the mined labels.

Batch keys (``pwes_jax.data.batching``): ``rgb, flow [B, T, F]``, ``valid [B, T]``,
``point_index, point_label [B, N]`` int32, ``point_valid [B, N]``, ``video_label [B, C]``,
``video_id [B]`` int32 (-1 on padding) and ``row_valid [B]`` (1 on real rows).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import chex
import jax
import jax.numpy as jnp

from pwes_jax.method import dfcl
from pwes_jax.method import losses
from pwes_jax.method import mplg

LabelMiner = Callable[[dict, dict, Any], jax.Array]
LossTerm = Callable[[dict, dict, jax.Array, Any], jax.Array]


@dataclasses.dataclass(frozen=True)
class _Miner:
  fn: LabelMiner
  check: Optional[Callable[[Any], None]]


@dataclasses.dataclass(frozen=True)
class _Term:
  fn: LossTerm
  default_weight: float


_MINERS: dict = {}
_TERMS: dict = {}


# Eq. 18's terms, in the paper's order: ``config.loss.terms`` of every shipped config.
PAPER_TERMS = ("mil", "mil_suppressed", "guide", "sparsity", "mutual", "snippet")


def register_label_miner(name: str, *, check: Optional[Callable[[Any], None]] = None):
  """Decorator registering ``miner(outputs, batch, config) -> [B, T, C+1]`` as ``name``.

  Args:
    name: the value of ``config.mplg.variant`` that selects it.
    check: optional ``check(config)`` raising ValueError on settings the miner cannot use;
      called by ``training.checks`` before any data is touched.

  Raises:
    ValueError: if ``name`` is already registered.
  """
  def register(fn: LabelMiner) -> LabelMiner:
    if name in _MINERS:
      raise ValueError(f"label miner {name!r} is already registered")
    _MINERS[name] = _Miner(fn, check)
    return fn
  return register


def register_loss_term(name: str, *, default_weight: float = 1.0):
  """Decorator registering ``term(outputs, batch, labels, config) -> scalar`` as ``name``.

  Args:
    name: the entry of ``config.loss.terms`` that selects it (and its metric's name).
    default_weight: its weight when the config has no ``loss.<name>_weight`` field.

  Raises:
    ValueError: if ``name`` is already registered or is a metric name the objective uses.
  """
  def register(fn: LossTerm) -> LossTerm:
    if name in _TERMS or name in _RESERVED or name.startswith("pl_"):
      raise ValueError(f"loss term {name!r} is already registered or reserved")
    _TERMS[name] = _Term(fn, float(default_weight))
    return fn
  return register


_RESERVED = ("loss", "contrastive", "anchors", "labelled_fg", "labelled_bg", "grad_norm",
             "active")


def label_miners() -> tuple:
  """Names of the registered label miners (values of ``config.mplg.variant``)."""
  return tuple(_MINERS)


def loss_terms() -> tuple:
  """Names of the registered loss terms (entries of ``config.loss.terms``)."""
  return tuple(_TERMS)


def check_config(config) -> None:
  """Fails early, naming the field, on miner/term names or settings the objective cannot use."""
  variant = config.mplg.variant
  if variant not in _MINERS:
    raise ValueError(f"config.mplg.variant={variant!r}; expected one of {label_miners()}")
  terms = tuple(config.loss.terms)
  unknown = [t for t in terms if t not in _TERMS]
  if unknown or not terms or len(set(terms)) != len(terms):
    raise ValueError(f"config.loss.terms={terms!r}: every entry must be one registered loss "
                     f"term, none twice; registered: {loss_terms()}")
  if len(config.loss.mil_ratios) != 3:
    raise ValueError("config.loss.mil_ratios needs 3 ratios (ME, MaE, background), got "
                     f"{config.loss.mil_ratios}")
  if config.dfcl.enabled and len(config.dfcl.regions) != 3:
    raise ValueError(f"config.dfcl.regions needs 3 counts, got {config.dfcl.regions}")
  check = _MINERS[variant].check
  if check is not None:
    check(config)


def term_weight(config, name: str) -> float:
  """``config.loss.<name>_weight`` if the config has it, else the term's default weight."""
  field = f"{name}_weight"
  return config.loss[field] if field in config.loss else _TERMS[name].default_weight


# ------------------------------------------------------------------------------------------------
# Eq. 15: snippet labels.


def point_labels(batch: dict, num_classes: int) -> jax.Array:
  """The point labels as dense snippet rows: ``[B, T, C+1]`` (zero away from the points)."""
  t = batch["valid"].shape[1]
  return jax.vmap(functools.partial(losses.point_labels_dense, length=t,
                                    num_classes=num_classes))(
      batch["point_index"], batch["point_label"], batch["point_valid"])


@register_label_miner("none")
def _no_mining(outputs: dict, batch: dict, config) -> jax.Array:
  """The baseline: the point labels stay the only snippet labels."""
  del config
  return point_labels(batch, outputs["suppressed"].shape[-1])


@register_label_miner("pplm")
def _pplm(outputs: dict, batch: dict, config) -> jax.Array:
  """The PPLM-style comparator (``mplg.pplm_labels``)."""
  fn = functools.partial(mplg.pplm_labels, fg_threshold=config.mplg.pplm_fg_threshold,
                         bg_threshold=config.mplg.pplm_bg_threshold,
                         point_classes_only=config.mplg.get("point_classes_only", False))
  return jax.vmap(fn)(outputs["probs"], outputs["attention"], batch["point_index"],
                      batch["point_label"], batch["point_valid"], batch["valid"])


def _check_mplg(config) -> None:
  try:
    mplg.check_options(top_ratio=config.mplg.top_ratio, theta=config.mplg.theta,
                       neg_ratio=config.mplg.neg_ratio, variant=config.mplg.variant,
                       threshold_mode=config.mplg.threshold_mode)
  except ValueError as e:
    raise ValueError(f"config.mplg: {e}") from None


def _mplg_miner(outputs: dict, batch: dict, config) -> jax.Array:
  """MPLG (Section 3.3) in the composition ``config.mplg.variant``."""
  fn = functools.partial(mplg.pseudo_labels, top_ratio=config.mplg.top_ratio,
                         theta=config.mplg.theta, neg_ratio=config.mplg.neg_ratio,
                         variant=config.mplg.variant, threshold_mode=config.mplg.threshold_mode,
                         point_classes_only=config.mplg.get("point_classes_only", False))
  return jax.vmap(fn)(outputs["probs"], outputs["attention"], outputs["features"],
                      batch["point_index"], batch["point_label"], batch["point_valid"],
                      batch["valid"])


for _variant in mplg.VARIANTS:
  register_label_miner(_variant, check=_check_mplg)(_mplg_miner)


def mined_labels(outputs: dict, batch: dict, config) -> jax.Array:
  """The labels of the miner ``config.mplg.variant`` for a batch: ``[B, T, C+1]``.

  Computed from the outputs under ``stop_gradient`` and zeroed on padded snippets; they are
  what eq. 15 uses once pretraining is over (:func:`snippet_labels`).
  """
  points = point_labels(batch, outputs["suppressed"].shape[-1])
  held = {k: jax.lax.stop_gradient(v) for k, v in outputs.items()}
  if config.mplg.get("features_before_dropout", False) and "features_before_dropout" in held:
    held["features"] = held["features_before_dropout"]  # similarities on X before dropout
  mined = _MINERS[config.mplg.variant].fn(held, batch, config)
  chex.assert_equal_shape([mined, points])
  return mined * batch["valid"][..., None]


def snippet_labels(outputs: dict, batch: dict, step: jax.Array, config,
                   mined: Optional[jax.Array] = None) -> jax.Array:
  """The combined snippet labels of eq. 15 for a batch: ``[B, T, C+1]``.

  Before ``config.mplg.pretrain_steps`` they are the point labels alone; afterwards the labels
  of the miner ``config.mplg.variant`` (:func:`mined_labels`).

  Args:
    outputs: the model's outputs of this step (gradients are stopped here).
    batch: the padded batch.
    step: scalar int, the step being taken.
    config: the run's config.
    mined: :func:`mined_labels` of this batch when the caller has them already.
  """
  points = point_labels(batch, outputs["suppressed"].shape[-1])
  if mined is None:
    mined = mined_labels(outputs, batch, config)
  return jnp.where(step >= config.mplg.pretrain_steps, mined, points)


# Names of the classes in the pseudo-label metrics (layout.CLASS_NAMES, then background).
QUALITY_CLASSES = ("me", "mae", "bg")


def pseudo_label_counts(mined: jax.Array, truth: jax.Array, valid: jax.Array) -> dict:
  """Counts that measure mined pseudo labels against the ground truth, per class.

  The ground truth never enters the loss: these are metrics only. Precision and recall of a
  window of steps are ratios of these counts' sums (``metrics_log`` derives them).

  Args:
    mined: ``[B, T, C+1]`` mined labels in {0, 1} (background last).
    truth: ``[B, T]`` int ground-truth class of each snippet (0..C-1, C = background), -1 where
      unknown or padded.
    valid: ``[B, T]`` snippet mask.

  Returns:
    ``{"pl_<class>_labelled", "pl_<class>_correct", "pl_<class>_true"}`` float32 scalars for
    each class of :data:`QUALITY_CLASSES`: snippets labelled as the class, those of them whose
    true class it is, and snippets whose true class it is (known, valid snippets only).
  """
  num = mined.shape[-1]
  chex.assert_equal_shape([mined[..., 0], truth, valid])
  if num != len(QUALITY_CLASSES):
    raise ValueError(f"pseudo_label_counts: {num} label columns, expected "
                     f"{len(QUALITY_CLASSES)} ({', '.join(QUALITY_CLASSES)})")
  known = (truth >= 0) & (valid > 0)
  gt = jax.nn.one_hot(truth, num, dtype=jnp.float32)  # -1 -> zero row
  q = mplg.label_quality(mined, gt, known)
  out = {}
  for i, name in enumerate(QUALITY_CLASSES):
    for key in ("labelled", "correct", "true"):
      out[f"pl_{name}_{key}"] = q[key][i]
  return out


# ------------------------------------------------------------------------------------------------
# Eq. 18: the weighted terms.


def _mil_fixed_k(config) -> tuple:
  """``config.loss.mil_k_snippets`` (ME, MaE, background): a fixed MIL top-k per class, 0 =
  the ratio ``loss.mil_ratios`` (absent in configs written before the field: all ratios)."""
  return tuple(int(k) for k in config.loss.get("mil_k_snippets", (0, 0, 0)))


def _mil_k_max(length: int, config) -> int:
  """The static top-k bound of a ``length``-snippet bucket under the config's MIL k rule."""
  return max(losses.static_max_k(length, config.loss.mil_ratios), *_mil_fixed_k(config))


@register_loss_term("mil")
def _mil(outputs: dict, batch: dict, labels, config) -> jax.Array:
  """Video-level MIL on the TCAM with the background class (eq. 12)."""
  del labels
  b, t = batch["valid"].shape
  video_labels = jnp.concatenate([batch["video_label"], jnp.ones((b, 1))], axis=-1)
  k_max = _mil_k_max(t, config)
  return losses.mil_loss(outputs["probs"], video_labels, batch["valid"], batch["row_valid"],
                         config.loss.mil_ratios, k_max, _mil_fixed_k(config))


@register_loss_term("mil_suppressed")
def _mil_suppressed(outputs: dict, batch: dict, labels, config) -> jax.Array:
  """Video-level MIL on the suppressed TCAM, foreground only (eq. 13)."""
  del labels
  t = batch["valid"].shape[1]
  k_max = _mil_k_max(t, config)
  return losses.mil_loss(outputs["suppressed"], batch["video_label"], batch["valid"],
                         batch["row_valid"], config.loss.mil_ratios[:2], k_max,
                         _mil_fixed_k(config)[:2])


@register_loss_term("guide")
def _guide(outputs: dict, batch: dict, labels, config) -> jax.Array:
  """Attention against the background probability (eq. 14)."""
  del labels, config
  return losses.guide_loss(outputs["attention"], outputs["probs"][..., -1], batch["valid"],
                           batch["row_valid"])


@register_loss_term("sparsity")
def _sparsity(outputs: dict, batch: dict, labels, config) -> jax.Array:
  """Mean attention (eq. 14)."""
  del labels, config
  return losses.sparsity_loss(outputs["attention"], batch["valid"], batch["row_valid"])


@register_loss_term("mutual")
def _mutual(outputs: dict, batch: dict, labels, config) -> jax.Array:
  """RGB and flow attention agree (eq. 14)."""
  del labels, config
  return losses.mutual_loss(outputs["attention_rgb"], outputs["attention_flow"],
                            batch["valid"], batch["row_valid"])


@register_loss_term("snippet")
def _snippet(outputs: dict, batch: dict, labels, config) -> jax.Array:
  """Snippet-level loss on the eq. 15 labels (eq. 16)."""
  del config
  return losses.snippet_loss(outputs["suppressed"], outputs["probs"], labels, batch["valid"],
                             batch["row_valid"])


def _check_term(name: str, value) -> jax.Array:
  """``value`` if it is a real scalar (checked while tracing, before any step runs).

  Raises:
    ValueError: ``loss term '<name>' returned <shape/dtype>; a loss term must return one real
      scalar`` (a registered term returning a per-example vector, say).
  """
  shape, dtype = jnp.shape(value), jnp.result_type(value)
  if shape != () or not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"loss term {name!r} returned an array of shape {shape} and dtype {dtype}; "
                     "a loss term must return one real scalar (reduce it, e.g. with jnp.mean)")
  return value


def loss_fn(params: Any, batch: dict, rng: jax.Array, bank: Optional[dfcl.MemoryBank],
            step: jax.Array, *, model, config):
  """Total loss of eq. 18 for one batch.

  Args:
    params: model parameters.
    batch: a padded batch (keys in the module docstring).
    rng: dropout key.
    bank: the DFCL memory bank, or None when DFCL is off.
    step: the current step (scalar int), for the pretraining switch.
    model: the Flax module.
    config: the run's config (``loss``, ``mplg``, ``dfcl`` sections).

  Returns:
    ``(loss, (metrics, region_vectors))``: the scalar loss; a dict of scalar metrics (every
    term unweighted, ``loss``, ``labelled_fg``/``labelled_bg`` labels per real row, and with
    DFCL ``contrastive`` and ``anchors``); and the batch's DFCL region vectors
    ``(vectors [B, R, D], valid [B, R])`` to write to the bank (valid zeroed before
    ``pretrain_steps``), or None when DFCL is off.
  """
  valid, row_valid = batch["valid"], batch["row_valid"]
  b, _ = valid.shape
  chex.assert_shape(batch["video_label"], (b, 2))
  # The named scopes only label the compiled program's ops (benchmarks/op_profile.py groups
  # the step's time by them); they change no value.
  with jax.named_scope("model"):
    out = model.apply({"params": params}, batch["rgb"], batch["flow"], valid, train=True,
                      rngs={"dropout": rng})
  with jax.named_scope("mplg"):
    mined = mined_labels(out, batch, config)
    labels = snippet_labels(out, batch, step, config, mined=mined)
  names = tuple(config.loss.terms)
  terms = {}
  for name in names:
    with jax.named_scope(f"loss_{name}"):
      terms[name] = _check_term(name, _TERMS[name].fn(out, batch, labels, config))
  total = sum(term_weight(config, k) * terms[k] for k in names)
  region_vectors = None
  if config.dfcl.enabled:
    regions = tuple(config.dfcl.regions)
    main = bool(config.dfcl.get("main_region", False))
    features = out["features_before_dropout" if config.dfcl.get("features_before_dropout", False)
                   else "features"]
    with jax.named_scope("dfcl"):
      vectors, vector_valid, _ = jax.vmap(
          functools.partial(dfcl.region_vectors, regions=regions, main_region=main))(
              features, labels, valid)
      contrast, aux = dfcl.contrastive_loss(vectors, vector_valid, batch["video_id"], row_valid,
                                            bank, dfcl.slot_counts(regions, main),
                                            tau=config.dfcl.tau)
    active = (step >= config.mplg.pretrain_steps).astype(jnp.float32)
    terms["contrastive"] = contrast * active
    terms["anchors"] = aux["num_anchors"] * active
    total = total + config.dfcl.weight * terms["contrastive"]
    region_vectors = (vectors, vector_valid * active)
  terms["loss"] = total
  terms["labelled_fg"] = jnp.sum(labels[..., :-1]) / jnp.maximum(jnp.sum(row_valid), 1.0)
  terms["labelled_bg"] = jnp.sum(labels[..., -1]) / jnp.maximum(jnp.sum(row_valid), 1.0)
  if "truth" in batch:  # metrics only: how right the miner's labels are
    terms.update(pseudo_label_counts(mined, batch["truth"], valid))
  return total, (terms, region_vectors)
