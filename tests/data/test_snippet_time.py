"""Snippet times for overlapping windows: a snippet is the frames around its window's centre.

Hand-worked with 8-frame windows at strides 8, 4, 2 and 1: proposals, point labels and the
snippet ground truth all place a snippet at its window's centre, and with stride == window
(the default) nothing moves.
"""

import ml_collections
import numpy as np
import pytest

from pwes_jax.data import layout
from pwes_jax.data import points
from pwes_jax.data import snippet_time
from pwes_jax.data import source
from pwes_jax.evaluation import inference
from pwes_jax.evaluation import intervals


# (stride, snippet, its window, its own frames): window = 8 frames.
HAND_WORKED = [
    (8, 3, (24, 31), (24, 31)),  # no overlap: the window is the snippet
    (4, 3, (12, 19), (14, 17)),  # centre 15.5: the 4 frames around it
    (2, 10, (20, 27), (23, 24)),  # centre 23.5
    (1, 10, (10, 17), (13, 13)),  # centre 13.5 lies between frames: the earlier one
]


@pytest.mark.parametrize("stride,t,window_frames,cell", HAND_WORKED,
                         ids=["stride8", "stride4", "stride2", "stride1"])
def test_a_snippet_is_the_frames_around_its_windows_centre(stride, t, window_frames, cell):
  assert (t * stride, t * stride + 8 - 1) == window_frames
  on, off = snippet_time.snippet_frames(t, t, stride=stride, window=8)
  assert (int(on), int(off)) == cell
  # Each of its frames maps back to it; the frames just outside go to its neighbours.
  got = snippet_time.frame_to_snippet(np.arange(cell[0] - 1, cell[1] + 2), stride=stride,
                                      window=8, num_snippets=100)
  assert got.tolist() == [t - 1] + [t] * (cell[1] - cell[0] + 1) + [t + 1]


def _config():
  settings = ml_collections.ConfigDict(dict(top_ratio=0.3, nms_threshold=0.01,
                                            me_max_seconds=0.5, flank_ratio=0.25))
  return ml_collections.ConfigDict(dict(inference=settings))


# A 7-frame ME at frames 21..27 (centred on frame 24). A perfect detector fires on the snippets
# whose windows are centred inside it. (stride, those snippets, the proposal's frames).
PERFECT = [
    (4, [5], (22, 25)),  # window 20..27, centre 23.5
    (2, [9, 10, 11], (21, 26)),  # centres 21.5, 23.5, 25.5
    (1, list(range(18, 24)), (21, 26)),  # centres 21.5 .. 26.5
]


@pytest.mark.parametrize("stride,fired,frames", PERFECT, ids=["stride4", "stride2", "stride1"])
def test_a_perfect_detector_finds_a_7_frame_me_with_overlapping_windows(stride, fired, frames):
  num_frames = 61
  t = (num_frames - 1) // stride
  attention = np.zeros(t, np.float32)
  attention[fired] = 1.0
  suppressed = np.stack([attention, np.zeros_like(attention)], 1)
  props = inference.to_proposals({"attention": attention, "suppressed": suppressed}, _config(),
                                 fps=30.0, snippet_length=stride, window=8,
                                 num_frames=num_frames)
  top = max(props, key=lambda p: p["score"])
  assert (top["start_snippet"], top["end_snippet"]) == (fired[0], fired[-1])
  assert (top["onset"], top["offset"], top["type"]) == (*frames, "ME")
  assert intervals.iou(top["onset"], top["offset"], 21, 27) >= 0.5
  # Read from the windows' starts (what the frames were before) the same detection misses.
  start_on, start_off = fired[0] * stride, (fired[-1] + 1) * stride - 1
  assert intervals.iou(start_on, start_off, 21, 27) < 0.5


def test_proposals_never_pass_the_last_frame():
  # stride 4, window 8: the last snippet's frames would end at 30 * 4 + 1 = 121 >= 121 frames.
  out = snippet_time.place([{"start_snippet": 28, "end_snippet": 29, "onset": 0, "offset": 0}],
                           stride=4, window=8, num_frames=121)
  assert (out[0]["onset"], out[0]["offset"]) == (114, 120)


def _dataset(stride, window, annotations):
  info = layout.DatasetInfo("d", 30.0, stride, 4, {"snippet_window": window})
  return layout.Dataset("/nonexistent", info, (layout.Video("s1", "v", 61),), tuple(annotations))


@pytest.mark.parametrize("stride,snippet", [(8, 3), (4, 5), (2, 10), (1, 21)],
                         ids=["stride8", "stride4", "stride2", "stride1"])
def test_a_point_label_goes_to_the_window_centred_on_it(stride, snippet):
  ds = _dataset(stride, 8, [layout.Annotation("s1", "v", 21, 24, 27, "ME")])
  p = points.sample_points(ds, "apex")["v"]
  assert p.frames.tolist() == [24] and p.snippets.tolist() == [snippet]
  lo, hi = snippet_time.snippet_frames(snippet, snippet, stride=stride, window=8)
  assert lo <= 24 <= hi


def test_the_snippet_ground_truth_covers_the_windows_centred_in_the_interval():
  ds = _dataset(2, 8, [layout.Annotation("s1", "v", 21, -1, 27, "ME")])
  inside = source.snippet_ground_truth(ds)["v"]
  assert np.flatnonzero(inside).tolist() == [9, 10, 11, 12]  # frames 21-22 .. 27-28


def test_without_overlap_nothing_moves():
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 400, 50)
  np.testing.assert_array_equal(points.frame_to_snippet(frames, 8, 40),
                                np.minimum(frames // 8, 39))
  props = [{"start_snippet": 2, "end_snippet": 4, "onset": 16, "offset": 39}]
  assert snippet_time.place(props, stride=8, window=8, num_frames=81) == props
  info = layout.DatasetInfo("d", 30.0, 8, 4, {})
  assert snippet_time.window_of(info) == 8
  made = layout.DatasetInfo("d", 30.0, 2, 4, {"extraction": {"snippet_length": 8}})
  assert snippet_time.window_of(made) == 8  # extract_features' record, before snippet_window
