"""Tests of the synthetic benchmark generator (pwes_jax/data/synthetic.py)."""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

from pwes_jax.data import layout
from pwes_jax.data import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REAL_TOTALS = {  # preset: (videos, subjects, ME, MaE, mean frames), paper Section 4.1.
    "casme2": (98, 22, 57, 300, 2940.0),
    "samm_lv": (224, 30, 159, 340, 7000.0),
    "casme3": (956, 100, 207, 2071, 2600.0),
}
ALL_PRESETS = ["tiny", "casme2", "samm_lv", "casme3"]


def _read_bytes(path):
  with open(path, "rb") as f:
    return f.read()


def _by_video(rows):
  out = {}
  for r in rows:
    out.setdefault(r.video, []).append(r)
  return out


def rank_auc(scores, labels):
  """ROC AUC from average ranks (Mann-Whitney U), ties counted half."""
  scores = np.asarray(scores, np.float64)
  labels = np.asarray(labels, bool)
  order = np.argsort(scores, kind="stable")
  sorted_scores = scores[order]
  ranks = np.empty(len(scores))
  i = 0
  while i < len(scores):  # Average ranks over runs of ties.
    j = i
    while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
      j += 1
    ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
    i = j + 1
  n_pos, n_neg = labels.sum(), (~labels).sum()
  return (ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def snippet_coverage(num_snippets, snippet_length, intervals):
  """Frames of each snippet inside any interval, by a plain loop over frames: [T]."""
  covered = np.zeros(num_snippets)
  for onset, offset in intervals:
    for frame in range(onset, offset + 1):
      t = frame // snippet_length
      if t < num_snippets:
        covered[t] += 1
  return covered


# ----------------------------------------------------------------------------------------------
# Layout, determinism, overwrite protection.


def test_tiny_dataset_is_written_in_the_layout_and_loads(tmp_path):
  root = str(tmp_path / "tiny")
  summary = synthetic.generate("tiny", root, seed=5)
  ds = layout.load_dataset(root)
  preset = synthetic.PRESETS["tiny"]
  assert ds.info.name == "synthetic_tiny"
  assert (ds.info.fps, ds.info.snippet_length, ds.info.feature_dim) == (30.0, 8, 32)
  assert ds.info.extras["preset"] == "tiny"
  assert ds.info.extras["seed"] == 5
  assert ds.info.extras["generator_version"] == synthetic.GENERATOR_VERSION
  assert len(ds.videos) == preset.num_videos == summary["num_videos"]
  assert len(ds.subjects) == preset.num_subjects
  assert sum(a.type == "ME" for a in ds.annotations) == preset.num_me
  assert sum(a.type == "MaE" for a in ds.annotations) == preset.num_mae
  for video in ds.videos:
    rgb, flow = layout.load_features(ds, video)
    t = (video.num_frames - 1) // 8
    assert rgb.shape == flow.shape == (t, 32)
    assert rgb.dtype == flow.dtype == np.float32


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path):
  roots = {}
  for name, seed in (("a", 1), ("b", 1), ("c", 2)):
    roots[name] = str(tmp_path / name)
    synthetic.generate("tiny", roots[name], seed=seed)
  for meta in ("dataset.json", "videos.csv", "annotations.csv"):
    a, b = (_read_bytes(os.path.join(roots[k], meta)) for k in "ab")
    assert a == b, meta
  assert (_read_bytes(os.path.join(roots["a"], "annotations.csv"))
          != _read_bytes(os.path.join(roots["c"], "annotations.csv")))
  ds_a, ds_b = layout.load_dataset(roots["a"]), layout.load_dataset(roots["b"])
  for video in ds_a.videos:  # .npz zips hold a timestamp, so compare the arrays' bytes.
    for x, y in zip(layout.load_features(ds_a, video), layout.load_features(ds_b, video)):
      assert x.tobytes() == y.tobytes()
  ds_c = layout.load_dataset(roots["c"])
  rgb_a = layout.load_features(ds_a, ds_a.videos[0])[0]
  rgb_c = layout.load_features(ds_c, ds_c.videos[0])[0]
  assert rgb_a.shape != rgb_c.shape or not np.array_equal(rgb_a, rgb_c)


