"""Tests for pwes_jax.method.losses against plain numpy loops, on padded, fixed-shape batches."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pwes_jax.method import losses

EPS = 1e-6
B, T, C = 4, 10, 2
LENGTHS = (10, 7, 3, 0)  # valid prefix per row; the last row is a padded batch row
ROW_VALID = np.array([1.0, 1.0, 1.0, 0.0], np.float32)
RATIOS = (16.0, 8.0, 4.0)

# Jitted once per module: eager mode would compile every primitive separately (slow on CPU).
topk_mean = jax.jit(losses.masked_topk_mean, static_argnums=3)
mil_loss = jax.jit(losses.mil_loss, static_argnums=(4, 5))
guide_loss = jax.jit(losses.guide_loss)
sparsity_loss = jax.jit(losses.sparsity_loss)
mutual_loss = jax.jit(losses.mutual_loss)
snippet_loss = jax.jit(losses.snippet_loss)
point_labels_dense = jax.jit(losses.point_labels_dense, static_argnums=(3, 4))


def make_valid(lengths=LENGTHS, t=T):
  valid = np.zeros([len(lengths), t], np.float32)
  for b, n in enumerate(lengths):
    valid[b, :n] = 1.0
  return valid


def make_inputs(seed=0):
  rng = np.random.default_rng(seed)
  probs = rng.uniform(0.02, 0.98, size=[B, T, C + 1]).astype(np.float32)
  a_rgb = rng.uniform(0.02, 0.98, size=[B, T]).astype(np.float32)
  a_flow = rng.uniform(0.02, 0.98, size=[B, T]).astype(np.float32)
  attention = 0.5 * (a_rgb + a_flow)
  suppressed = attention[..., None] * probs[..., :C]
  video_fg = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], np.float32)
  return dict(probs=probs, a_rgb=a_rgb, a_flow=a_flow, attention=attention,
              suppressed=suppressed, video_fg=video_fg)


def scramble_padding(x, valid, seed):
  """Replaces the padded snippets of ``x [B, T, ...]`` with other (finite) values."""
  rng = np.random.default_rng(seed)
  noise = rng.uniform(0.0, 1.0, size=x.shape).astype(x.dtype)
  pad = (valid == 0).reshape(valid.shape + (1,) * (x.ndim - 2))
  return np.where(pad, noise, x)


# ---------------------------------------------------------------- numpy references


def ref_topk_mean(row, valid_row, k, k_max):
  vals = sorted([float(row[t]) for t in range(len(row)) if valid_row[t] > 0], reverse=True)
  if not vals:
    return 0.0
  k = max(1, min(int(k), int(k_max), len(row), len(vals)))
  return sum(vals[:k]) / k


def ref_bce(p, y):
  p = min(max(p, EPS), 1.0 - EPS)
  return -(y * math.log(p) + (1.0 - y) * math.log(1.0 - p))


def ref_mil(scores, labels, valid, row_valid, ratios, fixed_k=None):
  total, rows = 0.0, 0.0
  for b in range(scores.shape[0]):
    if row_valid[b] == 0:
      continue
    n = int(valid[b].sum())
    per_class = []
    for c, r in enumerate(ratios):
      k = max(1, math.ceil(n / r))
      if fixed_k is not None and fixed_k[c] > 0:
        k = fixed_k[c]
      pooled = ref_topk_mean(scores[b, :, c], valid[b], k, k)
      per_class.append(ref_bce(pooled, labels[b, c]))
    total += sum(per_class) / len(per_class)
    rows += 1
  return total / max(rows, 1.0)


def ref_snippet_mean_loss(per_snippet, valid, row_valid):
  """Mean over valid snippets per row, then over valid rows (``per_snippet(b, t)``)."""
  total, rows = 0.0, 0.0
  for b in range(valid.shape[0]):
    if row_valid[b] == 0:
      continue
    ts = [t for t in range(valid.shape[1]) if valid[b, t] > 0]
    total += sum(per_snippet(b, t) for t in ts) / max(len(ts), 1)
    rows += 1
  return total / max(rows, 1.0)


def ref_snippet_loss(suppressed, probs, labels, valid, row_valid):
  total, videos = 0.0, 0
  for b in range(valid.shape[0]):
    if row_valid[b] == 0:
      continue
    ce, n = 0.0, 0
    for t in range(valid.shape[1]):
      if valid[b, t] == 0 or labels[b, t].sum() == 0:
        continue
      q = np.array(list(suppressed[b, t]) + [probs[b, t, -1]], np.float64)
      q = q / q.sum()
      ce -= math.log(q[int(np.argmax(labels[b, t]))])
      n += 1
    if n:
      total += ce / n
      videos += 1
  return total / max(videos, 1)


def ref_point_labels(index, label, valid, length, num_classes):
  out = np.zeros([length, num_classes + 1], np.float32)
  for i, c, v in zip(index, label, valid):
    if v > 0 and 0 <= i < length:
      out[i] = 0.0
      out[i, c] = 1.0
  return out


# ---------------------------------------------------------------- masked_topk_mean


@pytest.mark.parametrize(
    "ks,k_max",
    [((1, 1, 1, 1), 1), ((3, 2, 1, 1), 3), ((2, 5, 3, 1), 5), ((10, 7, 3, 1), 10),
     ((4, 9, 8, 2), 4), ((20, 20, 20, 20), 25), ((0, -2, 0, 0), 3)],
    ids=["k_one", "k_below_length", "k_equal_to_valid_count", "k_all_valid",
         "k_max_caps_k", "k_max_beyond_length", "k_below_one_becomes_one"])
def test_masked_topk_mean_matches_numpy_sort(ks, k_max):
  x = np.random.default_rng(1).normal(size=[B, T]).astype(np.float32)
  valid = make_valid()
  got = np.asarray(topk_mean(jnp.asarray(x), jnp.asarray(valid), jnp.asarray(ks, jnp.int32),
                             k_max))
  want = [ref_topk_mean(x[b], valid[b], ks[b], k_max) for b in range(B)]
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  assert np.all(np.isfinite(got))


def test_masked_topk_mean_ignores_large_padded_values():
  x = np.zeros([2, 6], np.float32)
  x[0, :3] = [0.1, 0.5, 0.3]
  x[0, 3:] = 100.0  # padding must never be picked
  x[1, :] = [1, 2, 3, 4, 5, 6]
  valid = make_valid((3, 6), 6)
  got = topk_mean(jnp.asarray(x), jnp.asarray(valid), jnp.array([2, 3]), 3)
  np.testing.assert_allclose(np.asarray(got), [0.4, 5.0], rtol=1e-6)


def test_masked_topk_mean_of_an_empty_row_is_zero_with_finite_gradient():
  x = jnp.asarray(np.random.default_rng(2).normal(size=[B, T]).astype(np.float32))
  valid = jnp.asarray(make_valid())
  k = jnp.array([2, 2, 2, 2])
  got = topk_mean(x, valid, k, 4)
  assert float(got[3]) == 0.0
  grad = jax.jit(jax.grad(lambda v: jnp.sum(losses.masked_topk_mean(v, valid, k, 4))))(x)
  assert np.all(np.isfinite(np.asarray(grad)))
  np.testing.assert_array_equal(np.asarray(grad)[np.asarray(valid) == 0], 0.0)


@pytest.mark.parametrize("n,ratio,want", [(0, 4.0, 1), (1, 16.0, 1), (16, 16.0, 1), (17, 16.0, 2),
                                           (10, 4.0, 3), (12, 4.0, 3), (20, 8.0, 3)],
                         ids=["empty", "one", "exact", "just_over", "ten_by_four",
                              "twelve_by_four", "twenty_by_eight"])
def test_topk_k_is_ceil_of_length_over_ratio_at_least_one(n, ratio, want):
  assert int(losses.topk_k(jnp.array([float(n)]), ratio)[0]) == want


def test_static_max_k_bounds_every_bucket_video():
  for length in (1, 5, 16, 17, 33):
    k_max = losses.static_max_k(length, RATIOS)
    assert k_max == max(1, math.ceil(length / 4.0))
    for n in range(length + 1):
      assert all(int(losses.topk_k(jnp.array([float(n)]), r)[0]) <= k_max for r in RATIOS)


# ---------------------------------------------------------------- MIL


@pytest.mark.parametrize("branch", ["original_probs_with_background", "suppressed_foreground"],
                         ids=["branch1_probs", "branch2_suppressed"])
def test_mil_loss_matches_numpy(branch):
  d = make_inputs()
  valid = make_valid()
  if branch == "original_probs_with_background":
    scores, ratios = d["probs"], RATIOS
    labels = np.concatenate([d["video_fg"], np.ones([B, 1], np.float32)], axis=-1)
  else:
    scores, ratios = d["suppressed"], RATIOS[:2]
    labels = d["video_fg"]
  k_max = losses.static_max_k(T, RATIOS)
  got = mil_loss(jnp.asarray(scores), jnp.asarray(labels), jnp.asarray(valid),
                        jnp.asarray(ROW_VALID), ratios, k_max)
  want = ref_mil(scores, labels, valid, ROW_VALID, ratios)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


@pytest.mark.parametrize("fixed_k", [(2, 0, 0), (1, 3, 5), (2, 6, 0)],
                         ids=["me_2_snippets", "every_class_fixed", "me_and_mae_fixed"])
def test_mil_loss_with_a_fixed_k_per_class_matches_numpy(fixed_k):
  d = make_inputs()
  valid = make_valid()
  labels = np.concatenate([d["video_fg"], np.ones([B, 1], np.float32)], axis=-1)
  k_max = max(losses.static_max_k(T, RATIOS), *fixed_k)
  got = losses.mil_loss(jnp.asarray(d["probs"]), jnp.asarray(labels), jnp.asarray(valid),
                        jnp.asarray(ROW_VALID), RATIOS, k_max, fixed_k)
  want = ref_mil(d["probs"], labels, valid, ROW_VALID, RATIOS, fixed_k)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
  ratio_only = losses.mil_loss(jnp.asarray(d["probs"]), jnp.asarray(labels), jnp.asarray(valid),
                               jnp.asarray(ROW_VALID), RATIOS, k_max)
  assert float(ratio_only) != pytest.approx(float(got))


def test_mil_loss_rejects_a_ratio_count_that_differs_from_classes():
  d = make_inputs()
  with pytest.raises(ValueError, match="ratios"):
    losses.mil_loss(jnp.asarray(d["probs"]), jnp.ones([B, C + 1]), jnp.asarray(make_valid()),
                    jnp.asarray(ROW_VALID), RATIOS[:2], 3)


def test_mil_loss_compiles_once_per_shape():
  chex.clear_trace_counter()
  valid, row_valid = jnp.asarray(make_valid()), jnp.asarray(ROW_VALID)
  k_max = losses.static_max_k(T, RATIOS)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def mil(scores, labels, valid, row_valid):
    return losses.mil_loss(scores, labels, valid, row_valid, RATIOS, k_max)

  for seed in (0, 1):
    d = make_inputs(seed)
    labels = np.concatenate([d["video_fg"], np.ones([B, 1], np.float32)], axis=-1)
    got = mil(jnp.asarray(d["probs"]), jnp.asarray(labels), valid, row_valid)
    np.testing.assert_allclose(float(got), ref_mil(d["probs"], labels, make_valid(), ROW_VALID,
                                                   RATIOS), rtol=1e-5)


# ---------------------------------------------------------------- guide, sparsity, mutual


def test_guide_loss_matches_numpy():
  d = make_inputs()
  valid = make_valid()
  got = guide_loss(jnp.asarray(d["attention"]), jnp.asarray(d["probs"][..., -1]),
                          jnp.asarray(valid), jnp.asarray(ROW_VALID))
  want = ref_snippet_mean_loss(
      lambda b, t: abs(1.0 - d["attention"][b, t] - d["probs"][b, t, -1]), valid, ROW_VALID)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_sparsity_loss_matches_numpy():
  d = make_inputs()
  valid = make_valid()
  got = sparsity_loss(jnp.asarray(d["attention"]), jnp.asarray(valid),
                             jnp.asarray(ROW_VALID))
  want = ref_snippet_mean_loss(lambda b, t: d["attention"][b, t], valid, ROW_VALID)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_mutual_loss_matches_numpy():
  d = make_inputs()
  valid = make_valid()
  got = mutual_loss(jnp.asarray(d["a_rgb"]), jnp.asarray(d["a_flow"]), jnp.asarray(valid),
                           jnp.asarray(ROW_VALID))
  # Both MSE terms have the same value; their mean is the plain squared difference.
  want = ref_snippet_mean_loss(lambda b, t: (d["a_rgb"][b, t] - d["a_flow"][b, t]) ** 2, valid,
                               ROW_VALID)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_mutual_loss_gradient_to_each_stream_comes_from_its_own_term_only():
  d = make_inputs()
  valid = make_valid()
  args = (jnp.asarray(d["a_rgb"]), jnp.asarray(d["a_flow"]), jnp.asarray(valid),
          jnp.asarray(ROW_VALID))
  g_rgb, g_flow = jax.jit(jax.grad(losses.mutual_loss, argnums=(0, 1)))(*args)
  # Only 0.5 * mean((a_flow - sg(a_rgb))^2) reaches a_flow:
  # d/da_flow[b, t] = 0.5 * 2 * (a_flow - a_rgb) / n_valid[b] / n_rows, on valid snippets.
  n_valid = np.maximum(valid.sum(axis=1, keepdims=True), 1.0)
  n_rows = ROW_VALID.sum()
  scale = valid * ROW_VALID[:, None] / n_valid / n_rows
  want_flow = (d["a_flow"] - d["a_rgb"]) * scale
  np.testing.assert_allclose(np.asarray(g_flow), want_flow, rtol=1e-5, atol=1e-8)
  np.testing.assert_allclose(np.asarray(g_rgb), -want_flow, rtol=1e-5, atol=1e-8)
  # Without the stop-gradients the gradient would be twice as large.
  plain = lambda r, f: losses._row_mean(  # pylint: disable=protected-access
      losses._snippet_mean(jnp.square(r - f), args[2]), args[3])  # pylint: disable=protected-access
  np.testing.assert_allclose(np.asarray(jax.jit(jax.grad(plain, argnums=1))(args[0], args[1])),
                             2.0 * want_flow, rtol=1e-5, atol=1e-8)


# ---------------------------------------------------------------- snippet loss and point labels


def make_labels():
  labels = np.zeros([B, T, C + 1], np.float32)
  labels[0, 1, 0] = 1.0  # ME
  labels[0, 6, 1] = 1.0  # MaE
  labels[0, 9, 2] = 1.0  # background
  labels[1, 2, 1] = 1.0
  labels[1, 8, 0] = 1.0  # on a padded snippet of row 1: ignored
  # row 2 has no labelled snippet; row 3 is padding but carries a label that must be ignored
  labels[3, 0, 0] = 1.0
  return labels


def test_snippet_loss_matches_numpy_including_a_video_without_labels():
  d = make_inputs()
  valid, labels = make_valid(), make_labels()
  got = snippet_loss(jnp.asarray(d["suppressed"]), jnp.asarray(d["probs"]),
                            jnp.asarray(labels), jnp.asarray(valid), jnp.asarray(ROW_VALID))
  want = ref_snippet_loss(d["suppressed"], d["probs"], labels, valid, ROW_VALID)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_snippet_loss_is_zero_when_no_video_has_labels():
  d = make_inputs()
  got = snippet_loss(jnp.asarray(d["suppressed"]), jnp.asarray(d["probs"]),
                            jnp.zeros([B, T, C + 1]), jnp.asarray(make_valid()),
                            jnp.asarray(ROW_VALID))
  assert float(got) == 0.0


def test_snippet_probabilities_are_normalised_suppressed_and_background():
  d = make_inputs()
  q = np.asarray(losses.snippet_probabilities(jnp.asarray(d["suppressed"]),
                                              jnp.asarray(d["probs"])))
  np.testing.assert_allclose(q.sum(-1), 1.0, rtol=1e-5)
  raw = np.concatenate([d["suppressed"], d["probs"][..., -1:]], axis=-1)
  np.testing.assert_allclose(q, raw / raw.sum(-1, keepdims=True), rtol=1e-5)


@pytest.mark.parametrize(
    "index,label,valid",
    [([1, 4, 7], [0, 1, 2], [1, 1, 1]),
     ([2, 5, 2], [0, 1, 1], [1, 1, 1]),
     ([3, 3, 3, 0], [1, 0, 0, 0], [1, 1, 0, 0]),
     ([0, 0, 0], [0, 0, 0], [0, 0, 0]),
     ([6, 6, 9], [1, 0, 0], [1, 1, 1])],
    ids=["distinct_points", "later_point_wins_a_shared_snippet",
         "invalid_later_point_does_not_win", "all_points_padded", "last_snippet_and_dup"])
def test_point_labels_dense_matches_numpy_scatter(index, label, valid):
  got = point_labels_dense(jnp.asarray(index, jnp.int32), jnp.asarray(label, jnp.int32),
                           jnp.asarray(valid, jnp.float32), T, C)
  want = ref_point_labels(index, label, valid, T, C)
  np.testing.assert_array_equal(np.asarray(got), want)
  assert got.shape == (T, C + 1)


def test_point_labels_dense_vmaps_over_a_padded_batch():
  index = jnp.array([[1, 1, 0], [4, 0, 0]], jnp.int32)
  label = jnp.array([[0, 1, 0], [2, 0, 0]], jnp.int32)
  valid = jnp.array([[1, 1, 0], [1, 0, 0]], jnp.float32)
  dense = jax.jit(jax.vmap(lambda i, l, v: losses.point_labels_dense(i, l, v, T, C)))
  got = dense(index, label, valid)
  for b in range(2):
    np.testing.assert_array_equal(
        np.asarray(got[b]), ref_point_labels(np.asarray(index[b]), np.asarray(label[b]),
                                             np.asarray(valid[b]), T, C))


# ---------------------------------------------------------------- padding invariance


@jax.jit
def all_losses(j, labels, valid, row_valid):
  k_max = losses.static_max_k(T, RATIOS)
  video_labels = jnp.concatenate([j["video_fg"], jnp.ones([B, 1])], axis=-1)
  return {
      "mil": losses.mil_loss(j["probs"], video_labels, valid, row_valid, RATIOS, k_max),
      "mil_suppressed": losses.mil_loss(j["suppressed"], j["video_fg"], valid, row_valid,
                                        RATIOS[:2], k_max),
      "guide": losses.guide_loss(j["attention"], j["probs"][..., -1], valid, row_valid),
      "sparsity": losses.sparsity_loss(j["attention"], valid, row_valid),
      "mutual": losses.mutual_loss(j["a_rgb"], j["a_flow"], valid, row_valid),
      "snippet": losses.snippet_loss(j["suppressed"], j["probs"], labels, valid, row_valid),
  }


def test_changing_padded_values_changes_no_loss():
  d = make_inputs()
  valid, labels = make_valid(), make_labels()
  before = all_losses(d, labels, valid, ROW_VALID)
  scrambled = dict(d)
  for i, name in enumerate(("probs", "a_rgb", "a_flow", "attention", "suppressed")):
    scrambled[name] = scramble_padding(d[name], valid, seed=10 + i)
  scrambled["video_fg"] = d["video_fg"].copy()
  scrambled["video_fg"][3] = 1.0 - scrambled["video_fg"][3]  # the padded row's labels
  after = all_losses(scrambled, scramble_padding(labels, valid, seed=20), valid, ROW_VALID)
  for name in before:
    assert float(after[name]) == pytest.approx(float(before[name]), rel=1e-6), name
    assert np.isfinite(float(before[name])), name
