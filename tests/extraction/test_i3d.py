"""Tests of the Flax I3D against an independent table of the published architecture."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pwes_jax.extraction import i3d

# The published I3D (Carreira & Zisserman 2017, InceptionV1 inflated), as in pytorch-i3d.
# Stem convolutions: (name, kernel [t, h, w], input channels (None: the stream's), output).
STEM = (
    ("Conv3d_1a_7x7", (7, 7, 7), None, 64),
    ("Conv3d_2b_1x1", (1, 1, 1), 64, 64),
    ("Conv3d_2c_3x3", (3, 3, 3), 64, 192),
)
# Inception blocks: (name, input channels, widths of b0, b1a, b1b, b2a, b2b, b3b).
MIXED = (
    ("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128)),
)
END_POINT_CHANNELS = {
    "Conv3d_1a_7x7": 64, "MaxPool3d_2a_3x3": 64, "Conv3d_2b_1x1": 64, "Conv3d_2c_3x3": 192,
    "MaxPool3d_3a_3x3": 192, "Mixed_3b": 256, "Mixed_3c": 480, "MaxPool3d_4a_3x3": 480,
    "Mixed_4b": 512, "Mixed_4c": 512, "Mixed_4d": 512, "Mixed_4e": 528, "Mixed_4f": 832,
    "MaxPool3d_5a_2x2": 832, "Mixed_5b": 832, "Mixed_5c": 1024,
}
# Parameters (conv kernels + BatchNorm scale and bias), by the arithmetic of the table above:
# rgb trunk 12,287,264; flow trunk 12,265,312; rgb with the 400-class logits 12,697,264
# (+ 1024 * 400 + 400); BatchNorm running statistics 14,560 (7,280 channels x mean, var).
RGB_TRUNK_PARAMS = 12_287_264
FLOW_TRUNK_PARAMS = 12_265_312
RGB_KINETICS_PARAMS = 12_697_264
BATCH_STATS = 14_560


def units(in_channels, num_classes=None):
  """Every conv as (module path, kernel [t, h, w], in, out, has_bn, has_bias), from the table."""
  out = []
  for name, kernel, cin, cout in STEM:
    out.append(((name,), kernel, in_channels if cin is None else cin, cout, True, False))
  for name, cin, (o0, o1, o2, o3, o4, o5) in MIXED:
    out += [((name, "b0"), (1, 1, 1), cin, o0, True, False),
            ((name, "b1a"), (1, 1, 1), cin, o1, True, False),
            ((name, "b1b"), (3, 3, 3), o1, o2, True, False),
            ((name, "b2a"), (1, 1, 1), cin, o3, True, False),
            ((name, "b2b"), (3, 3, 3), o3, o4, True, False),
            ((name, "b3b"), (1, 1, 1), cin, o5, True, False)]
  if num_classes is not None:
    out.append((("logits",), (1, 1, 1), 1024, num_classes, False, True))
  return out


def flax_shapes(in_channels, num_classes=None):
  """Expected Flax variable path -> shape."""
  shapes = {}
  for path, kernel, cin, cout, has_bn, has_bias in units(in_channels, num_classes):
    shapes[("params",) + path + ("conv3d", "kernel")] = (*kernel, cin, cout)
    if has_bias:
      shapes[("params",) + path + ("conv3d", "bias")] = (cout,)
    if has_bn:
      shapes[("params",) + path + ("bn", "scale")] = (cout,)
      shapes[("params",) + path + ("bn", "bias")] = (cout,)
      shapes[("batch_stats",) + path + ("bn", "mean")] = (cout,)
      shapes[("batch_stats",) + path + ("bn", "var")] = (cout,)
  return shapes


def torch_shapes(in_channels, num_classes=None):
  """Expected pytorch-i3d state-dict key -> shape (without num_batches_tracked)."""
  shapes = {}
  for path, kernel, cin, cout, has_bn, has_bias in units(in_channels, num_classes):
    prefix = ".".join(path)
    shapes[f"{prefix}.conv3d.weight"] = (cout, cin, *kernel)
    if has_bias:
      shapes[f"{prefix}.conv3d.bias"] = (cout,)
    if has_bn:
      for leaf in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{prefix}.bn.{leaf}"] = (cout,)
  return shapes


def _flat(tree, prefix=()):
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flat(value, prefix + (key,)))
    else:
      out[prefix + (key,)] = tuple(value.shape)
  return out


STREAMS = [pytest.param(3, id="rgb"), pytest.param(2, id="flow")]


def test_the_table_chains_each_block_into_the_next():
  channels = 192
  for name, cin, widths in MIXED:
    assert cin == channels, name
    channels = widths[0] + widths[2] + widths[4] + widths[5]
    assert END_POINT_CHANNELS[name] == channels
  assert channels == 1024


@pytest.mark.parametrize("in_channels", STREAMS)
@pytest.mark.parametrize("num_classes", [pytest.param(None, id="trunk"),
                                         pytest.param(400, id="kinetics_logits")])
def test_the_flax_variable_tree_matches_the_published_table(in_channels, num_classes):
  assert _flat(i3d.variable_shapes(in_channels, num_classes)) == flax_shapes(in_channels,
                                                                              num_classes)


@pytest.mark.parametrize("in_channels,num_classes,expected", [
    pytest.param(3, None, RGB_TRUNK_PARAMS, id="rgb_trunk"),
    pytest.param(2, None, FLOW_TRUNK_PARAMS, id="flow_trunk"),
    pytest.param(3, 400, RGB_KINETICS_PARAMS, id="rgb_with_400_logits"),
])
def test_param_count_equals_the_arithmetic_of_the_table(in_channels, num_classes, expected):
  total = 0
  for _, (kt, kh, kw), cin, cout, has_bn, has_bias in units(in_channels, num_classes):
    total += kt * kh * kw * cin * cout + (2 * cout if has_bn else 0) + (cout if has_bias else 0)
  assert total == expected
  shapes = i3d.variable_shapes(in_channels, num_classes)
  assert i3d.param_count(shapes) == expected
  assert i3d.param_count(shapes["batch_stats"]) == BATCH_STATS


def _output_shape(end_point, clip_shape, num_classes=None):
  model = i3d.I3D(num_classes=num_classes)
  variables = i3d.variable_shapes(clip_shape[-1], num_classes)
  out = jax.eval_shape(lambda v, x: model.apply(v, x, end_point=end_point), variables,
                       jax.ShapeDtypeStruct(clip_shape, jnp.float32))
  return out.shape, out.dtype


@pytest.mark.parametrize("end_point", list(END_POINT_CHANNELS))
def test_every_end_point_gives_its_published_channels(end_point):
  assert _output_shape(end_point, (2, 8, 32, 32, 3)) == ((2, END_POINT_CHANNELS[end_point]),
                                                         jnp.float32)


def test_logits_end_point_gives_one_score_per_class():
  assert _output_shape("Logits", (2, 8, 32, 32, 2), num_classes=400) == ((2, 400), jnp.float32)


@pytest.mark.parametrize("clip_shape", [
    pytest.param((1, 1, 1, 1, 3), id="single_pixel_frame"),
    pytest.param((1, 5, 17, 23, 3), id="odd_sizes"),
    pytest.param((3, 16, 224, 224, 2), id="published_size"),
])
def test_same_padding_accepts_any_clip_size(clip_shape):
  assert _output_shape("Mixed_5c", clip_shape) == ((clip_shape[0], 1024), jnp.float32)


@pytest.mark.parametrize("size", [1, 2, 5, 7, 8, 13, 224])
@pytest.mark.parametrize("kernel,stride", [(1, 1), (3, 1), (3, 2), (2, 2), (7, 2), (1, 2)])
def test_same_padding_keeps_ceil_size_over_stride_outputs(size, kernel, stride):
  lo, hi = i3d.same_padding(size, kernel, stride)
  out = -(-size // stride)
  assert lo + hi == max((out - 1) * stride + kernel - size, 0)
  assert hi - lo in (0, 1)
  assert (size + lo + hi - kernel) // stride + 1 == out


def test_unknown_end_point_lists_the_valid_ones():
  with pytest.raises(ValueError, match=r"unknown end_point 'Mixed_9z'.*Conv3d_1a_7x7.*Logits"):
    _output_shape("Mixed_9z", (1, 8, 32, 32, 3))


def test_logits_without_a_head_is_refused():
  with pytest.raises(ValueError, match="needs num_classes"):
    _output_shape("Logits", (1, 8, 32, 32, 3))


def test_channels_first_clips_are_refused_at_init():
  with pytest.raises(ValueError, match="3 \\(rgb\\) or 2 \\(flow\\) channels"):
    i3d.I3D().init(jax.random.key(0), jnp.zeros((1, 3, 8, 16, 16)))


@pytest.fixture(scope="module", params=STREAMS)
def extractor(request):
  variables = i3d.random_variables(0, request.param)
  return i3d.make_extractor(variables)


def _clips(seed, in_channels, batch=2):
  rng = np.random.default_rng(seed)
  return rng.uniform(-1, 1, (batch, 8, 32, 32, in_channels)).astype(np.float32)


def test_extractor_gives_one_1024_feature_per_clip_and_compiles_once(extractor):
  x = _clips(1, extractor.in_channels)
  first = extractor(x)
  second = extractor(jnp.asarray(x))
  assert first.shape == (2, 1024) and first.dtype == jnp.float32
  assert np.all(np.isfinite(first))
  assert np.std(np.asarray(first)) > 0
  np.testing.assert_array_equal(first, second)
  assert extractor.num_traces == 1


def test_a_clip_feature_does_not_depend_on_the_other_clips_of_the_batch(extractor):
  x = _clips(2, extractor.in_channels)
  y = x.copy()
  y[1] = _clips(3, extractor.in_channels, batch=1)[0]
  fx, fy = np.asarray(extractor(x)), np.asarray(extractor(y))
  np.testing.assert_allclose(fx[0], fy[0], rtol=1e-6, atol=1e-7)
  assert not np.allclose(fx[1], fy[1])
  assert extractor.num_traces == 1


@pytest.mark.parametrize("clips,message", [
    pytest.param(np.zeros((1, 3, 8, 32, 32), np.float32), "channels last", id="channels_first"),
    pytest.param(np.zeros((8, 32, 32, 3), np.float32), "channels last", id="no_batch_axis"),
    pytest.param(np.zeros((1, 8, 32, 32, 3), np.uint8), "scaled to", id="uint8_frames"),
])
def test_extractor_refuses_bad_clips(clips, message):
  variables = i3d.random_variables(0, 3)
  with pytest.raises(ValueError, match=message):
    i3d.make_extractor(variables)(clips)


def test_bfloat16_compute_stays_close_to_float32():
  variables = i3d.random_variables(0, 3)
  x = _clips(5, 3)  # The fixture's shapes: the float32 program is already compiled.
  full = np.asarray(i3d.make_extractor(variables)(x))
  half = i3d.make_extractor(variables, dtype=jnp.bfloat16)(x)
  assert half.dtype == jnp.float32
  half = np.asarray(half)
  for a, b in zip(full, half):
    assert np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.99


@pytest.mark.parametrize("shape,kernel,stride", [
    ((2, 8, 17, 15, 3), (7, 7, 7), (2, 2, 2)),
    ((1, 5, 9, 9, 6), (3, 3, 3), (1, 1, 1)),
    ((2, 4, 7, 7, 5), (1, 1, 1), (1, 1, 1)),
    ((1, 7, 6, 6, 4), (2, 2, 2), (2, 2, 2)),
], ids=["stem_7x7x7_stride_2_odd_sizes", "3x3x3", "pointwise", "even_kernel_stride_2"])
def test_time_sum_convolution_equals_the_3d_convolution(shape, kernel, stride):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
  w = jnp.asarray(rng.standard_normal((*kernel, shape[-1], 8)), jnp.float32)
  with jax.default_matmul_precision("highest"):
    a = i3d.conv3d_same(x, w, stride, "conv3d")
    b = i3d.conv3d_same(x, w, stride, "time_sum")
  assert a.shape == b.shape == (shape[0], *[-(-n // s) for n, s in zip(shape[1:4], stride)], 8)
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_both_convolution_implementations_give_the_same_features():
  variables = i3d.random_variables(1, 2)
  x = _clips(7, 2)
  outs = [np.asarray(jax.jit(i3d.I3D(conv_impl=impl).apply)(variables, x))
          for impl in ("conv3d", "time_sum")]
  np.testing.assert_allclose(outs[0], outs[1], rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="conv_impl"):
    i3d.I3D(conv_impl="fft").apply(variables, x)
