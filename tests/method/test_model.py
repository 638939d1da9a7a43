"""Tests for pwes_jax.method.model: shapes, mask invariance, a numpy reference forward, dropout,
traces."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pwes_jax.method import model as model_lib

B, T, F = 3, 20, 12
EMBED, HIDDEN, C = 16, 8, 2
LENGTHS = (20, 13, 5)  # valid prefix per row
SLOPE = 0.2
OUTPUT_SHAPES = {
    "attention": (B, T), "attention_rgb": (B, T), "attention_flow": (B, T),
    "tcam": (B, T, C + 1), "probs": (B, T, C + 1), "suppressed": (B, T, C),
    "features": (B, T, EMBED), "features_before_dropout": (B, T, EMBED),
}

MODEL = model_lib.PWESModel(embed_dim=EMBED, attention_hidden=HIDDEN)


@functools.partial(jax.jit, static_argnames="train")
def apply(params, rgb, flow, valid, rng=None, train=False):
  rngs = {"dropout": rng} if train else {}
  return MODEL.apply({"params": params}, rgb, flow, valid, train=train, rngs=rngs)


def make_valid(lengths=LENGTHS, t=T):
  valid = np.zeros([len(lengths), t], np.float32)
  for b, n in enumerate(lengths):
    valid[b, :n] = 1.0
  return valid


def make_features(seed=0, t=T):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=[B, t, F]).astype(np.float32),
          rng.normal(size=[B, t, F]).astype(np.float32))


def dropout_key(seed):
  # "rbg" keys compile much faster on CPU than threefry; dropout only needs some key.
  return jax.random.key(seed, impl="rbg")


@pytest.fixture(scope="module")
def params():
  """Random parameters in the tree ``MODEL.init`` builds, every bias non-zero (a stronger test).

  ``jax.eval_shape`` gives the tree without compiling the initialisers (slow on CPU).
  """
  rgb, flow = make_features()
  shapes = jax.eval_shape(MODEL.init, jax.random.key(0), rgb, flow, make_valid())["params"]
  rng = np.random.default_rng(1)

  def draw(x):
    scale = 0.3 if len(x.shape) == 1 else 1.0 / np.sqrt(np.prod(x.shape[:-1]))
    return jnp.asarray(scale * rng.normal(size=x.shape), x.dtype)

  return jax.tree_util.tree_map(draw, shapes)


@pytest.fixture(scope="module")
def outputs(params):
  rgb, flow = make_features()
  return jax.tree_util.tree_map(np.asarray, apply(params, rgb, flow, make_valid()))


def assert_valid_equal(a, b, lengths, atol=1e-6):
  for name in OUTPUT_SHAPES:
    for row, n in enumerate(lengths):
      np.testing.assert_allclose(a[name][row, :n], b[name][row, :n], rtol=1e-5, atol=atol,
                                 err_msg=f"{name} row {row}")


# ---------------------------------------------------------------- shapes and relations


def test_outputs_have_the_documented_shapes_and_float32(outputs):
  assert set(outputs) == set(OUTPUT_SHAPES)
  for name, shape in OUTPUT_SHAPES.items():
    assert outputs[name].shape == shape, name
    assert outputs[name].dtype == np.float32, name
    assert np.all(np.isfinite(outputs[name])), name


def test_params_have_the_expected_shapes(params):
  shapes = jax.tree_util.tree_map(lambda x: x.shape, params)
  assert shapes["embed_rgb"]["channel"]["kernel"] == (F, F)
  assert shapes["embed_rgb"]["bitwise"]["conv"]["kernel"] == (3, F, F)
  assert shapes["attention_flow"]["conv1"]["conv"]["kernel"] == (3, F, HIDDEN)
  assert shapes["attention_flow"]["conv2"]["conv"]["kernel"] == (3, HIDDEN, HIDDEN)
  assert shapes["attention_flow"]["conv3"]["conv"]["kernel"] == (1, HIDDEN, 1)
  assert shapes["fusion"]["conv"]["kernel"] == (1, 2 * F, EMBED)
  assert shapes["classifier"]["conv"]["kernel"] == (1, EMBED, C + 1)


def test_attention_is_in_open_unit_interval_and_suppressed_is_attention_times_probs(outputs):
  a = outputs["attention"]
  assert np.all((a > 0) & (a < 1))
  np.testing.assert_allclose(a, 0.5 * (outputs["attention_rgb"] + outputs["attention_flow"]),
                             rtol=1e-6)
  np.testing.assert_allclose(outputs["probs"], 1.0 / (1.0 + np.exp(-outputs["tcam"])),
                             rtol=1e-5)
  np.testing.assert_allclose(outputs["suppressed"], a[..., None] * outputs["probs"][..., :C],
                             rtol=1e-6)


def test_mismatched_inputs_raise_a_clear_error(params):
  rgb, flow = make_features()
  with pytest.raises(ValueError, match="flow"):
    MODEL.apply({"params": params}, rgb, flow[:, :, :F - 1], make_valid())
  with pytest.raises(ValueError, match="valid"):
    MODEL.apply({"params": params}, rgb, flow, make_valid()[:, :T - 1])


# ---------------------------------------------------------------- mask invariance


def test_changing_padded_features_changes_no_valid_output(params, outputs):
  rgb, flow = make_features()
  pad = make_valid()[..., None] == 0
  noise_rgb, noise_flow = make_features(seed=7)
  out = apply(params, np.where(pad, 50.0 * noise_rgb, rgb), np.where(pad, -9.0 * noise_flow, flow),
              make_valid())
  assert_valid_equal(jax.tree_util.tree_map(np.asarray, out), outputs, LENGTHS)


def test_a_longer_bucket_or_no_padding_gives_the_same_valid_outputs(params, outputs):
  rgb, flow = make_features()
  long_t = 32
  rng = np.random.default_rng(3)
  tail = rng.normal(size=[B, long_t - T, F]).astype(np.float32)  # padding filled with noise
  out_long = apply(params, np.concatenate([rgb, tail], 1), np.concatenate([flow, tail], 1),
                   make_valid(t=long_t))
  assert_valid_equal(jax.tree_util.tree_map(np.asarray, out_long), outputs, LENGTHS)
  # Row 1 alone, cut to its own length: no padding at all.
  n = LENGTHS[1]
  alone = apply(params, rgb[1:2, :n], flow[1:2, :n], np.ones([1, n], np.float32))
  for name in OUTPUT_SHAPES:
    np.testing.assert_allclose(np.asarray(alone[name])[0], outputs[name][1, :n], rtol=1e-5,
                               atol=1e-6, err_msg=name)


# ---------------------------------------------------------------- numpy reference forward


def np_conv1d_same(x, kernel, bias):
  """``x [T, I]``, ``kernel [K, I, O]`` (cross-correlation, zero "SAME" padding) -> ``[T, O]``."""
  k = kernel.shape[0]
  pad = (k - 1) // 2
  length = x.shape[0]
  out = np.zeros([length, kernel.shape[2]], np.float64)
  for t in range(length):
    out[t] += bias
    for j in range(k):
      s = t + j - pad
      if 0 <= s < length:
        for i in range(x.shape[1]):
          out[t] += x[s, i] * kernel[j, i]
  return out


def np_leaky(x):
  return np.where(x >= 0, x, SLOPE * x)


def np_sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def np_conv(x, p):
  return np_conv1d_same(x, np.asarray(p["conv"]["kernel"], np.float64),
                        np.asarray(p["conv"]["bias"], np.float64))


def np_embed(x, other, p):
  mean = x.mean(axis=0)  # [F] over the (all valid) snippets
  channel = np_leaky(mean @ np.asarray(p["channel"]["kernel"], np.float64)
                     + np.asarray(p["channel"]["bias"], np.float64))
  bitwise = np_conv(other, p["bitwise"])
  return x * np_sigmoid(bitwise * channel[None, :])


def np_attention(x, p):
  h = np_leaky(np_conv(x, p["conv1"]))
  h = np_leaky(np_conv(h, p["conv2"]))
  return np_sigmoid(np_conv(h, p["conv3"])[:, 0])


def np_forward(rgb, flow, p):
  """Eval-mode forward pass of one unpadded video ``rgb, flow [T, F]``."""
  e_rgb = np_embed(rgb, flow, p["embed_rgb"])
  e_flow = np_embed(flow, rgb, p["embed_flow"])
  a_rgb = np_attention(e_rgb, p["attention_rgb"])
  a_flow = np_attention(e_flow, p["attention_flow"])
  x = np_leaky(np_conv(np.concatenate([e_rgb, e_flow], axis=-1), p["fusion"]))
  tcam = np_conv(x, p["classifier"])
  probs = np_sigmoid(tcam)
  attention = 0.5 * (a_rgb + a_flow)
  return {"attention": attention, "attention_rgb": a_rgb, "attention_flow": a_flow,
          "tcam": tcam, "probs": probs, "suppressed": attention[:, None] * probs[:, :C],
          "features": x, "features_before_dropout": x}


@pytest.mark.parametrize("row", [0, 2], ids=["full_length_video", "short_padded_video"])
def test_flax_forward_matches_an_independent_numpy_forward(params, outputs, row):
  rgb, flow = make_features()
  n = LENGTHS[row]
  want = np_forward(rgb[row, :n].astype(np.float64), flow[row, :n].astype(np.float64), params)
  for name in OUTPUT_SHAPES:
    np.testing.assert_allclose(outputs[name][row, :n], want[name], rtol=1e-5, atol=1e-5,
                               err_msg=name)


# ---------------------------------------------------------------- dropout


def test_train_mode_dropout_depends_on_the_key_and_only_on_it(params, outputs):
  rgb, flow = make_features()
  valid = make_valid()
  a = apply(params, rgb, flow, valid, dropout_key(10), train=True)
  b = apply(params, rgb, flow, valid, dropout_key(10), train=True)
  c = apply(params, rgb, flow, valid, dropout_key(11), train=True)
  for name in OUTPUT_SHAPES:
    np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]), err_msg=name)
  assert not np.allclose(np.asarray(a["tcam"]), np.asarray(c["tcam"]))
  assert not np.allclose(np.asarray(a["tcam"]), outputs["tcam"])


def test_features_before_dropout_are_the_fused_features_the_dropout_masks(params, outputs):
  """In training, ``features`` is ``features_before_dropout`` with units zeroed and the rest
  scaled by 1 / (1 - rate); without training both equal the deterministic X."""
  rgb, flow = make_features()
  valid = make_valid()
  a = apply(params, rgb, flow, valid, dropout_key(10), train=True)
  before, after = np.asarray(a["features_before_dropout"]), np.asarray(a["features"])
  kept = after != 0
  rate = MODEL.dropout_rate
  np.testing.assert_allclose(after[kept], before[kept] / (1.0 - rate), rtol=1e-5)
  assert 0.3 < 1.0 - kept[before != 0].mean() < 0.7  # about half the units dropped
  np.testing.assert_array_equal(outputs["features_before_dropout"], outputs["features"])


# ---------------------------------------------------------------- compiles


@pytest.mark.parametrize("t", [T, 32], ids=["bucket_20", "bucket_32"])
def test_one_trace_per_bucket_shape(params, t):
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def forward(params, rgb, flow, valid):
    return MODEL.apply({"params": params}, rgb, flow, valid, train=False)

  lengths = (t, t // 2, 3)
  for seed in (0, 1):  # same shape, different values: no retrace
    rgb, flow = make_features(seed, t)
    forward(params, rgb, flow, make_valid(lengths, t))["tcam"].block_until_ready()
  with pytest.raises(AssertionError, match="traced"):  # the counter does see a new shape
    forward(params, rgb[:, :-1], flow[:, :-1], make_valid(lengths, t)[:, :-1])
