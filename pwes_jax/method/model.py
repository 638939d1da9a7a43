"""The PWES spotting network (paper Section 3.2), as pure Flax Linen modules.

Per video the inputs are ``rgb [T, F]``, ``flow [T, F]`` and a validity mask ``valid [T]`` whose
valid snippets form a prefix (the batching layer pads at the end). Every temporal op zeroes the
padded snippets of its input first, so with "SAME" zero padding an unpadded snippet's output is the
same whatever the padded snippets hold and whatever the bucket length is.

Pipeline (names follow the paper and CO-Net [29], the cross-modal design PWES builds on):

* saliency embedding per modality: ``x * sigmoid(bitwise(other) * channel(x))`` with the channel gate
  from the modality's own masked temporal mean and the bit-wise gate from the *other* modality;
* attention per modality: conv k3 -> hidden, LeakyReLU, dropout, conv k3, LeakyReLU, conv k1 -> 1,
  sigmoid; ``A = (a_rgb + a_flow) / 2``;
* fused features ``X``: both embedded streams concatenated, conv k1 -> D, LeakyReLU, dropout;
* classifier: conv k1 -> C + 1 logits (the TCAM), ``P = sigmoid(TCAM)``, background last;
* suppressed TCAM ``A * P[:, :C]``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pwes_jax.data import layout


def _mask(x: jax.Array, valid: jax.Array) -> jax.Array:
  """Zeroes padded snippets: ``x [B, T, F] * valid [B, T]``."""
  return x * valid[..., None].astype(x.dtype)


class TemporalConv(nn.Module):
  """A 1-D convolution over time that ignores padded snippets (zeroed before the conv)."""
  features: int
  kernel_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, valid: jax.Array) -> jax.Array:
    if self.kernel_size > 1:
      x = _mask(x, valid)
    return nn.Conv(self.features, (self.kernel_size,), padding="SAME", dtype=self.dtype,
                   name="conv")(x)


class SaliencyEmbedding(nn.Module):
  """Saliency compensation of one modality gated by the other (MC-WES embedding, CO-Net style).

  The channel gate acts on the masked temporal mean, a length-1 sequence, where a "SAME" conv of
  any kernel size reduces to its centre tap: it is a dense layer.
  """
  kernel_size: int = 3
  dropout_rate: float = 0.5
  negative_slope: float = 0.2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, other, valid, *, train: bool):
    """Args: x, other [B, T, F]; valid [B, T]. Returns the embedded x [B, T, F]."""
    width = x.shape[-1]
    v = valid[..., None].astype(x.dtype)
    mean = jnp.sum(x * v, axis=1, keepdims=True) / jnp.maximum(jnp.sum(v, axis=1, keepdims=True),
                                                              1.0)  # [B, 1, F]
    channel = nn.Dense(width, dtype=self.dtype, name="channel")(mean)
    channel = nn.leaky_relu(channel, self.negative_slope)
    channel = nn.Dropout(self.dropout_rate, deterministic=not train)(channel)
    bitwise = TemporalConv(width, self.kernel_size, self.dtype, name="bitwise")(other, valid)
    return x * nn.sigmoid(bitwise * channel)


class AttentionHead(nn.Module):
  """Class-agnostic attention of one modality: ``[B, T, F] -> [B, T]`` in (0, 1)."""
  hidden: int = 512
  kernel_size: int = 3
  dropout_rate: float = 0.5
  negative_slope: float = 0.2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, valid, *, train: bool):
    h = TemporalConv(self.hidden, self.kernel_size, self.dtype, name="conv1")(x, valid)
    h = nn.leaky_relu(h, self.negative_slope)
    h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
    h = TemporalConv(self.hidden, self.kernel_size, self.dtype, name="conv2")(h, valid)
    h = nn.leaky_relu(h, self.negative_slope)
    logit = TemporalConv(1, 1, self.dtype, name="conv3")(h, valid)
    return nn.sigmoid(logit[..., 0].astype(jnp.float32))


class PWESModel(nn.Module):
  """The whole network. Call with ``rgb, flow [B, T, F]``, ``valid [B, T]``.

  Returns a dict of float32 arrays: ``attention [B, T]``, ``attention_rgb [B, T]``,
  ``attention_flow [B, T]``, ``tcam [B, T, C+1]`` (logits), ``probs [B, T, C+1]``,
  ``suppressed [B, T, C]``, ``features [B, T, D]`` (the fused X, after the dropout that
  precedes the classifier) and ``features_before_dropout [B, T, D]`` (the same X before that
  dropout; equal to ``features`` when not training).
  """
  embed_dim: int = 2048
  attention_hidden: int = 512
  embed_kernel: int = 3
  attention_kernel: int = 3
  fusion_kernel: int = 1
  classifier_kernel: int = 1
  dropout_rate: float = 0.5
  negative_slope: float = 0.2
  num_classes: int = layout.NUM_CLASSES  # ME, MaE; background is index C
  dtype: Any = jnp.float32  # compute dtype; params stay float32.

  @nn.compact
  def __call__(self, rgb, flow, valid, *, train: bool = False):
    if rgb.ndim != 3 or flow.shape != rgb.shape or valid.shape != rgb.shape[:2]:
      raise ValueError(f"PWESModel needs rgb, flow [B, T, F] of one shape and valid [B, T]; got "
                       f"rgb {rgb.shape}, flow {flow.shape}, valid {valid.shape}")
    valid = valid.astype(jnp.float32)
    rgb = _mask(rgb.astype(self.dtype), valid)
    flow = _mask(flow.astype(self.dtype), valid)
    common = dict(dropout_rate=self.dropout_rate, negative_slope=self.negative_slope,
                  dtype=self.dtype)
    e_rgb = SaliencyEmbedding(self.embed_kernel, name="embed_rgb", **common)(
        rgb, flow, valid, train=train)
    e_flow = SaliencyEmbedding(self.embed_kernel, name="embed_flow", **common)(
        flow, rgb, valid, train=train)
    a_rgb = AttentionHead(self.attention_hidden, self.attention_kernel, name="attention_rgb",
                          **common)(e_rgb, valid, train=train)
    a_flow = AttentionHead(self.attention_hidden, self.attention_kernel, name="attention_flow",
                           **common)(e_flow, valid, train=train)
    fused = jnp.concatenate([e_rgb, e_flow], axis=-1)
    x = TemporalConv(self.embed_dim, self.fusion_kernel, self.dtype, name="fusion")(fused, valid)
    x = nn.leaky_relu(x, self.negative_slope)
    x_before_dropout = x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    tcam = TemporalConv(self.num_classes + 1, self.classifier_kernel, self.dtype,
                        name="classifier")(x, valid).astype(jnp.float32)
    attention = 0.5 * (a_rgb + a_flow)
    probs = nn.sigmoid(tcam)
    return {
        "attention": attention,
        "attention_rgb": a_rgb,
        "attention_flow": a_flow,
        "tcam": tcam,
        "probs": probs,
        "suppressed": attention[..., None] * probs[..., :self.num_classes],
        "features": x.astype(jnp.float32),
        "features_before_dropout": x_before_dropout.astype(jnp.float32),
    }


def build_model(model_config) -> PWESModel:
  """Builds the network from a config's ``model`` section."""
  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[model_config.get("dtype", "float32")]
  return PWESModel(
      embed_dim=model_config.embed_dim,
      attention_hidden=model_config.attention_hidden,
      embed_kernel=model_config.embed_kernel,
      attention_kernel=model_config.attention_kernel,
      fusion_kernel=model_config.fusion_kernel,
      classifier_kernel=model_config.classifier_kernel,
      dropout_rate=model_config.dropout_rate,
      negative_slope=model_config.negative_slope,
      dtype=dtype,
  )


def init_params(model: PWESModel, key: jax.Array, feature_dim: int) -> Any:
  """The model's initial parameters for rgb and flow features of width ``feature_dim``.

  Args:
    model: the network (:func:`build_model`).
    key: the ``params`` initializer key.
    feature_dim: ``F``, the width of the rgb and flow features.

  Returns:
    The ``params`` collection (a nested dict of arrays).
  """
  x = jnp.zeros((1, 8, feature_dim), jnp.float32)
  return model.init({"params": key}, x, x, jnp.ones((1, 8)), train=False)["params"]


def abstract_params(model: PWESModel, feature_dim: int,
                    sharding: jax.sharding.Sharding | None = None) -> Any:
  """The shapes and dtypes of :func:`init_params` (nothing computed): a restore target.

  Args:
    model, feature_dim: as :func:`init_params`.
    sharding: placed on every leaf when given (e.g. one local device).

  Returns:
    The ``params`` tree of ``jax.ShapeDtypeStruct`` leaves.
  """
  abstract = jax.eval_shape(lambda k: init_params(model, k, feature_dim), jax.random.PRNGKey(0))
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                      abstract)
