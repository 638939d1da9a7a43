"""Tests of spotting with a trained run (pwes_jax/spot.py and launch/spot.py)."""

import json
import os
import re
import shutil
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from pwes_jax.evaluation import inference
from pwes_jax.workdir import run_files
from pwes_jax import spot
from pwes_jax.data import batching
from pwes_jax.data import layout
from pwes_jax.data import source

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FEATURE_DIM = 32  # the tiny config's synthetic feature width


def _features_dir(workdir):
  config = run_files.load_config(workdir)
  return os.path.join(source.synthetic_dir(config, workdir), "features")


def _held_out(workdir):
  return run_files.read_fold_record(workdir, 0)["test_videos"]


def _predictions(workdir):
  with open(os.path.join(workdir, "predictions.json")) as f:
    return json.load(f)["videos"]


def _assert_same_proposals(got, want):
  assert [(p["onset"], p["offset"], p["type"]) for p in got] == [
      (p["onset"], p["offset"], p["type"]) for p in want]
  np.testing.assert_allclose([p["score"] for p in got], [p["score"] for p in want],
                             rtol=1e-4, atol=1e-6)


def test_spot_with_the_held_out_fold_reproduces_the_runs_predictions(tiny_run, tmp_path):
  feats = tmp_path / "features"
  feats.mkdir()
  for name in _held_out(tiny_run):
    shutil.copy(os.path.join(_features_dir(tiny_run), f"{name}.npz"), feats / f"{name}.npz")
  result = spot.spot(tiny_run, str(feats), fold=0)
  preds = _predictions(tiny_run)
  assert sorted(result["videos"]) == sorted(_held_out(tiny_run))
  for name, props in result["videos"].items():
    assert props, name
    _assert_same_proposals(props, preds[name])
    for p in props:
      assert p["onset_seconds"] == pytest.approx(p["onset"] / 30.0)
      assert p["offset_seconds"] == pytest.approx((p["offset"] + 1) / 30.0)
  assert result["folds"] == [0]
  assert result["source"] == str(feats)
  assert (result["fps"], result["snippet_length"]) == (30.0, 8)


def test_fold_all_with_one_finished_fold_is_that_fold(tiny_run):
  name = _held_out(tiny_run)[0]
  path = os.path.join(_features_dir(tiny_run), f"{name}.npz")
  result = spot.spot(tiny_run, path, fold="all")
  assert result["folds"] == [0]
  _assert_same_proposals(result["videos"][name], _predictions(tiny_run)[name])


def test_a_fold_that_has_not_finished_is_refused(tiny_run):
  path = os.path.join(_features_dir(tiny_run), f"{_held_out(tiny_run)[0]}.npz")
  with pytest.raises(FileNotFoundError, match=r"fold\(s\) \[2\] have not finished"):
    spot.spot(tiny_run, path, fold=2)


def _bad_arrays(kind):
  rng = np.random.default_rng(0)
  rgb = rng.normal(size=(20, FEATURE_DIM)).astype(np.float32)
  flow = rng.normal(size=(20, FEATURE_DIM)).astype(np.float32)
  if kind == "rgb_width":
    return {"rgb": rgb[:, :31], "flow": flow}, "rgb", "feature width 31"
  if kind == "flow_width":
    return {"rgb": rgb, "flow": np.concatenate([flow, flow], 1)}, "flow", "feature width 64"
  if kind == "lengths":
    return {"rgb": rgb, "flow": flow[:19]}, "flow", "rgb has 20 snippets, flow 19"
  if kind == "nan":
    flow[3, 5] = np.nan
    return {"rgb": rgb, "flow": flow}, "flow", "first at snippet 3"
  if kind == "missing":
    return {"rgb": rgb}, "flow", "array missing"
  if kind == "integer":
    return {"rgb": rgb.astype(np.int32), "flow": flow}, "rgb", "not floating point"
  if kind == "empty":
    return {"rgb": rgb[:0], "flow": flow[:0]}, "rgb", "no snippet"
  raise ValueError(kind)


