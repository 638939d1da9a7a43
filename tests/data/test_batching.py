"""Tests for pwes_jax.data.batching: buckets, padded batches, deterministic sampling."""

import collections
import itertools

import numpy as np
import pytest

from pwes_jax.data import batching
from pwes_jax.data import layout
from pwes_jax.data import points as points_lib

F, C = 3, 2


def make_video(name, length, num_points=1, seed=0, subject="s"):
  rng = np.random.default_rng([seed, length, num_points])
  snippets = rng.integers(0, length, num_points)
  labels = rng.integers(0, C, num_points)
  pts = points_lib.PointLabels(snippets * 8, snippets, labels)
  return batching.VideoArrays(
      name, subject,
      rng.normal(size=(length, F)).astype(np.float32) + 1.0,  # never exactly 0
      rng.normal(size=(length, F)).astype(np.float32) - 1.0,
      pts, pts.video_label(C))


def make_videos(lengths, prefix="v", num_points=1):
  return [make_video(f"{prefix}{i}", int(t), num_points, seed=i) for i, t in enumerate(lengths)]


def realistic_lengths(n=98, seed=0):
  """CAS(ME)^2-like snippet counts: 82..546, mean about 326."""
  rng = np.random.default_rng(seed)
  lengths = np.clip(np.round(rng.normal(326, 110, n)), 82, 546).astype(np.int64)
  lengths[:2] = [82, 546]
  return lengths


# ----------------------------------------------------------------------------------------------
# Buckets.


