"""Features made at another frame rate, stride or window: import -> train (tiny) -> spot.

Each case is a directory as ``launch.extract_features`` writes it (``dataset.json`` with its
``extraction`` settings, ``videos.csv``, feature files that record ``num_frames``, ``fps``,
stride and window), made from 121-frame, 30 fps CAS(ME)^2 clips: at 15 fps, at a stride of 4
frames (8-frame windows), and with 8-frame windows at a stride of 2. Imported as they are, each
stops with one line naming both values and the flag; with the flag, the annotations land on the
features' frames, a tiny run trains, and spotting gives frames inside the clip at the windows'
centres. Spotting features of other settings with that run stops with one line too.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import casme2
from pwes_jax import spot
from pwes_jax import train
from pwes_jax.data import feature_settings
from pwes_jax.data import importers
from pwes_jax.data import layout
from pwes_jax.data import snippet_time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIDEOS = [("s15", "s15_0401"), ("s15", "s15_0402"), ("s16", "s16_0501"), ("s16", "s16_0502")]
SOURCE_FRAMES, SOURCE_FPS = 121, 30.0
# The CAS(ME)^2 table in its CSV form (1-based frames; the path column names the video).
TABLE = ("1,anger1_1,21,25,30,4,anger,micro-expression,anger,,s15/15_0401anger\n"
         "2,happy1_1,41,50,80,12,happy,macro-expression,happy,,s16/16_0501happy\n")

# case: (fps, stride, window, import flags, frames per clip, annotations in the features' frames)
CASES = {
    "15fps": (15.0, 8, 8, {"resample_fps": 15.0}, 61, [(10, 14), (20, 39)]),
    "stride4": (30.0, 4, 8, {"snippet_length": 4, "snippet_window": 8}, 121,
                [(20, 29), (40, 79)]),
    "windows8_stride2": (30.0, 2, 8, {"snippet_length": 2, "snippet_window": 8}, 121,
                         [(20, 29), (40, 79)]),
}
# What the import says without the flags.
REFUSALS = {
    "15fps": ("made with 15 fps, the import assumes 30 fps", "pass --resample_fps=15"),
    "stride4": ("made with a snippet stride of 4 frames, the import assumes a snippet stride of "
                "8 frames", "pass --snippet_length=4 --snippet_window=8"),
    "windows8_stride2": ("a snippet stride of 2 frames, the import assumes a snippet stride of 8",
                         "pass --snippet_length=2 --snippet_window=8"),
}


def made_by_extraction(root, fps, stride, window, seed=0):
  """A ``launch.extract_features`` output directory with random features; its features path."""
  frames = int(np.ceil(SOURCE_FRAMES * fps / SOURCE_FPS - 1e-9))
  t = (frames - 1) // stride
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.join(root, "features"))
  for _, video in VIDEOS:
    np.savez(os.path.join(root, "features", f"{video}.npz"),
             rgb=rng.random((t, 1024), np.float32), flow=rng.random((t, 1024), np.float32),
             **feature_settings.arrays(num_frames=frames, fps=fps, stride=stride,
                                       window=window))
  with open(os.path.join(root, "dataset.json"), "w") as f:
    json.dump({"name": "extracted", "fps": fps, "snippet_length": stride,
               "snippet_window": window, "feature_dim": 1024, "source": "extract_features",
               "extraction": {"snippet_length": window, "snippet_stride": stride}}, f)
  with open(os.path.join(root, "videos.csv"), "w") as f:
    f.write("subject,video,num_frames\n" +
            "".join(f"{s},{v},{frames}\n" for s, v in VIDEOS))
  return os.path.join(root, "features")


def _table(tmp_path):
  d = tmp_path / "tables"
  d.mkdir(exist_ok=True)
  (d / "casme2.csv").write_text(TABLE)
  return str(d / "casme2.csv")


@pytest.mark.parametrize("case", list(CASES))
def test_imported_as_they_are_they_stop_with_one_line_naming_the_flag(tmp_path, case):
  fps, stride, window, _, _, _ = CASES[case]
  feats = made_by_extraction(str(tmp_path / "made"), fps, stride, window)
  with pytest.raises(ValueError) as e:
    importers.import_casme2(_table(tmp_path), feats, str(tmp_path / "out"))
  msg = str(e.value)
  assert "\n" not in msg and "features of video 's15_0401'" in msg
  for part in REFUSALS[case]:
    assert part in msg, msg
  assert not os.path.exists(tmp_path / "out" / "dataset.json")


def test_the_command_line_refusal_is_one_line(tmp_path):
  feats = made_by_extraction(str(tmp_path / "made"), 15.0, 8, 8)
  env = dict(os.environ, PYTHONPATH=REPO)
  res = subprocess.run([sys.executable, "-m", "launch.import_dataset", "--format=casme2",
                        f"--annotations={_table(tmp_path)}", f"--features={feats}",
                        f"--output_dir={tmp_path / 'out'}"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120, check=False)
  assert res.returncode == 1 and "Traceback" not in res.stderr
  last = res.stderr.strip().splitlines()[-1]
  assert last.startswith("import_dataset: ") and "pass --resample_fps=15" in last
  assert "made with 15 fps, the import assumes 30 fps" in last


def _train(dataset_dir, workdir):
  config = casme2.get_config("tiny")
  config.data.dataset_dir = dataset_dir
  config.data.max_points = 4
  config.optim.steps = 4
  config.mplg.pretrain_steps = 2
  config.checkpoint.every_steps = 4
  config.loso.folds = "0"
  train.train_and_evaluate(config, workdir)


@pytest.fixture(scope="module", params=list(CASES))
def imported_run(request, tmp_path_factory):
  """Per case: the made directory, the imported dataset and a tiny run trained on it."""
  case = request.param
  fps, stride, window, flags, _, _ = CASES[case]
  tmp = tmp_path_factory.mktemp(case)
  feats = made_by_extraction(str(tmp / "made"), fps, stride, window)
  summary = importers.import_casme2(_table(tmp), feats, str(tmp / "dataset"), **flags)
  workdir = str(tmp / "run")
  _train(str(tmp / "dataset"), workdir)
  return case, feats, str(tmp / "dataset"), summary, workdir


def test_with_the_flag_they_import_train_and_spot_with_the_right_frames(imported_run, tmp_path):
  case, feats, dataset_dir, summary, workdir = imported_run
  fps, stride, window, _, frames, expected = CASES[case]
  assert summary["num_frames_inferred"] == []  # the features' own counts, not T * L + 1
  ds = layout.load_dataset(dataset_dir)
  assert (ds.info.fps, ds.info.snippet_length, snippet_time.window_of(ds.info)) == (
      fps, stride, window)
  assert {v.num_frames for v in ds.videos} == {frames}
  assert sorted((a.onset, a.offset) for a in ds.annotations) == expected
  assert ds.info.extras["extraction"] == {"snippet_length": window, "snippet_stride": stride}
  with np.load(ds.feature_path("s15_0401")) as z:  # the imported files say how they were made
    assert feature_settings.read(dict(z)) == {"num_frames": frames, "fps": fps,
                                             "snippet_stride": stride, "snippet_window": window}

  result = spot.spot(workdir, feats, fold=0)
  assert (result["fps"], result["snippet_length"], result["snippet_window"]) == (
      fps, stride, window)
  shift = (window - stride) // 2
  props = [p for v in result["videos"].values() for p in v]
  assert props
  for p in props:  # runs of snippets, each its window's centre stride frames, inside the clip
    assert 0 <= p["onset"] <= p["offset"] <= frames - 1
    assert (p["onset"] - shift) % stride == 0 or p["onset"] == frames - 1
    assert (p["offset"] + 1 - shift) % stride == 0 or p["offset"] == frames - 1
    assert p["onset_seconds"] == pytest.approx(p["onset"] / fps)


def test_spotting_features_of_other_settings_with_the_run_is_one_line(imported_run, tmp_path):
  case, _, _, _, workdir = imported_run
  other = "stride4" if case != "stride4" else "15fps"
  fps, stride, window, _, _, _ = CASES[other]
  feats = made_by_extraction(str(tmp_path / "other"), fps, stride, window)
  with pytest.raises(ValueError) as e:
    spot.spot(workdir, feats, fold=0)
  msg = str(e.value)
  assert "\n" not in msg and "the run's dataset" in msg
  flag = "--snippet_length=4" if other == "stride4" else "--fps=15"
  assert flag in msg, msg


def test_training_on_a_dataset_whose_features_disagree_with_it_is_one_line(tmp_path):
  """A dataset directory assembled by hand: 15-fps features under a 30-fps dataset.json."""
  feats = made_by_extraction(str(tmp_path / "made"), 15.0, 8, 8)
  importers.import_casme2(_table(tmp_path), feats, str(tmp_path / "dataset"), resample_fps=15.0)
  meta_path = tmp_path / "dataset" / "dataset.json"
  meta = json.loads(meta_path.read_text())
  meta["fps"] = 30.0
  meta_path.write_text(json.dumps(meta))
  env = dict(os.environ, PYTHONPATH=REPO, PWES_COMPILE_CACHE="off", JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  res = subprocess.run([sys.executable, "-m", "launch.main", "--config=configs/casme2.py:tiny",
                        f"--config.data.dataset_dir={tmp_path / 'dataset'}",
                        f"--workdir={tmp_path / 'run'}", "--folds=0"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300, check=False)
  assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
  last = res.stderr.strip().splitlines()[-1]
  assert last.startswith("launch.main: ") and "video 's15_0401'" in last
  assert "features made with 15 fps" in last and "assumes 30 fps" in last
  assert "pass --resample_fps=15 to launch.import_dataset" in last
