"""The PWES training objective in one pure function (eq. 18): model -> losses, MPLG, DFCL.

``train.py`` only orchestrates; a research extension replaces MPLG or DFCL here, or in their own
modules (which import no model code), without touching the training loop.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import chex
import jax
import jax.numpy as jnp

from pwes_jax import dfcl
from pwes_jax import losses
from pwes_jax import mplg

MPLG_VARIANTS = ("none", "pplm", "c", "ca", "caf1", "caf2", "full")


def check_config(config) -> None:
  """Fails early, with the field named, on settings the objective cannot use."""
  if config.mplg.variant not in MPLG_VARIANTS:
    raise ValueError(f"config.mplg.variant={config.mplg.variant!r}; expected one of "
                     f"{MPLG_VARIANTS}")
  if len(config.loss.mil_ratios) != 3:
    raise ValueError("config.loss.mil_ratios needs 3 ratios (ME, MaE, background), got "
                     f"{config.loss.mil_ratios}")
  if config.dfcl.enabled and len(config.dfcl.regions) != 3:
    raise ValueError(f"config.dfcl.regions needs 3 counts, got {config.dfcl.regions}")


def snippet_labels(outputs: dict, batch: dict, step: jax.Array, config) -> jax.Array:
  """The combined snippet labels of eq. 15 for a batch: ``[B, T, C+1]``.

  Before ``mplg.pretrain_steps`` (and always for variant ``none``) they are the point labels
  alone; afterwards MPLG's (or the PPLM comparator's) labels computed from the current outputs
  under ``stop_gradient``.
  """
  t = batch["valid"].shape[1]
  num_classes = outputs["suppressed"].shape[-1]
  points = jax.vmap(functools.partial(losses.point_labels_dense, length=t,
                                      num_classes=num_classes))(
      batch["point_index"], batch["point_label"], batch["point_valid"])
  variant = config.mplg.variant
  if variant == "none":
    return points
  sg = jax.lax.stop_gradient
  probs, attention, features = sg(outputs["probs"]), sg(outputs["attention"]), sg(
      outputs["features"])
  if variant == "pplm":
    fn = functools.partial(mplg.pplm_labels, fg_threshold=config.mplg.pplm_fg_threshold,
                           bg_threshold=config.mplg.pplm_bg_threshold)
    mined = jax.vmap(fn)(probs, attention, batch["point_index"], batch["point_label"],
                         batch["point_valid"], batch["valid"])
  else:
    fn = functools.partial(mplg.pseudo_labels, top_ratio=config.mplg.top_ratio,
                           theta=config.mplg.theta, neg_ratio=config.mplg.neg_ratio,
                           variant=variant, threshold_mode=config.mplg.threshold_mode)
    mined = jax.vmap(fn)(probs, attention, features, batch["point_index"], batch["point_label"],
                         batch["point_valid"], batch["valid"])
  mined = mined * batch["valid"][..., None]
  return jnp.where(step >= config.mplg.pretrain_steps, mined, points)


def objective(params: Any, batch: dict, rng: jax.Array, bank: Optional[dfcl.MemoryBank],
              step: jax.Array, *, model, config):
  """Total loss of eq. 18 for one batch.

  Args:
    params: model parameters.
    batch: a padded batch (see ``pwes_jax.data.batching``): ``rgb, flow [B, T, F]``,
      ``valid [B, T]``, ``point_* [B, N]``, ``video_label [B, C]``, ``video_id [B]``,
      ``batch_valid [B]``.
    rng: dropout key.
    bank: the DFCL memory bank, or None when DFCL is off.
    step: the current step (scalar int), for the pretraining switch.
    model: the Flax module; config: the ConfigDict.

  Returns:
    ``(loss, (metrics, region))``: scalar loss, a dict of scalar metrics, and the batch's
    region vectors ``(vectors [B, R, D], valid [B, R])`` for the bank update (or None).
  """
  valid, row_valid = batch["valid"], batch["batch_valid"]
  b, t = valid.shape
  chex.assert_shape(batch["video_label"], (b, 2))
  out = model.apply({"params": params}, batch["rgb"], batch["flow"], valid, train=True,
                    rngs={"dropout": rng})
  lc = config.loss
  k_max = losses.static_max_k(t, lc.mil_ratios)
  video_labels = jnp.concatenate([batch["video_label"], jnp.ones((b, 1))], axis=-1)
  terms = {
      "mil": losses.mil_loss(out["probs"], video_labels, valid, row_valid, lc.mil_ratios, k_max),
      "mil_suppressed": losses.mil_loss(out["suppressed"], batch["video_label"], valid, row_valid,
                                        lc.mil_ratios[:2], k_max),
      "guide": losses.guide_loss(out["attention"], out["probs"][..., -1], valid, row_valid),
      "sparsity": losses.sparsity_loss(out["attention"], valid, row_valid),
      "mutual": losses.mutual_loss(out["attention_rgb"], out["attention_flow"], valid, row_valid),
  }
  labels = snippet_labels(out, batch, step, config)
  terms["snippet"] = losses.snippet_loss(out["suppressed"], out["probs"], labels, valid,
                                         row_valid)
  weights = {"mil": lc.mil_weight, "mil_suppressed": lc.mil_suppressed_weight,
             "guide": lc.guide_weight, "sparsity": lc.sparsity_weight,
             "mutual": lc.mutual_weight, "snippet": lc.snippet_weight}
  total = sum(weights[k] * v for k, v in terms.items())
  region = None
  if config.dfcl.enabled:
    regions = tuple(config.dfcl.regions)
    vectors, vector_valid, _ = jax.vmap(functools.partial(dfcl.region_vectors, regions=regions))(
        out["features"], labels, valid)
    contrast, aux = dfcl.contrastive_loss(vectors, vector_valid, batch["video_id"], row_valid,
                                          bank, regions, tau=config.dfcl.tau)
    active = (step >= config.mplg.pretrain_steps).astype(jnp.float32)
    terms["contrastive"] = contrast * active
    terms["anchors"] = aux["num_anchors"] * active
    total = total + config.dfcl.weight * terms["contrastive"]
    region = (vectors, vector_valid * active)
  terms["loss"] = total
  terms["labelled_fg"] = jnp.sum(labels[..., :-1]) / jnp.maximum(jnp.sum(row_valid), 1.0)
  terms["labelled_bg"] = jnp.sum(labels[..., -1]) / jnp.maximum(jnp.sum(row_valid), 1.0)
  return total, (terms, region)