@pytest.mark.parametrize("kind", [
    pytest.param("rgb_width", id="rgb narrower than the model input"),
    pytest.param("flow_width", id="flow wider than the model input"),
    pytest.param("lengths", id="rgb and flow of different lengths"),
    pytest.param("nan", id="a NaN in flow"),
    pytest.param("missing", id="no flow array"),
    pytest.param("integer", id="integer rgb"),
    pytest.param("empty", id="zero snippets"),
])
def test_bad_feature_files_name_the_file_and_the_field(tiny_run, tmp_path, kind):
  arrays, field, message = _bad_arrays(kind)
  path = str(tmp_path / "bad_video.npz")
  np.savez(path, **arrays)
  with pytest.raises(layout.DatasetError) as err:
    spot.spot(tiny_run, path, fold=0)
  text = str(err.value)
  assert f"file {path}" in text and "video 'bad_video'" in text
  assert f"field '{field}'" in text and message in text


def test_new_videos_are_padded_to_a_multiple_of_eight_with_a_mask():
  rgb = np.arange(13 * 2, dtype=np.float32).reshape(13, 2)
  assert inference.padded_lengths([13, 16, 3, 17]) == (8, 16, 24)
  video = inference.unlabelled_video("v", rgb, -rgb)
  (batch,) = batching.iterate_padded([video], inference.padded_lengths([13]), 1, 1)
  assert batch["rgb"].shape == (1, 16, 2) and batch["valid"].shape == (1, 16)
  for t in range(16):
    inside = t < 13
    assert batch["valid"][0, t] == float(inside)
    for c in range(2):
      assert batch["rgb"][0, t, c] == (rgb[t, c] if inside else 0.0)
      assert batch["flow"][0, t, c] == (-rgb[t, c] if inside else 0.0)


def test_average_outputs_is_the_elementwise_mean_over_folds():
  rng = np.random.default_rng(1)
  outs = [{"attention": rng.random(5), "suppressed": rng.random((5, 2))} for _ in range(3)]
  avg = inference.average_outputs(outs)
  for t in range(5):
    assert avg["attention"][t] == pytest.approx(sum(o["attention"][t] for o in outs) / 3)
    for c in range(2):
      assert avg["suppressed"][t, c] == pytest.approx(
          sum(o["suppressed"][t, c] for o in outs) / 3)


def _run_cli(*args):
  return subprocess.run([sys.executable, "-m", "launch.spot", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300)


def test_cli_writes_the_proposals_json(tiny_run, tmp_path):
  name = _held_out(tiny_run)[0]
  path = os.path.join(_features_dir(tiny_run), f"{name}.npz")
  out = tmp_path / "out" / "spots.json"
  proc = _run_cli(f"--workdir={tiny_run}", f"--features={path}", f"--output={out}",
                  "--fold=0", "--fps=60")
  assert proc.returncode == 0, proc.stderr
  result = json.loads(out.read_text())
  assert set(result) >= {"videos", "folds", "source"}
  assert result["folds"] == [0] and result["fps"] == 60.0
  props = result["videos"][name]
  assert props
  for p in props:
    assert set(p) == {"onset", "offset", "score", "type", "onset_seconds", "offset_seconds"}
    assert p["onset_seconds"] == pytest.approx(p["onset"] / 60.0)


def test_cli_bad_feature_width_exits_with_a_clear_message(tiny_run, tmp_path):
  path = str(tmp_path / "narrow.npz")
  arrays, _, _ = _bad_arrays("rgb_width")
  np.savez(path, **arrays)
  proc = _run_cli(f"--workdir={tiny_run}", f"--features={path}",
                  f"--output={tmp_path / 'o.json'}")
  assert proc.returncode != 0
  assert f"file {path}" in proc.stderr and "field 'rgb'" in proc.stderr
  assert "feature width 31 != the model's input width 32" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "o.json").exists()


def test_spotted_types_follow_the_fields_duration_rule():
  # Two 8-frame snippets at 30 fps: frames 80 .. 95 last 15 frames, an ME (offset - onset).
  settings = ml_collections.ConfigDict(dict(top_ratio=0.3, nms_threshold=0.01,
                                            me_max_seconds=0.5, flank_ratio=0.25))
  config = ml_collections.ConfigDict(dict(inference=settings))
  attention = np.zeros(20, np.float32)
  attention[10:12] = 1.0
  suppressed = np.zeros((20, 2), np.float32)
  suppressed[10:12] = [0.6, 0.4]
  props = spot.with_seconds(inference.to_proposals(
      {"attention": attention, "suppressed": suppressed}, config, fps=30.0, snippet_length=8),
      30.0)
  top = props[0]
  assert (top["onset"], top["offset"], top["type"]) == (80, 95, "ME")