def test_existing_dataset_is_kept_unless_overwrite(tmp_path):
  root = str(tmp_path / "d")
  synthetic.generate("tiny", root, seed=0)
  note = os.path.join(root, "NOTES.txt")
  with open(note, "w") as f:
    f.write("mine")
  before = {n: _read_bytes(os.path.join(root, n)) for n in ("dataset.json", "annotations.csv")}
  with pytest.raises(FileExistsError, match="overwrite"):
    synthetic.generate("tiny", root, seed=1)
  assert before == {n: _read_bytes(os.path.join(root, n)) for n in before}
  synthetic.generate("tiny", root, seed=1, overwrite=True)
  ds = layout.load_dataset(root)
  assert ds.info.extras["seed"] == 1
  assert _read_bytes(note) == b"mine"
  # Only the new dataset's feature files remain (the earlier run's extra ones are gone).
  assert sorted(os.listdir(os.path.join(root, "features"))) == sorted(
      f"{v.video}.npz" for v in ds.videos)


@pytest.mark.parametrize("kwargs, match", [
    (dict(preset="nope"), "unknown synthetic preset"),
    (dict(preset="tiny", feature_dim=8), "feature_dim"),
    (dict(preset="tiny", seed=-1), "seed"),
    (dict(preset=dataclasses.replace(synthetic.PRESETS["tiny"], me_frames=(6, 8, 11, 13, 17))),
     "me_frames"),
    (dict(preset=dataclasses.replace(synthetic.PRESETS["tiny"],
                                     mae_frames=(16, 20, 35, 63, 118))), "mae_frames"),
], ids=["unknown_preset_is_named", "too_small_feature_dim_is_refused",
        "negative_seed_is_refused", "me_lasting_16_frames_at_30fps_is_refused",
        "mae_lasting_only_15_frames_at_30fps_is_refused"])
def test_bad_arguments_give_clear_errors(tmp_path, kwargs, match):
  preset = kwargs.pop("preset")
  with pytest.raises(ValueError, match=match):
    synthetic.generate(preset, str(tmp_path / "x"), **kwargs)
  assert not os.path.exists(tmp_path / "x" / "dataset.json")


def test_launcher_writes_then_refuses_to_overwrite(tmp_path):
  root = str(tmp_path / "cli")
  cmd = [sys.executable, "-m", "launch.make_synthetic", "--preset=tiny", f"--output_dir={root}",
         "--seed=3", "--feature_dim=16"]
  env = dict(os.environ, PYTHONPATH=REPO)
  first = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert first.returncode == 0, first.stderr
  assert layout.load_dataset(root).info.feature_dim == 16
  second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert second.returncode != 0
  assert "--overwrite" in second.stderr


# ----------------------------------------------------------------------------------------------
# Statistics of the plans.


@pytest.mark.parametrize("name", list(REAL_TOTALS), ids=[f"{n}_totals_match_the_paper"
                                                         for n in REAL_TOTALS])
def test_preset_totals_are_exact(name):
  videos, subjects, n_me, n_mae, mean_frames = REAL_TOTALS[name]
  plan = synthetic.plan(name, seed=0)
  assert len(plan.videos) == videos
  assert len({v.video for v in plan.videos}) == videos
  assert len({v.subject for v in plan.videos}) == subjects
  assert sum(a.type == "ME" for a in plan.annotations) == n_me
  assert sum(a.type == "MaE" for a in plan.annotations) == n_mae
  mean = np.mean([v.num_frames for v in plan.videos])
  assert abs(mean - mean_frames) <= 0.05 * mean_frames
  assert len({a.video for a in plan.annotations}) < videos  # some videos hold no expression


@pytest.mark.parametrize("name", ALL_PRESETS, ids=[f"{n}_durations" for n in ALL_PRESETS])
def test_me_last_at_most_half_a_second_and_mae_more_up_to_four_seconds(name):
  plan = synthetic.plan(name, seed=1)
  fps = plan.preset.fps
  for a in plan.annotations:  # the field's rule: duration = offset - onset
    if a.type == "ME":
      assert a.offset - a.onset <= 0.5 * fps, a
    else:
      assert 0.5 * fps < a.offset - a.onset and (a.offset - a.onset + 1) / fps <= 4.0, a


def test_casme2_mes_reach_the_rules_bound_of_16_inclusive_frames():
  lengths = [a.offset - a.onset for a in synthetic.plan("casme2", seed=0).annotations
             if a.type == "ME"]
  assert max(lengths) == 15


@pytest.mark.parametrize("name", ALL_PRESETS, ids=[f"{n}_placement" for n in ALL_PRESETS])
def test_intervals_lie_inside_videos_apart_and_away_from_distractors(name):
  plan = synthetic.plan(name, seed=2)
  s, gap = plan.preset.snippet_length, plan.preset.gap_frames
  annotations, distractors = _by_video(plan.annotations), _by_video(plan.distractors)
  per_video = []
  for v in plan.videos:
    rows = sorted(annotations.get(v.video, []), key=lambda a: a.onset)
    per_video.append(len(rows))
    covered = (v.num_frames - 1) // s * s  # frames that some snippet holds
    for a in rows:
      assert a.subject == v.subject
      assert 0 <= a.onset < a.apex < a.offset < covered, a
    for prev, nxt in zip(rows, rows[1:]):
      assert nxt.onset - prev.offset > gap, (prev, nxt)
    for d in distractors.get(v.video, []):
      assert 0 <= d.onset <= d.apex <= d.offset < covered
      for a in rows:
        assert d.offset < a.onset or d.onset > a.offset, (d, a)
  assert max(per_video) <= plan.preset.max_intervals_per_video


