"""The Inflated 3D ConvNet (I3D, Carreira & Zisserman 2017) as Flax Linen modules.

One network per stream: RGB clips (``C = 3``) and optical-flow clips (``C = 2``), channels last,
``x [N, T, H, W, C]`` with values in ``[-1, 1]`` as in the Kinetics-pretrained weights. The
architecture is InceptionV1 inflated to 3D and mirrors the public ``pytorch-i3d`` project
(piergiaj) module for module, so its checkpoints convert by a name mapping
(:mod:`pwes_jax.extraction.convert`):

* every convolution is a :class:`Unit3D` (submodules ``conv3d``, no bias, and ``bn``, eps 1e-3,
  inference statistics) followed by a ReLU;
* every convolution and max pool uses TensorFlow "SAME" padding per dimension,
  ``pad_total = max(k - s, 0)`` if ``n % s == 0`` else ``max(k - n % s, 0)``, ``pad_lo =
  pad_total // 2``; max pools pad with zeros (as ``pytorch-i3d``'s ``MaxPool3dSamePadding``),
  which after a ReLU is the same as padding with ``-inf``;
* the end points, in order, are :data:`END_POINTS`; ``Mixed_5c`` has 1024 channels.

``I3D(...)(x)`` returns the chosen end point averaged over time and space, ``[N, C_end_point]``
(the 1024-d clip feature by default). The optional ``Logits`` head (``num_classes`` set) is a
1x1x1 convolution with bias applied to that global average. ``pytorch-i3d`` instead averages
``Mixed_5c`` with a ``[2, 7, 7]`` window (stride 1) and leaves the class scores per remaining time
step; since the head is linear, our logits equal the time average of its scores only when its
window covers the whole map (224x224 input, 16 frames). BatchNorm always uses the running averages:
this is a frozen feature extractor, not a trainable backbone.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Optional, Sequence

import chex
import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

FEATURE_DIM = 1024  # Channels of Mixed_5c, the clip feature.
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99  # Flax convention; torch momentum 0.01.

# (end point, kind, arguments). conv: (features, kernel [t, h, w], stride); pool: (window,
# stride); mixed: the six branch widths (b0, b1a, b1b, b2a, b2b, b3b).
_LAYERS = (
    ("Conv3d_1a_7x7", "conv", (64, (7, 7, 7), (2, 2, 2))),
    ("MaxPool3d_2a_3x3", "pool", ((1, 3, 3), (1, 2, 2))),
    ("Conv3d_2b_1x1", "conv", (64, (1, 1, 1), (1, 1, 1))),
    ("Conv3d_2c_3x3", "conv", (192, (3, 3, 3), (1, 1, 1))),
    ("MaxPool3d_3a_3x3", "pool", ((1, 3, 3), (1, 2, 2))),
    ("Mixed_3b", "mixed", (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", "mixed", (128, 128, 192, 32, 96, 64)),
    ("MaxPool3d_4a_3x3", "pool", ((3, 3, 3), (2, 2, 2))),
    ("Mixed_4b", "mixed", (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", "mixed", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", "mixed", (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", "mixed", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", "mixed", (256, 160, 320, 32, 128, 128)),
    ("MaxPool3d_5a_2x2", "pool", ((2, 2, 2), (2, 2, 2))),
    ("Mixed_5b", "mixed", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", "mixed", (384, 192, 384, 48, 128, 128)),
)
END_POINTS = tuple(name for name, _, _ in _LAYERS) + ("Logits",)
STREAM_CHANNELS = {"rgb": 3, "flow": 2}


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TensorFlow "SAME" padding ``(lo, hi)`` of one dimension of length ``size``."""
  if size % stride == 0:
    total = max(kernel - stride, 0)
  else:
    total = max(kernel - size % stride, 0)
  return total // 2, total - total // 2