def test_a_second_spot_loads_its_programs_from_the_compilation_cache(tiny_run, tmp_path):
  """spot reuses the compiled forward of an earlier spot (the count is shown)."""
  name = _held_out(tiny_run)[0]
  path = os.path.join(_features_dir(tiny_run), f"{name}.npz")
  env = dict(os.environ, PWES_COMPILE_CACHE=str(tmp_path / "xla"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")  # cache every program
  counts = []
  for i in range(2):
    proc = subprocess.run([sys.executable, "-m", "launch.spot", f"--workdir={tiny_run}",
                           f"--features={path}", f"--output={tmp_path / f'spots{i}.json'}",
                           "--fold=0"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    line = next(l for l in proc.stderr.splitlines() if l.startswith("compiles: "))
    built, compiled, loaded = (int(x) for x in re.search(
        r"(\d+) program\(s\) built .*: (\d+) compiled, (\d+) loaded", line).groups())
    counts.append((built, compiled, loaded))
  (built1, compiled1, loaded1), (built2, compiled2, loaded2) = counts
  assert loaded1 == 0 and compiled1 == built1 > 0, counts
  assert loaded2 == built2 and compiled2 == 0, counts  # every program came from the cache
  assert (tmp_path / "spots0.json").read_text() == (tmp_path / "spots1.json").read_text()


# ----------------------------------------------------------------------------------------------
# Feature files that say how they were made (the tiny run: 30 fps, 8-frame snippets).


def _recorded_features(path, t, **settings):
  rng = np.random.default_rng(0)
  np.savez(path, rgb=rng.random((t, FEATURE_DIM), np.float32),
           flow=rng.random((t, FEATURE_DIM), np.float32),
           **{k: np.asarray(v) for k, v in settings.items()})
  return str(path)


@pytest.mark.parametrize("t,settings,said", [
    (30, dict(num_frames=121, fps=30.0, snippet_stride=4, snippet_window=8),
     ["made with a snippet stride of 4 frames", "assumes a snippet stride of 8 frames",
      "pass --snippet_length=4 --snippet_window=8"]),
    (7, dict(num_frames=61, fps=15.0, snippet_stride=8, snippet_window=8),
     ["made with 15 fps", "assumes 30 fps", "pass --fps=15"]),
    (30, dict(num_frames=121),  # a frame count only: 30 snippets of 121 frames is stride 4
     ["30 snippets for 121 frames is a stride of 4 frames, not 8: pass --snippet_length=4"]),
], ids=["stride4", "15fps", "frame_count_only"])
def test_features_made_at_other_settings_stop_spotting_in_one_line(tiny_run, tmp_path, t,
                                                                   settings, said):
  path = _recorded_features(tmp_path / "clip.npz", t, **settings)
  with pytest.raises(ValueError) as e:
    spot.spot(tiny_run, path, fold=0)
  msg = str(e.value)
  assert "\n" not in msg and f"file {path}" in msg
  for part in said:
    assert part in msg, msg
  out = tmp_path / "spots.json"
  proc = _run_cli(f"--workdir={tiny_run}", f"--features={path}", f"--output={out}", "--fold=0")
  assert proc.returncode == 1 and "Traceback" not in proc.stderr and not out.exists()
  assert proc.stderr.strip().splitlines()[-1].startswith(f"spot: file {path}")


def test_given_their_settings_they_are_spotted_at_them_inside_the_clip(tiny_run, tmp_path):
  path = _recorded_features(tmp_path / "clip.npz", 30, num_frames=121, fps=30.0,
                            snippet_stride=4, snippet_window=8)
  result = spot.spot(tiny_run, path, fold=0, snippet_length=4, snippet_window=8)
  assert (result["snippet_length"], result["snippet_window"]) == (4, 8)
  props = result["videos"]["clip"]
  assert props
  for p in props:  # frames around the windows' centres (2 frames in), never past frame 120
    assert 0 <= p["onset"] <= p["offset"] <= 120
    assert (p["onset"] - 2) % 4 == 0 or p["onset"] == 120