def brute_force_padding(lengths, batch_size, max_buckets, multiple):
  """Least total padding over every admissible bucket set (plain loops)."""
  top = -(-max(lengths) // multiple) * multiple
  candidates = list(range(multiple, top + 1, multiple))
  min_count = min(batch_size, len(lengths))
  best = None
  for k in range(1, max_buckets + 1):
    for combo in itertools.combinations(candidates, k):
      if combo[-1] != top:
        continue
      counts = [0] * k
      pad = 0
      for t in lengths:
        j = next(i for i, b in enumerate(combo) if b >= t)
        counts[j] += 1
        pad += combo[j] - t
      if min(counts) < min_count:
        continue
      best = pad if best is None else min(best, pad)
  return best


def total_padding(lengths, buckets):
  pad = 0
  for t in lengths:
    pad += min(b for b in buckets if b >= t) - t
  return pad


@pytest.mark.parametrize("seed,n,batch_size,max_buckets,multiple", [
    (0, 12, 2, 3, 4),
    (1, 20, 3, 3, 4),
    (2, 9, 4, 2, 2),
    (3, 15, 1, 4, 5),
    (4, 5, 8, 3, 4),
    (5, 30, 4, 3, 3),
], ids=["small_batches", "more_videos", "two_buckets", "batch_of_one", "fewer_videos_than_batch",
        "multiple_of_three"])
def test_bucket_dp_matches_brute_force(seed, n, batch_size, max_buckets, multiple):
  lengths = np.random.default_rng(seed).integers(1, 40, n)
  buckets = batching.make_buckets(lengths, batch_size, max_buckets, multiple)
  assert total_padding(lengths, buckets) == brute_force_padding(
      lengths.tolist(), batch_size, max_buckets, multiple)


@pytest.mark.parametrize("batch_size,max_buckets", [(8, 6), (8, 1), (4, 8), (100, 6)],
                         ids=["paper_setting", "one_bucket", "many_small", "batch_above_n"])
def test_buckets_are_sorted_multiples_holding_enough_videos(batch_size, max_buckets):
  lengths = realistic_lengths()
  buckets = batching.make_buckets(lengths, batch_size, max_buckets, 8)
  assert list(buckets) == sorted(set(buckets))
  assert all(isinstance(b, int) and b % 8 == 0 for b in buckets)
  assert buckets[-1] >= lengths.max() and len(buckets) <= max_buckets
  counts = np.bincount(batching.assign_buckets(lengths, buckets), minlength=len(buckets))
  assert counts.min() >= min(batch_size, len(lengths))


def test_equal_lengths_give_a_single_bucket():
  assert batching.make_buckets([17] * 20, 8, 6, 8) == (24,)


def test_padding_share_matches_a_loop():
  lengths, buckets = [3, 8, 9, 16, 20], (8, 16, 24)
  padded = [8, 8, 16, 16, 24]
  expected = sum(p - t for p, t in zip(padded, lengths)) / sum(padded)
  assert batching.padding_share(lengths, buckets) == pytest.approx(expected)


def test_padding_share_on_realistic_lengths_is_at_most_ten_percent():
  lengths = realistic_lengths()
  share = batching.padding_share(lengths, batching.make_buckets(lengths, 8, 6, 8))
  assert share <= 0.10, share


@pytest.mark.parametrize("lengths,kwargs", [
    ([], {}),
    ([0, 5], {}),
    ([2.5, 5], {}),
    ([5], {"max_buckets": 0}),
    ([5], {"multiple": 0}),
], ids=["empty", "zero_length", "fractional", "no_buckets", "zero_multiple"])
def test_bad_bucket_arguments_raise_value_error(lengths, kwargs):
  with pytest.raises(ValueError):
    batching.make_buckets(lengths, **kwargs)


def test_bucket_probs_are_video_shares():
  np.testing.assert_allclose(batching.bucket_probs([1, 2, 9, 16, 30], (8, 16, 32)),
                             [0.4, 0.4, 0.2])


# ----------------------------------------------------------------------------------------------
# Padded batches.


def check_batch(batch, videos, ids, length, batch_size, max_points):
  """Shapes, dtypes, masks and zero padding against a per-row loop."""
  shapes = {"rgb": (batch_size, length, F), "flow": (batch_size, length, F),
            "valid": (batch_size, length), "point_index": (batch_size, max_points),
            "point_label": (batch_size, max_points), "point_valid": (batch_size, max_points),
            "video_label": (batch_size, C), "video_id": (batch_size,),
            "row_valid": (batch_size,), "truth": (batch_size, length)}
  assert set(batch) == set(batching.BATCH_KEYS) == set(shapes)
  for k, s in shapes.items():
    assert batch[k].shape == s, k
    assert batch[k].dtype == (np.int32 if k in ("point_index", "point_label", "video_id",
                                                "truth") else np.float32), k
  for row in range(batch_size):
    if row < len(videos):
      v, t, n = videos[row], videos[row].length, len(videos[row].points)
      assert batch["video_id"][row] == ids[row] and batch["row_valid"][row] == 1
      np.testing.assert_array_equal(batch["rgb"][row, :t], v.rgb)
      np.testing.assert_array_equal(batch["flow"][row, :t], v.flow)
      np.testing.assert_array_equal(batch["point_index"][row, :n], v.points.snippets)
      np.testing.assert_array_equal(batch["point_label"][row, :n], v.points.labels)
      np.testing.assert_array_equal(batch["video_label"][row], v.video_label)
      expected = np.full(t, -1) if v.truth is None else v.truth
      np.testing.assert_array_equal(batch["truth"][row, :t], expected)
    else:
      t = n = 0
      assert batch["video_id"][row] == -1 and batch["row_valid"][row] == 0
      assert not batch["video_label"][row].any()
    for j in range(length):
      assert batch["valid"][row, j] == (1.0 if j < t else 0.0)
    assert not batch["rgb"][row, t:].any() and not batch["flow"][row, t:].any()
    assert (batch["truth"][row, t:] == -1).all()
    for j in range(max_points):
      assert batch["point_valid"][row, j] == (1.0 if j < n else 0.0)
    assert not batch["point_index"][row, n:].any() and not batch["point_label"][row, n:].any()


def test_pad_batch_masks_and_zero_padding():
  videos = [make_video("a", 5, 2), make_video("b", 16, 3), make_video("c", 1, 0)]
  batch = batching.pad_batch(videos, 16, 5, 4, [7, 3, 0])
  check_batch(batch, videos, [7, 3, 0], 16, 5, 4)
  np.testing.assert_array_equal(batch["valid"].sum(1), [5, 16, 1, 0, 0])


@pytest.mark.parametrize("videos,length,batch_size,max_points,fragment", [
    ([make_video("long", 17)], 16, 2, 4, "video 'long': 17 snippets do not fit"),
    ([make_video("busy", 8, 5)], 16, 2, 4, "video 'busy': 5 points > max_points 4"),
    ([make_video("a", 4), make_video("b", 4)], 16, 1, 4, "2 videos > batch_size 1"),
    ([], 16, 2, 4, "no videos"),
], ids=["too_long", "too_many_points", "too_many_videos", "no_videos"])
def test_pad_batch_errors_name_the_problem(videos, length, batch_size, max_points, fragment):
  with pytest.raises(ValueError, match=fragment):
    batching.pad_batch(videos, length, batch_size, max_points, list(range(len(videos))))


def test_video_arrays_rejects_points_past_the_end():
  pts = points_lib.PointLabels([80], [10], [0])
  with pytest.raises(ValueError, match="video 'x': point snippet 10"):
    batching.VideoArrays("x", "s", np.zeros((10, F)), np.zeros((10, F)), pts,
                         pts.video_label(C))


# ----------------------------------------------------------------------------------------------
# Sampler.


BUCKETS = (8, 16, 24, 32)
LENGTHS = [3, 5, 8, 8, 10, 12, 14, 15, 16, 16, 17, 20, 24, 30, 32, 4, 6, 7, 9, 11]


def batches_equal(a, b):
  return all(np.array_equal(a[k], b[k]) for k in batching.BATCH_KEYS)


def test_batch_of_a_step_does_not_depend_on_call_history():
  videos = make_videos(LENGTHS)
  s1 = batching.BatchSampler(videos, BUCKETS, 4, 3, seed=5)
  forward = [s1.sample(s) for s in range(12)]
  s2 = batching.BatchSampler(videos, BUCKETS, 4, 3, seed=5)
  for s in [11, 3, 0, 7, 7, 1, 2, 4, 5, 6, 8, 9, 10]:
    assert batches_equal(s2.sample(s), forward[s]), s
  s3 = batching.BatchSampler(videos, BUCKETS, 4, 3, seed=6)
  assert not all(batches_equal(s3.sample(s), forward[s]) for s in range(12))


def test_sampled_batches_satisfy_mask_invariants():
  videos = make_videos(LENGTHS, num_points=2)
  sampler = batching.BatchSampler(videos, BUCKETS, 4, 3, seed=0)
  for step in range(20):
    batch = sampler.sample(step)
    b = sampler.bucket_for_step(step)
    ids = batch["video_id"]
    check_batch(batch, [videos[i] for i in ids], ids, BUCKETS[b], 4, 3)
    # Without replacement when enough videos fit.
    assert len(set(ids.tolist())) == 4


def test_default_bucket_probs_follow_video_counts():
  videos = make_videos(LENGTHS)
  sampler = batching.BatchSampler(videos, BUCKETS, 2, 1, seed=0)
  counts = np.bincount([batching.assign_buckets([t], BUCKETS)[0] for t in LENGTHS], minlength=4)
  np.testing.assert_allclose(sampler.probs, counts / counts.sum())
  draws = np.bincount([sampler.bucket_for_step(s) for s in range(4000)], minlength=4) / 4000
  np.testing.assert_allclose(draws, sampler.probs, atol=0.03)


def test_given_bucket_probs_are_used_and_zero_buckets_never_drawn():
  sampler = batching.BatchSampler(make_videos(LENGTHS), BUCKETS, 2, 1, seed=0,
                                  bucket_probs=[0.0, 3.0, 0.0, 1.0])
  np.testing.assert_allclose(sampler.probs, [0.0, 0.75, 0.0, 0.25])
  draws = np.bincount([sampler.bucket_for_step(s) for s in range(4000)], minlength=4) / 4000
  assert draws[0] == 0 and draws[2] == 0
  np.testing.assert_allclose(draws, sampler.probs, atol=0.03)


def test_folds_with_the_same_seed_and_probs_share_the_bucket_at_every_step():
  probs = batching.bucket_probs(LENGTHS, BUCKETS)
  videos = make_videos(LENGTHS)
  fold_a = batching.BatchSampler(videos[:12], BUCKETS, 4, 3, seed=9, bucket_probs=probs)
  fold_b = batching.BatchSampler(videos[5:], BUCKETS, 4, 3, seed=9, bucket_probs=probs)
  for step in range(50):
    assert fold_a.sample(step)["rgb"].shape == fold_b.sample(step)["rgb"].shape


@pytest.mark.parametrize("probs,fragment", [
    ([1.0, 1.0], "shape"),
    ([1.0, -1.0, 1.0, 1.0], ">= 0"),
    ([0.0, 0.0, 0.0, 0.0], "not all 0"),
    ([1.0, np.nan, 1.0, 1.0], "finite"),
], ids=["wrong_length", "negative", "all_zero", "nan"])
def test_bad_bucket_probs_raise_value_error(probs, fragment):
  with pytest.raises(ValueError, match=fragment):
    batching.BatchSampler(make_videos(LENGTHS), BUCKETS, 2, 1, seed=0, bucket_probs=probs)


def test_bucket_no_video_fits_raises_a_clear_error():
  videos = make_videos([20, 30])
  with pytest.raises(ValueError, match=r"bucket 0 \(length 8\).*none of the sampler's 2"):
    batching.BatchSampler(videos, BUCKETS, 2, 1, seed=0, bucket_probs=[1, 0, 1, 1])
  sampler = batching.BatchSampler(videos, BUCKETS, 2, 1, seed=0)
  with pytest.raises(ValueError, match="none of the sampler's"):
    sampler.sample(0, bucket=1)


def test_small_bucket_is_topped_up_from_the_nearest_smaller_buckets():
  # Bucket 32 holds one video; bucket 24 two; bucket 16 three; batch of 5.
  videos = make_videos([30, 20, 24, 10, 12, 16, 2, 3])
  sampler = batching.BatchSampler(videos, BUCKETS, 5, 1, seed=0)
  for step in range(10):
    _, idx = sampler.indices_for_step(step, bucket=3)
    idx = sorted(idx.tolist())
    assert len(set(idx)) == 5
    assert idx[:3] == [0, 1, 2]  # every video of buckets 32 and 24
    assert set(idx[3:]) <= {3, 4, 5}  # then two from bucket 16, never bucket 8


def test_too_few_fitting_videos_are_drawn_with_replacement():
  videos = make_videos([3, 6, 30])
  sampler = batching.BatchSampler(videos, BUCKETS, 5, 1, seed=0)
  batch = sampler.sample(0, bucket=0)
  ids = batch["video_id"].tolist()
  assert set(ids) == {0, 1} and batch["row_valid"].all()
  check_batch(batch, [videos[i] for i in ids], ids, 8, 5, 1)


def test_sampler_rejects_videos_longer_than_the_largest_bucket():
  with pytest.raises(ValueError, match="video 'v1': 40 snippets exceed the largest bucket 32"):
    batching.BatchSampler(make_videos([3, 40]), BUCKETS, 2, 1, seed=0)


def test_sampler_rejects_videos_with_too_many_points():
  with pytest.raises(ValueError, match="video 'v0': 3 points > max_points 2"):
    batching.BatchSampler(make_videos([5], num_points=3), BUCKETS, 2, 2, seed=0)


def test_sampler_exposes_names_and_buckets():
  sampler = batching.BatchSampler(make_videos([3, 9]), BUCKETS, 2, 1, seed=0)
  assert sampler.video_names == ["v0", "v1"] and sampler.buckets == BUCKETS


# ----------------------------------------------------------------------------------------------
# Inference iteration.


def test_iterate_padded_yields_every_video_once_grouped_by_bucket():
  videos = make_videos(LENGTHS, num_points=2)
  batches = list(batching.iterate_padded(videos, BUCKETS, 3, 2))
  seen = collections.Counter()
  last_length = 0
  for batch in batches:
    length = batch["rgb"].shape[1]
    assert length in BUCKETS and length >= last_length
    last_length = length
    ids = [int(i) for i in batch["video_id"] if i >= 0]
    seen.update(ids)
    check_batch(batch, [videos[i] for i in ids], ids, length, 3, 2)
    assert all(batching.assign_buckets([videos[i].length], BUCKETS)[0] == BUCKETS.index(length)
               for i in ids)
  assert seen == collections.Counter(range(len(videos)))
  assert len(batches) == batching.num_padded_batches(LENGTHS, BUCKETS, 3)


def test_iterate_padded_validates_before_the_first_batch():
  with pytest.raises(ValueError, match="video 'v1'"):
    batching.iterate_padded(make_videos([3, 40]), BUCKETS, 2, 1)


def test_load_video_arrays_reads_features_and_points(tmp_path):
  info = layout.DatasetInfo("tiny", 30.0, 4, F)
  videos = (layout.Video("s1", "a", 41), layout.Video("s2", "b", 21))
  anns = (layout.Annotation("s1", "a", 5, -1, 9, "ME"),)
  layout.write_dataset(str(tmp_path), info, videos, anns)
  for v in videos:
    t = info.num_snippets(v.num_frames)
    layout.write_features(str(tmp_path), v.video, np.ones((t, F)), np.full((t, F), 2.0))
  ds = layout.load_dataset(str(tmp_path))
  arrays = batching.load_video_arrays(ds, points_lib.sample_points(ds), ["b", "a"])
  assert [a.name for a in arrays] == ["b", "a"] and [a.length for a in arrays] == [5, 10]
  np.testing.assert_array_equal(arrays[1].video_label, [1, 0])
  assert arrays[1].points.snippets.tolist() in ([1], [2])