# ----------------------------------------------------------------------------------------------
# The features.


def test_profile_rises_to_the_apex_and_motion_peaks_at_onset_and_offset():
  onset, apex, offset = 10, 14, 22
  intensity, motion = synthetic.profile(onset, apex, offset)
  expected = []
  for n in range(onset, offset + 1):
    if n <= apex:
      x = (n - onset) / (apex - onset)
      expected.append(1 - (1 - x) ** 2)
    else:
      y = (n - apex) / (offset - apex)
      expected.append(1 - y * y)
  np.testing.assert_allclose(intensity, expected, atol=1e-12)
  assert intensity[0] == intensity[-1] == 0 and intensity[apex - onset] == 1
  assert motion.max() == 1.0
  peak = int(np.argmax(motion))
  assert peak in (1, offset - onset)  # just after the onset or at the offset
  assert motion[apex - onset] < 0.3


def test_subject_offsets_make_videos_of_one_subject_alike():
  plan = synthetic.plan("tiny", seed=0)
  means, subjects = [], []
  for video, rgb, _ in synthetic.iter_features(plan, 64):
    means.append(rgb.mean(0))
    subjects.append(video.subject)
  means, subjects = np.stack(means), np.array(subjects)
  same, other = [], []
  for i in range(len(means)):
    for j in range(i + 1, len(means)):
      (same if subjects[i] == subjects[j] else other).append(np.linalg.norm(means[i] - means[j]))
  assert max(same) < min(other)


@pytest.fixture(scope="module")
def casme2_scores():
  """Snippet scores and labels on the full casme2 plan at F=64."""
  plan = synthetic.plan("casme2", seed=0)
  latents = synthetic.make_latents("casme2", 64, seed=0)
  s = plan.preset.snippet_length
  annotations, distractors = _by_video(plan.annotations), _by_video(plan.distractors)
  out = {k: [] for k in ("naive", "oracle", "coverage", "distractor")}
  for video, rgb, flow in synthetic.iter_features(plan, 64):
    t = rgb.shape[0]
    rgb_c, flow_c = rgb - rgb.mean(0), flow - flow.mean(0)
    out["naive"].append(np.linalg.norm(flow_c, axis=1))
    proj = (np.einsum("tf,kjf->tkj", rgb_c, latents.patterns[0])
            + np.einsum("tf,kjf->tkj", flow_c, latents.patterns[1]))
    out["oracle"].append(proj.reshape(t, -1).max(1))
    rows = annotations.get(video.video, [])
    out["coverage"].append(snippet_coverage(t, s, [(a.onset, a.offset) for a in rows]) / s)
    dist = [(d.onset, d.offset) for d in distractors.get(video.video, [])]
    out["distractor"].append(snippet_coverage(t, s, dist) > 0)
  return {k: np.concatenate(v) for k, v in out.items()}


def test_rank_auc_matches_the_pairwise_definition():
  rng = np.random.default_rng(0)
  scores = np.round(rng.normal(size=60), 1)  # with ties
  labels = rng.random(60) < 0.3
  pairs = [1.0 if p > n else 0.5 if p == n else 0.0
           for p in scores[labels] for n in scores[~labels]]
  assert rank_auc(scores, labels) == pytest.approx(np.mean(pairs))


def test_oracle_projection_beats_a_naive_flow_norm_detector(casme2_scores):
  inside = casme2_scores["coverage"] >= 0.5
  oracle = rank_auc(casme2_scores["oracle"], inside)
  naive = rank_auc(casme2_scores["naive"], inside)
  # Measured (seed 0): oracle 0.953, naive 0.621.
  assert oracle >= 0.9
  assert naive <= oracle - 0.15
  assert naive > 0.5  # the flow norm still carries some signal


def test_distractors_look_like_expressions_only_to_the_naive_detector(casme2_scores):
  inside = casme2_scores["coverage"] >= 0.5
  distractor = casme2_scores["distractor"] & (casme2_scores["coverage"] == 0)
  naive, oracle = casme2_scores["naive"], casme2_scores["oracle"]
  assert naive[distractor].mean() >= naive[inside].mean()
  assert oracle[distractor].mean() < 0.5 * oracle[inside].mean()