def _spatial_padding(shape: Sequence[int], kernel: Sequence[int],
                     stride: Sequence[int]) -> list[tuple[int, int]]:
  """SAME padding of the ``T, H, W`` dimensions of ``shape = [N, T, H, W, C]``."""
  return [same_padding(n, k, s) for n, k, s in zip(shape[1:4], kernel, stride)]


def max_pool_same(x: jax.Array, window: Sequence[int], stride: Sequence[int]) -> jax.Array:
  """Max pool of ``x [N, T, H, W, C]`` after zero "SAME" padding (``MaxPool3dSamePadding``)."""
  chex.assert_rank(x, 5)
  pads = [(0, 0)] + _spatial_padding(x.shape, window, stride) + [(0, 0)]
  x = jnp.pad(x, pads)  # Zeros, not -inf, as pytorch-i3d does.
  return lax.reduce_window(x, jnp.array(-jnp.inf, x.dtype), lax.max, (1, *window, 1),
                           (1, *stride, 1), "VALID")


def _global_mean(x: jax.Array) -> jax.Array:
  """``[N, T, H, W, C] -> [N, C]`` mean in float32."""
  return jnp.mean(x.astype(jnp.float32), axis=(1, 2, 3))


CONV_IMPLS = ("auto", "conv3d", "time_sum")


def resolve_conv_impl(conv_impl: str) -> str:
  """``'auto'`` -> ``'time_sum'`` on the CPU backend, ``'conv3d'`` elsewhere."""
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f"I3D: conv_impl must be one of {CONV_IMPLS}, got {conv_impl!r}")
  if conv_impl == "auto":
    return "time_sum" if jax.default_backend() == "cpu" else "conv3d"
  return conv_impl


