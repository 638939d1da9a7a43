"""Tests for pwes_jax.data.points: point labels drawn from ground-truth intervals."""

import logging

import numpy as np
import pytest

from pwes_jax.data import layout
from pwes_jax.data import points

INFO = layout.DatasetInfo("tiny", fps=30.0, snippet_length=8, feature_dim=4)
VIDEOS = (
    layout.Video("s1", "v_a", 81),  # T = 10
    layout.Video("s1", "v_b", 70),  # T = 8; frames 64..69 fall in the dropped tail
    layout.Video("s2", "v_neg", 50),  # no annotation
    layout.Video("s2", "v_c", 200),  # T = 24
)
ANNOTATIONS = (
    layout.Annotation("s1", "v_a", 3, 5, 12, "ME"),
    layout.Annotation("s1", "v_a", 40, -1, 79, "MaE"),
    layout.Annotation("s1", "v_b", 60, 66, 69, "MaE"),
    layout.Annotation("s2", "v_c", 0, -1, 0, "ME"),
    layout.Annotation("s2", "v_c", 100, 150, 190, "MaE"),
    layout.Annotation("s2", "v_c", 120, 121, 125, "ME"),
)


def make_dataset(videos=VIDEOS, annotations=ANNOTATIONS):
  return layout.Dataset("/nonexistent", INFO, tuple(videos), tuple(annotations))


def _ref_snippet(frame, num_frames):
  t = (num_frames - 1) // INFO.snippet_length
  return min(frame // INFO.snippet_length, t - 1)


@pytest.mark.parametrize("seed", [0, 1, 12345], ids=["seed0", "seed1", "seed12345"])
def test_random_points_lie_in_their_interval_and_snippet_range(seed):
  ds = make_dataset()
  pts = points.sample_points(ds, "random", seed)
  assert list(pts) == [v.video for v in VIDEOS]
  for v in VIDEOS:
    anns = ds.annotations_of(v.video)
    p = pts[v.video]
    assert len(p) == len(anns)
    assert p.frames.dtype == np.int64 and p.snippets.dtype == np.int32
    assert p.labels.dtype == np.int32
    t = INFO.num_snippets(v.num_frames)
    for k, a in enumerate(anns):
      assert a.onset <= p.frames[k] <= a.offset
      assert p.snippets[k] == _ref_snippet(int(p.frames[k]), v.num_frames)
      assert 0 <= p.snippets[k] < t
      assert p.labels[k] == layout.CLASS_NAMES.index(a.type)


def test_frames_in_the_dropped_tail_map_to_the_last_snippet():
  got = points.frame_to_snippet(np.array([0, 7, 8, 63, 64, 69]), 8, 8)
  np.testing.assert_array_equal(got, [0, 0, 1, 7, 7, 7])


def test_same_seed_gives_same_points_and_other_seeds_differ():
  ds = make_dataset()
  a = points.sample_points(ds, "random", 7)
  b = points.sample_points(ds, "random", 7)
  for name in a:
    np.testing.assert_array_equal(a[name].frames, b[name].frames)
  draws = {tuple(points.sample_points(ds, "random", s)["v_c"].frames) for s in range(20)}
  assert len(draws) > 1


def test_a_videos_draw_does_not_depend_on_the_other_videos():
  full = points.sample_points(make_dataset(), "random", 3)
  only_c = make_dataset(videos=[VIDEOS[3]], annotations=ANNOTATIONS[3:])
  alone = points.sample_points(only_c, "random", 3)
  np.testing.assert_array_equal(alone["v_c"].frames, full["v_c"].frames)
  reordered = make_dataset(videos=VIDEOS[::-1])
  np.testing.assert_array_equal(points.sample_points(reordered, "random", 3)["v_c"].frames,
                                full["v_c"].frames)


def test_apex_mode_uses_apex_and_falls_back_to_midpoint_with_a_warning(caplog):
  ds = make_dataset()
  with caplog.at_level(logging.WARNING):
    pts = points.sample_points(ds, "apex")
  np.testing.assert_array_equal(pts["v_a"].frames, [5, (40 + 79) // 2])
  np.testing.assert_array_equal(pts["v_b"].frames, [66])
  np.testing.assert_array_equal(pts["v_b"].snippets, [7])
  np.testing.assert_array_equal(pts["v_c"].frames, [0, 150, 121])
  assert len(points.missing_apex(ds)) == 2
  assert any("2 of 6 intervals have no apex" in r.getMessage() for r in caplog.records)


def test_apex_mode_ignores_the_seed():
  ds = make_dataset()
  a, b = points.sample_points(ds, "apex", 0), points.sample_points(ds, "apex", 99)
  for name in a:
    np.testing.assert_array_equal(a[name].frames, b[name].frames)


def test_random_draws_are_roughly_uniform_over_the_interval():
  # 2000 draws on [10, 19] (10 frames): expected 200 per frame; loose chi-square bound.
  video = layout.Video("s", "v", 100)
  ann = [layout.Annotation("s", "v", 10, -1, 19, "MaE")]
  ds = make_dataset(videos=[video], annotations=ann)
  frames = np.array([points.points_of_video(ds, video, ann, "random", s).frames[0]
                     for s in range(2000)])
  counts = np.bincount(frames - 10, minlength=10)
  assert counts.shape == (10,) and counts.min() > 0  # both ends are reachable
  chi2 = float(((counts - 200.0) ** 2 / 200.0).sum())
  assert chi2 < 40.0  # 9 dof: p(chi2 > 40) < 1e-5


def test_negative_video_has_no_points_and_a_zero_video_label():
  p = points.sample_points(make_dataset())["v_neg"]
  assert len(p) == 0 and p.frames.shape == (0,)
  np.testing.assert_array_equal(p.video_label(), [0.0, 0.0])


@pytest.mark.parametrize("video,expected", [("v_a", [1, 1]), ("v_b", [0, 1]), ("v_c", [1, 1])],
                         ids=["both_classes", "macro_only", "repeated_classes"])
def test_video_label_marks_classes_with_a_point(video, expected):
  label = points.sample_points(make_dataset())[video].video_label(2)
  assert label.dtype == np.float32
  np.testing.assert_array_equal(label, expected)


def test_point_labels_are_read_only():
  p = points.sample_points(make_dataset())["v_a"]
  with pytest.raises(ValueError):
    p.frames[0] = 3


@pytest.mark.parametrize("mode,seed", [("first", 0), ("random", -1), ("random", 1.5)],
                         ids=["unknown_mode", "negative_seed", "float_seed"])
def test_bad_arguments_raise_value_error(mode, seed):
  with pytest.raises(ValueError):
    points.sample_points(make_dataset(), mode, seed)


def test_max_points_is_the_largest_count():
  assert points.max_points(points.sample_points(make_dataset())) == 3
