"""pwes_jax/data/source.py: the per-snippet ground truth used to measure attention and pseudo
labels."""

import numpy as np

from pwes_jax.data import layout
from pwes_jax.data import source


def _dataset(annotations, num_frames=81, snippet_length=8):
  info = layout.DatasetInfo(name="hand", fps=30.0, snippet_length=snippet_length)
  videos = (layout.Video("s1", "v1", num_frames), layout.Video("s1", "neg", num_frames))
  return layout.Dataset(root="/nonexistent", info=info, videos=videos,
                        annotations=tuple(layout.Annotation("s1", "v1", *a) for a in annotations))


def test_snippet_classes_hand_case_me_wins_over_mae_and_negative_videos_are_background():
  # 81 frames, 8-frame snippets -> 10 snippets. MaE frames 8..40 -> snippets 1..5; ME frames
  # 30..33 -> snippet 3..4 (frame 30 is in snippet 3, 33 in snippet 4), written over the MaE.
  ds = _dataset([(8, 20, 40, "MaE"), (30, 31, 33, "ME")])
  got = source.snippet_classes(ds)
  np.testing.assert_array_equal(got["v1"], [2, 1, 1, 0, 0, 1, 2, 2, 2, 2])
  np.testing.assert_array_equal(got["neg"], [2] * 10)
  np.testing.assert_array_equal(source.snippet_ground_truth(ds)["v1"],
                                [0, 1, 1, 1, 1, 1, 0, 0, 0, 0])


def test_an_interval_past_the_last_snippet_is_clipped():
  ds = _dataset([(70, 75, 80, "ME")])  # frame 80 would be snippet 10 of 10 (0-based 0..9)
  np.testing.assert_array_equal(source.snippet_classes(ds)["v1"][-2:], [0, 0])