def conv3d_same(x: jax.Array, kernel: jax.Array, stride: Sequence[int],
                impl: str = "conv3d") -> jax.Array:
  """3-D cross-correlation with TF "SAME" padding, two equal ways.

  ``'conv3d'`` is one XLA 3-D convolution (cuDNN's on a GPU). ``'time_sum'`` writes it as the sum
  over the ``kt`` temporal taps of 2-D convolutions of time-strided slices, ``y[:, t] = sum_dt
  conv2d(x_pad[:, t * s_t + dt], kernel[dt])``; XLA's CPU backend runs those 2-D convolutions
  2-4x faster than its 3-D one (BUILD_NOTES.md), and the result is the same up to float rounding.

  Args:
    x: ``[N, T, H, W, C]``.
    kernel: ``[kt, kh, kw, C, O]``.
    stride: ``(s_t, s_h, s_w)``.
    impl: ``'conv3d'`` or ``'time_sum'``.

  Returns:
    ``[N, ceil(T / s_t), ceil(H / s_h), ceil(W / s_w), O]``.
  """
  chex.assert_rank([x, kernel], [5, 5])
  pads = _spatial_padding(x.shape, kernel.shape[:3], stride)
  if impl == "conv3d":
    return lax.conv_general_dilated(x, kernel, tuple(stride), pads,
                                    dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
  n, t = x.shape[:2]
  kt, st = kernel.shape[0], stride[0]
  t_out = -(-t // st)
  xp = jnp.pad(x, ((0, 0), pads[0], (0, 0), (0, 0), (0, 0)))
  out = None
  for dt in range(kt):
    sl = lax.slice_in_dim(xp, dt, dt + st * (t_out - 1) + 1, stride=st, axis=1)
    y = lax.conv_general_dilated(sl.reshape((n * t_out,) + sl.shape[2:]), kernel[dt],
                                 tuple(stride[1:]), pads[1:],
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    out = y if out is None else out + y
  return out.reshape((n, t_out) + out.shape[1:])


class Conv3D(nn.Module):
  """A 3-D convolution, TF "SAME" padding; parameters as ``nn.Conv``'s (``kernel``, ``bias``)."""
  features: int
  kernel_size: Sequence[int]
  stride: Sequence[int]
  use_bias: bool = False
  dtype: Any = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """``x [N, T, H, W, C] -> [N, T', H', W', features]`` in ``dtype``."""
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (*self.kernel_size, x.shape[-1], self.features), jnp.float32)
    y = conv3d_same(x.astype(self.dtype), kernel.astype(self.dtype), self.stride,
                    resolve_conv_impl(self.conv_impl))
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
      y = y + bias.astype(self.dtype)
    return y


class Unit3D(nn.Module):
  """Conv3d (SAME padding) -> BatchNorm (running averages) -> ReLU, as ``pytorch-i3d``'s Unit3D.

  The convolution runs in ``dtype``; its parameters, the BatchNorm and the output are float32.
  ``conv_impl`` picks how the convolution is computed (:func:`conv3d_same`); the parameters are
  the same either way.
  """
  features: int
  kernel: Sequence[int] = (1, 1, 1)
  stride: Sequence[int] = (1, 1, 1)
  use_batch_norm: bool = True
  use_bias: bool = False
  activation: bool = True
  dtype: Any = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """``x [N, T, H, W, C_in] -> [N, T', H', W', features]`` float32, ``T' = ceil(T / s_t)``."""
    chex.assert_rank(x, 5)
    y = Conv3D(self.features, tuple(self.kernel), tuple(self.stride), use_bias=self.use_bias,
               dtype=self.dtype, conv_impl=self.conv_impl, name="conv3d")(x)
    y = y.astype(jnp.float32)
    if self.use_batch_norm:
      y = nn.BatchNorm(use_running_average=True, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                       dtype=jnp.float32, param_dtype=jnp.float32, name="bn")(y)
    if self.activation:
      y = nn.relu(y)
    return y


class InceptionBlock(nn.Module):
  """An inflated Inception module: four branches concatenated on channels.

  ``b0`` 1x1x1; ``b1a`` 1x1x1 -> ``b1b`` 3x3x3; ``b2a`` 1x1x1 -> ``b2b`` 3x3x3; a 3x3x3 stride-1
  zero-padded max pool -> ``b3b`` 1x1x1. ``features`` are the widths of
  ``(b0, b1a, b1b, b2a, b2b, b3b)``; the output has ``b0 + b1b + b2b + b3b`` channels.
  """
  features: Sequence[int]
  dtype: Any = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """``x [N, T, H, W, C_in] -> [N, T, H, W, o0 + o2 + o4 + o5]`` float32."""
    o = self.features
    unit = functools.partial(Unit3D, dtype=self.dtype, conv_impl=self.conv_impl)
    b0 = unit(o[0], name="b0")(x)
    b1 = unit(o[2], (3, 3, 3), name="b1b")(unit(o[1], name="b1a")(x))
    b2 = unit(o[4], (3, 3, 3), name="b2b")(unit(o[3], name="b2a")(x))
    b3 = unit(o[5], name="b3b")(max_pool_same(x, (3, 3, 3), (1, 1, 1)))
    return jnp.concatenate([b0, b1, b2, b3], axis=-1)


def _check_end_point(end_point: str, num_classes: Optional[int]) -> None:
  if end_point not in END_POINTS:
    raise ValueError(f"I3D: unknown end_point {end_point!r}; valid end points are "
                     f"{', '.join(END_POINTS)}")
  if end_point == "Logits" and num_classes is None:
    raise ValueError("I3D: end_point 'Logits' needs num_classes (the weights have no "
                     "classification head)")


class I3D(nn.Module):
  """The I3D trunk (``Conv3d_1a_7x7`` .. ``Mixed_5c``) and an optional ``logits`` head.

  Attributes:
    num_classes: classes of the ``Logits`` head (400 for Kinetics), or None for no head.
    dtype: compute dtype of the convolutions (e.g. ``jnp.bfloat16``); parameters, BatchNorm, pooling
      and outputs stay float32.
    conv_impl: ``'conv3d'``, ``'time_sum'`` (2-D convolutions summed over time taps, faster on
      XLA's CPU backend) or ``'auto'`` (``time_sum`` on CPU, ``conv3d`` elsewhere); see
      :func:`conv3d_same`. The parameters do not depend on it.
  """
  num_classes: Optional[int] = None
  dtype: Any = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, *, end_point: str = "Mixed_5c") -> jax.Array:
    """Clip features or class logits.

    Args:
      x: clips ``[N, T, H, W, C]``, ``C`` = 3 (rgb) or 2 (flow), values in ``[-1, 1]``; any
        ``T, H, W >= 1`` (SAME padding; 224x224 and >= 8 frames are what the weights saw).
      end_point: a name in :data:`END_POINTS`; its output is averaged over time and space.

    Returns:
      ``[N, C_end_point]`` float32: ``[N, 1024]`` for ``Mixed_5c``, ``[N, num_classes]`` for
      ``Logits``.
    """
    _check_end_point(end_point, self.num_classes)
    if x.ndim != 5:
      raise ValueError(f"I3D: expected clips [N, T, H, W, C], got shape {x.shape}")
    channels = x.shape[-1]
    if self.is_initializing():
      if channels not in STREAM_CHANNELS.values():
        raise ValueError(f"I3D: expected 3 (rgb) or 2 (flow) channels last, got shape {x.shape}")
    elif self.has_variable("params", "Conv3d_1a_7x7"):
      expected = self.variables["params"]["Conv3d_1a_7x7"]["conv3d"]["kernel"].shape[3]
      if channels != expected:
        raise ValueError(f"I3D: the weights expect {expected} input channels (last axis), got "
                         f"clips of shape {x.shape}")
    for name, kind, args in _LAYERS:
      if kind == "conv":
        x = Unit3D(*args, dtype=self.dtype, conv_impl=self.conv_impl, name=name)(x)
      elif kind == "pool":
        x = max_pool_same(x, *args)
      else:
        x = InceptionBlock(args, dtype=self.dtype, conv_impl=self.conv_impl, name=name)(x)
      if name == end_point:
        return _global_mean(x)
    features = _global_mean(x)  # [N, 1024]
    logits = Unit3D(self.num_classes, use_batch_norm=False, use_bias=True, activation=False,
                    dtype=self.dtype, name="logits")(features[:, None, None, None, :])
    return logits[:, 0, 0, 0, :]  # [N, num_classes]


def init_variables(rng: jax.Array, in_channels: int, *, num_classes: Optional[int] = None,
                   frames: int = 8, size: int = 32) -> dict:
  """Randomly initialised ``{'params', 'batch_stats'}`` from the Flax initialisers.

  The shapes do not depend on ``frames`` and ``size``. Compiling this takes ~30 s on a CPU (60
  differently shaped random kernels): tests should use :func:`random_variables`.
  """
  model = I3D(num_classes=num_classes)
  end_point = "Mixed_5c" if num_classes is None else "Logits"
  x = jnp.zeros((1, frames, size, size, in_channels), jnp.float32)
  variables = jax.jit(functools.partial(model.init, end_point=end_point))(rng, x)
  return {"params": variables["params"], "batch_stats": variables["batch_stats"]}


def random_variables(seed: int, in_channels: int, *, num_classes: Optional[int] = None) -> dict:
  """Cheap random variables (numpy) with the shapes of :func:`init_variables`, for tests.

  Flax's ``init`` compiles the random initialisers of 60 differently shaped kernels, which takes
  tens of seconds on a CPU; this draws conv kernels ``N(0, 1 / fan_in)``, conv biases 0.01 * N(0,
  1), BatchNorm scales in ``[0.5, 1.5]``, biases and means ``0.1 * N(0, 1)`` and variances in
  ``[0.5, 1.5]``, all float32.
  """
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    shape = leaf.shape
    if name == "kernel":
      fan_in = int(np.prod(shape[:-1]))
      value = rng.standard_normal(shape) / np.sqrt(fan_in)
    elif name in ("scale", "var"):
      value = rng.uniform(0.5, 1.5, shape)
    elif name == "bias" and path[-2].key == "conv3d":
      value = 0.01 * rng.standard_normal(shape)
    else:  # BatchNorm bias and mean.
      value = 0.1 * rng.standard_normal(shape)
    return value.astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, variable_shapes(in_channels, num_classes))


@functools.lru_cache(maxsize=8)
def _variable_shapes(in_channels: int, num_classes: Optional[int]) -> Any:
  return jax.eval_shape(
      functools.partial(init_variables, in_channels=in_channels, num_classes=num_classes),
      jax.random.key(0))


def variable_shapes(in_channels: int, num_classes: Optional[int] = None) -> dict:
  """``jax.ShapeDtypeStruct`` tree of :func:`init_variables` (traced, nothing computed)."""
  return jax.tree_util.tree_map(lambda leaf: leaf, _variable_shapes(in_channels, num_classes))


def param_count(tree: Mapping[str, Any]) -> int:
  """Number of parameters: of ``tree['params']`` when given variables, else of every leaf."""
  if "params" in tree:
    tree = tree["params"]
  return int(sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree)))


def variables_info(variables: Mapping[str, Any]) -> tuple[int, Optional[int]]:
  """``(in_channels, num_classes)`` read from the shapes of a variables tree."""
  try:
    params = variables["params"]
    in_channels = int(params["Conv3d_1a_7x7"]["conv3d"]["kernel"].shape[3])
  except (KeyError, TypeError, IndexError) as e:
    raise ValueError("I3D: variables lack params/Conv3d_1a_7x7/conv3d/kernel "
                     "[7, 7, 7, C, 64]") from e
  num_classes = None
  if "logits" in params:
    num_classes = int(params["logits"]["conv3d"]["kernel"].shape[-1])
  return in_channels, num_classes


class Extractor:
  """A compiled I3D forward pass with its variables on the device, made by :func:`make_extractor`.

  Calling it with clips ``[N, T, H, W, C]`` (float, in ``[-1, 1]``) returns float32
  ``[N, C_end_point]`` (``[N, 1024]`` by default). It compiles once per input shape and dtype;
  ``num_traces`` counts the compilations. The variables are an argument of the jitted function,
  not constants folded into it.
  """

  def __init__(self, variables: Mapping[str, Any], *, dtype: Any = jnp.float32,
               end_point: str = "Mixed_5c"):
    self.in_channels, self.num_classes = variables_info(variables)
    _check_end_point(end_point, self.num_classes)
    self.end_point = end_point
    self.model = I3D(num_classes=self.num_classes, dtype=dtype)
    self.variables = jax.device_put(
        {"params": variables["params"], "batch_stats": variables["batch_stats"]})
    self.num_traces = 0
    self._forward: Callable[..., jax.Array] = jax.jit(self._apply)

  def _apply(self, variables: Mapping[str, Any], x: jax.Array) -> jax.Array:
    self.num_traces += 1
    return self.model.apply(variables, x, end_point=self.end_point).astype(jnp.float32)

  def __call__(self, x: jax.Array) -> jax.Array:
    shape = tuple(np.shape(x))
    if len(shape) != 5 or shape[-1] != self.in_channels:
      raise ValueError(f"I3D extractor: expected clips [N, T, H, W, {self.in_channels}] "
                       f"(channels last), got shape {shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise ValueError(f"I3D extractor: expected float clips scaled to [-1, 1], got dtype "
                       f"{x.dtype}")
    return self._forward(self.variables, x)


def make_extractor(variables: Mapping[str, Any], *, dtype: Any = jnp.float32,
                   end_point: str = "Mixed_5c") -> Extractor:
  """Returns ``f(x [N, T, H, W, C]) -> [N, 1024]`` float32, jitted once per input shape."""
  return Extractor(variables, dtype=dtype, end_point=end_point)
