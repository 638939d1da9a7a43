"""Tests for pwes_jax.method.dfcl against plain-numpy loop references."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pwes_jax.method import dfcl

REGIONS = (2, 3, 4)  # Small but with distinct counts per class.


# ----------------------------------------------------------------------------- numpy references


def ref_region_vectors(features, labels, valid, regions):
  """Loop reference: per class, contiguous equal parts of the member list, then means."""
  num_t, dim = features.shape
  vecs, oks, classes = [], [], []
  for c, r_c in enumerate(regions):
    members = [t for t in range(num_t) if valid[t] > 0.5 and labels[t, c] > 0.5]
    n = len(members)
    for j in range(r_c):
      classes.append(c)
      if n == 0:
        vecs.append(np.zeros(dim))
        oks.append(0.0)
        continue
      start = (j * n) // r_c
      end = max(((j + 1) * n) // r_c, start + 1)
      acc = np.zeros(dim)
      for k in range(start, end):
        acc += features[members[k]]
      vecs.append(acc / (end - start))
      oks.append(1.0)
  return np.array(vecs), np.array(oks), np.array(classes)


def ref_normalize(x):
  norm = np.sqrt(np.sum(x * x))
  return x / norm if norm > 0 else x * 0.0


def ref_loss(vectors, vector_valid, video_ids, row_valid, bank_vecs, bank_valid, regions, tau):
  """Loop reference of eq. 17 over anchors and bank slots."""
  classes = [c for c, r_c in enumerate(regions) for _ in range(r_c)]
  background = len(regions) - 1
  num_b, num_r, _ = vectors.shape
  num_v = bank_vecs.shape[0]
  losses = []
  for b in range(num_b):
    if row_valid[b] < 0.5:
      continue
    for r in range(num_r):
      if classes[r] == background or vector_valid[b, r] < 0.5:
        continue
      v = ref_normalize(vectors[b, r].astype(np.float64))
      pos, allk = [], []
      for w in range(num_v):
        if w == video_ids[b]:
          continue
        for s in range(num_r):
          if bank_valid[w, s] < 0.5:
            continue
          sim = float(np.dot(v, bank_vecs[w, s])) / tau
          allk.append(sim)
          if classes[s] == classes[r]:
            pos.append(sim)
      if not pos:
        continue
      log_denom = np.log(np.sum(np.exp(allk)))
      losses.append(-np.mean([p - log_denom for p in pos]))
  return (float(np.mean(losses)) if losses else 0.0), len(losses)


def random_bank(rng, num_v, regions, dim, p_valid=0.7):
  num_r = sum(regions)
  vecs = rng.normal(size=(num_v, num_r, dim))
  vecs /= np.linalg.norm(vecs, axis=-1, keepdims=True)
  valid = (rng.random((num_v, num_r)) < p_valid).astype(np.float32)
  vecs = (vecs * valid[..., None]).astype(np.float32)
  return dfcl.MemoryBank(vectors=jnp.asarray(vecs), valid=jnp.asarray(valid))


# ----------------------------------------------------------------------------- region vectors


def make_video(rng, num_t, dim, member_counts, num_valid):
  """Features, one-hot-ish labels with the given member counts among the valid snippets."""
  feats = rng.normal(size=(num_t, dim)).astype(np.float32)
  labels = np.zeros((num_t, len(member_counts)), np.float32)
  valid = np.zeros(num_t, np.float32)
  valid[:num_valid] = 1.0
  for c, count in enumerate(member_counts):
    idx = rng.choice(num_valid, size=count, replace=False)
    labels[idx, c] = 1.0
  # Label the padded snippets with every class: they must be ignored.
  labels[num_valid:] = 1.0
  return feats, labels, valid


@pytest.mark.parametrize(
    "member_counts, num_valid",
    [
        ((5, 7, 12), 16),
        ((1, 2, 3), 12),  # fewer members than regions: members serve several regions
        ((0, 4, 9), 16),  # ME class empty -> invalid ME regions
        ((0, 0, 0), 10),  # nothing labelled at all
        ((3, 3, 6), 6),  # overlapping labels (multi-label snippets)
        ((0, 0, 0), 0),  # all padding (padded snippets carry labels)
    ],
    ids=["many_members", "fewer_members_than_regions", "empty_me_class", "no_labels",
         "overlapping_labels", "all_padding"])
def test_region_vectors_match_numpy_loops(member_counts, num_valid):
  rng = np.random.default_rng(sum(member_counts) + num_valid)
  feats, labels, valid = make_video(rng, 20, 6, member_counts, num_valid)
  vecs, ok, cls = dfcl.region_vectors(feats, labels, valid, regions=REGIONS)
  r_vecs, r_ok, r_cls = ref_region_vectors(feats, labels, valid, REGIONS)
  np.testing.assert_allclose(np.asarray(vecs), r_vecs, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(ok), r_ok)
  np.testing.assert_array_equal(np.asarray(cls), r_cls)
  assert vecs.dtype == jnp.float32 and ok.dtype == jnp.float32 and cls.dtype == jnp.int32


def test_region_vectors_fewer_members_reuse_members_in_order():
  feats = np.arange(8, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)  # [8, 2]
  labels = np.zeros((8, 3), np.float32)
  labels[[2, 5], 2] = 1.0  # two background members for four regions
  vecs, ok, _ = dfcl.region_vectors(feats, labels, np.ones(8), regions=(1, 1, 4))
  # n = 2, R = 4: starts 0,0,1,1 -> members (2, 2, 5, 5).
  np.testing.assert_allclose(np.asarray(vecs)[2:, 0], [2.0, 2.0, 5.0, 5.0])
  np.testing.assert_array_equal(np.asarray(ok), [0, 0, 1, 1, 1, 1])


@pytest.mark.parametrize("fill", ["random", "huge", "nan"], ids=["random", "huge", "nan"])
def test_padded_feature_values_change_nothing(fill):
  rng = np.random.default_rng(0)
  feats, labels, valid = make_video(rng, 20, 5, (3, 4, 6), 12)
  other = feats.copy()
  other[12:] = {"random": rng.normal(size=(8, 5)) * 100, "huge": 1e30, "nan": np.nan}[fill]
  a = dfcl.region_vectors(feats, labels, valid, regions=REGIONS)
  b = dfcl.region_vectors(other, labels, valid, regions=REGIONS)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_region_vectors_vmap_jit_traces_once():
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def batched(f, l, v):
    return jax.vmap(lambda a, b, c: dfcl.region_vectors(a, b, c, regions=REGIONS))(f, l, v)

  rng = np.random.default_rng(1)
  for seed_counts in [((2, 3, 5), (0, 1, 7)), ((4, 4, 4), (1, 0, 2))]:
    videos = [make_video(rng, 16, 4, counts, 10 + i) for i, counts in enumerate(seed_counts)]
    f, l, v = (np.stack(x) for x in zip(*videos))
    vecs, ok, cls = batched(f, l, v)
    assert vecs.shape == (2, 9, 4) and ok.shape == (2, 9) and cls.shape == (2, 9)
    for i, (fi, li, vi) in enumerate(videos):
      r_vecs, r_ok, _ = ref_region_vectors(fi, li, vi, REGIONS)
      np.testing.assert_allclose(np.asarray(vecs[i]), r_vecs, rtol=1e-5, atol=1e-6)
      np.testing.assert_array_equal(np.asarray(ok[i]), r_ok)


def test_region_vectors_gradient_reaches_member_features_only():
  rng = np.random.default_rng(2)
  feats, labels, valid = make_video(rng, 12, 3, (2, 2, 3), 8)
  labels[:8] = 0.0
  labels[[0, 1], 0] = 1.0
  grad = jax.grad(lambda f: jnp.sum(dfcl.region_vectors(f, labels, valid, regions=REGIONS)[0]))(
      jnp.asarray(feats))
  grad = np.asarray(grad)
  assert np.all(grad[[0, 1]] > 0)
  assert np.all(grad[2:] == 0)


def test_slot_classes_is_static_numpy():
  cls = dfcl.slot_classes((2, 3, 10))
  assert isinstance(cls, np.ndarray) and cls.dtype == np.int32
  np.testing.assert_array_equal(cls, [0] * 2 + [1] * 3 + [2] * 10)


@pytest.mark.parametrize("regions", [(2, 0, 3), (2,), (2, 2.5, 3), "ab"],
                         ids=["zero_region", "single_class", "fractional", "string"])
def test_bad_regions_raise_clear_error(regions):
  with pytest.raises(ValueError, match="regions"):
    dfcl.slot_classes(regions)


def test_region_vectors_label_width_must_match_regions():
  with pytest.raises(AssertionError):
    dfcl.region_vectors(np.zeros((4, 2)), np.zeros((4, 2)), np.ones(4), regions=(1, 1, 1))


# ----------------------------------------------------------------------------- memory bank


def test_init_bank_is_empty_and_sized():
  bank = dfcl.init_bank(5, REGIONS, 7)
  assert bank.vectors.shape == (5, 9, 7) and bank.valid.shape == (5, 9)
  assert bank.vectors.dtype == jnp.float32 and bank.valid.dtype == jnp.float32
  assert not np.any(np.asarray(bank.vectors)) and not np.any(np.asarray(bank.valid))
  assert bank.num_videos == 5 and bank.num_slots == 9


def test_bank_nbytes_counts_vectors_and_mask():
  assert dfcl.bank_nbytes(946, (2, 3, 10), 2048) == 946 * 15 * 2049 * 4
  bank = dfcl.init_bank(4, REGIONS, 6)
  assert dfcl.bank_nbytes(4, REGIONS, 6) == bank.vectors.nbytes + bank.valid.nbytes


def test_update_bank_writes_only_valid_rows_normalised():
  rng = np.random.default_rng(3)
  num_v, dim = 6, 4
  bank = random_bank(rng, num_v, REGIONS, dim, p_valid=1.0)
  before_v, before_ok = np.asarray(bank.vectors), np.asarray(bank.valid)
  vecs = rng.normal(size=(4, 9, dim)).astype(np.float32) * 3
  vok = np.ones((4, 9), np.float32)
  vok[0, [1, 4]] = 0.0  # invalid regions of a written row become invalid in the bank
  ids = np.array([2, -1, 4, 5], np.int32)  # -1: padding (must not wrap to the last row)
  row_ok = np.array([1, 1, 1, 0], np.float32)  # row 3 padded: row 5 untouched
  new = dfcl.update_bank(bank, ids, vecs, vok, row_ok)
  after_v, after_ok = np.asarray(new.vectors), np.asarray(new.valid)
  for w in range(num_v):
    if w in (2, 4):
      b = 0 if w == 2 else 2
      np.testing.assert_array_equal(after_ok[w], vok[b])
      for s in range(9):
        expect = ref_normalize(vecs[b, s]) if vok[b, s] else np.zeros(dim)
        np.testing.assert_allclose(after_v[w, s], expect, rtol=1e-5, atol=1e-6)
    else:
      np.testing.assert_array_equal(after_v[w], before_v[w])
      np.testing.assert_array_equal(after_ok[w], before_ok[w])


@pytest.mark.parametrize(
    "ids, row_ok, winner",
    [
        ([1, 1, 1], [1, 1, 1], 2),  # last occurrence wins
        ([1, 1, 1], [1, 1, 0], 1),  # a padded later duplicate does not shadow
        ([1, 0, 1], [1, 1, 0], 0),  # only one valid occurrence of video 1
    ],
    ids=["last_occurrence_wins", "padded_duplicate_ignored", "single_valid_occurrence"])
def test_update_bank_duplicate_ids_last_valid_wins(ids, row_ok, winner):
  rng = np.random.default_rng(4)
  bank = dfcl.init_bank(3, REGIONS, 5)
  vecs = rng.normal(size=(3, 9, 5)).astype(np.float32)
  vok = (rng.random((3, 9)) < 0.6).astype(np.float32)
  new = dfcl.update_bank(bank, np.array(ids, np.int32), vecs, vok, np.array(row_ok, np.float32))
  np.testing.assert_array_equal(np.asarray(new.valid)[1], vok[winner])
  expect = np.stack([ref_normalize(v) for v in vecs[winner]]) * vok[winner][:, None]
  np.testing.assert_allclose(np.asarray(new.vectors)[1], expect, rtol=1e-5, atol=1e-6)
  assert not np.any(np.asarray(new.valid)[2])


def test_update_bank_jits_once_with_donation():
  chex.clear_trace_counter()

  @chex.assert_max_traces(n=1)
  def step(bank, ids, vecs, vok, row_ok):
    return dfcl.update_bank(bank, ids, vecs, vok, row_ok)

  step = jax.jit(step, donate_argnums=0)
  rng = np.random.default_rng(5)
  bank = dfcl.init_bank(4, REGIONS, 3)
  for i in range(3):
    ids = np.array([i, i + 1], np.int32)
    bank = step(bank, ids, rng.normal(size=(2, 9, 3)).astype(np.float32),
                np.ones((2, 9), np.float32), np.ones(2, np.float32))
  np.testing.assert_array_equal(np.asarray(bank.valid).sum(axis=1), [9, 9, 9, 9])


def test_update_bank_stops_gradient():
  bank = dfcl.init_bank(2, REGIONS, 3)
  vecs = jnp.ones((1, 9, 3))

  def f(v):
    return jnp.sum(dfcl.update_bank(bank, jnp.array([0]), v, jnp.ones((1, 9)), jnp.ones(1)).vectors)

  assert not np.any(np.asarray(jax.grad(f)(vecs)))


# ----------------------------------------------------------------------------- loss


def loss_inputs(rng, num_b=3, num_v=5, dim=6, p_valid=0.8):
  vecs = rng.normal(size=(num_b, 9, dim)).astype(np.float32)
  vok = (rng.random((num_b, 9)) < p_valid).astype(np.float32)
  ids = rng.choice(num_v, size=num_b, replace=False).astype(np.int32)
  row_ok = np.ones(num_b, np.float32)
  row_ok[-1] = 0.0
  return vecs, vok, ids, row_ok


@pytest.mark.parametrize(
    "bank_p_valid, tau",
    [(1.0, 1.0), (0.6, 0.5), (0.3, 0.07), (0.15, 1.0)],
    ids=["full_bank", "partial_bank_tau_0.5", "sparse_bank_small_tau", "very_sparse_bank"])
def test_loss_matches_numpy_loops(bank_p_valid, tau):
  rng = np.random.default_rng(int(bank_p_valid * 100))
  vecs, vok, ids, row_ok = loss_inputs(rng)
  bank = random_bank(rng, 5, REGIONS, 6, p_valid=bank_p_valid)
  loss, aux = dfcl.contrastive_loss(vecs, vok, ids, row_ok, bank, REGIONS, tau=tau)
  r_loss, r_n = ref_loss(vecs, vok, ids, row_ok, np.asarray(bank.vectors), np.asarray(bank.valid),
                         REGIONS, tau)
  np.testing.assert_allclose(float(loss), r_loss, rtol=1e-4, atol=1e-5)
  assert float(aux["num_anchors"]) == r_n


def test_loss_excludes_the_anchor_own_video():
  # Only the anchor's own bank row holds positives -> no anchor, loss 0.
  bank = dfcl.init_bank(3, REGIONS, 4)
  vecs = np.ones((1, 9, 4), np.float32)
  own = dfcl.update_bank(bank, np.array([1]), vecs, np.ones((1, 9)), np.ones(1))
  loss, aux = dfcl.contrastive_loss(vecs, np.ones((1, 9)), np.array([1]), np.ones(1), own, REGIONS)
  assert float(loss) == 0.0 and float(aux["num_anchors"]) == 0.0
  loss, aux = dfcl.contrastive_loss(vecs, np.ones((1, 9)), np.array([0]), np.ones(1), own, REGIONS)
  assert float(aux["num_anchors"]) == 5.0 and np.isfinite(float(loss))


def test_loss_is_zero_and_finite_with_empty_bank():
  rng = np.random.default_rng(6)
  vecs, vok, ids, row_ok = loss_inputs(rng)
  bank = dfcl.init_bank(5, REGIONS, 6)
  loss_fn = lambda v: dfcl.contrastive_loss(v, vok, ids, row_ok, bank, REGIONS)  # noqa: E731
  (loss, aux), grad = jax.value_and_grad(loss_fn, has_aux=True)(jnp.asarray(vecs))
  assert float(loss) == 0.0 and float(aux["num_anchors"]) == 0.0
  assert np.all(np.isfinite(np.asarray(grad)))


@pytest.mark.parametrize("case", ["no_valid_rows", "no_valid_foreground"],
                         ids=["no_valid_rows", "only_background_regions_valid"])
def test_loss_is_zero_without_anchors(case):
  rng = np.random.default_rng(7)
  vecs, vok, ids, row_ok = loss_inputs(rng)
  if case == "no_valid_rows":
    row_ok[:] = 0.0
  else:
    vok[:, :5] = 0.0
  bank = random_bank(rng, 5, REGIONS, 6, p_valid=1.0)
  loss_fn = lambda v: dfcl.contrastive_loss(v, vok, ids, row_ok, bank, REGIONS)[0]  # noqa: E731
  loss, grad = jax.value_and_grad(loss_fn)(jnp.asarray(vecs))
  assert float(loss) == 0.0
  assert not np.any(np.asarray(grad))


def test_loss_gradient_reaches_vectors_not_bank():
  rng = np.random.default_rng(8)
  vecs, vok, ids, row_ok = loss_inputs(rng, p_valid=1.0)
  bank = random_bank(rng, 5, REGIONS, 6, p_valid=1.0)
  g_vecs, g_bank = jax.grad(
      lambda v, bk: dfcl.contrastive_loss(v, vok, ids, row_ok, bk, REGIONS)[0],
      argnums=(0, 1))(jnp.asarray(vecs), bank)
  g_vecs = np.asarray(g_vecs)
  assert np.any(g_vecs[:2, :5])  # valid rows, foreground slots
  assert not np.any(g_vecs[:, 5:])  # background slots are never anchors
  assert not np.any(g_vecs[2])  # padded row
  assert not np.any(np.asarray(g_bank.vectors)) and not np.any(np.asarray(g_bank.valid))


def test_loss_jits_once():
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def f(v, vok, ids, row_ok, bank):
    return dfcl.contrastive_loss(v, vok, ids, row_ok, bank, REGIONS, tau=0.5)

  for seed in range(3):
    rng = np.random.default_rng(10 + seed)
    vecs, vok, ids, row_ok = loss_inputs(rng)
    bank = random_bank(rng, 5, REGIONS, 6)
    loss, _ = f(vecs, vok, ids, row_ok, bank)
    r_loss, _ = ref_loss(vecs, vok, ids, row_ok, np.asarray(bank.vectors),
                         np.asarray(bank.valid), REGIONS, 0.5)
    np.testing.assert_allclose(float(loss), r_loss, rtol=1e-4, atol=1e-5)


def test_loss_rejects_regions_that_do_not_match_bank():
  bank = dfcl.init_bank(2, REGIONS, 3)
  with pytest.raises(ValueError, match="slots"):
    dfcl.contrastive_loss(np.zeros((1, 9, 3)), np.ones((1, 9)), np.zeros(1, np.int32), np.ones(1),
                          bank, (2, 3, 10))


def test_end_to_end_region_vectors_bank_and_loss_pipeline():
  """vmap(region_vectors) -> loss against the bank -> update_bank, jitted together."""
  rng = np.random.default_rng(9)
  videos = [make_video(rng, 14, 4, counts, 12) for counts in [(2, 3, 5), (1, 4, 6), (3, 0, 7)]]
  f, l, v = (np.stack(x) for x in zip(*videos))
  ids = np.array([0, 1, 2], np.int32)
  row_ok = np.ones(3, np.float32)

  @jax.jit
  def step(bank, f, l, v):
    vecs, vok, _ = jax.vmap(lambda a, b, c: dfcl.region_vectors(a, b, c, regions=REGIONS))(f, l, v)
    loss, aux = dfcl.contrastive_loss(vecs, vok, ids, row_ok, bank, REGIONS)
    return dfcl.update_bank(bank, ids, vecs, vok, row_ok), loss, aux

  bank, loss0, aux0 = step(dfcl.init_bank(3, REGIONS, 4), f, l, v)
  assert float(loss0) == 0.0 and float(aux0["num_anchors"]) == 0.0
  bank, loss1, aux1 = step(bank, f, l, v)
  assert float(aux1["num_anchors"]) > 0 and np.isfinite(float(loss1))


def test_main_region_adds_each_class_whole_feature_set_before_its_splits():
  """Hand case: ME members at snippets 1, 2; MaE at 4..7; background at 0, 3, 8, 9; regions
  (1, 2, 2) with the main region: per class [whole set] + splits."""
  t_len, dim = 10, 3
  feats = np.arange(t_len * dim, dtype=np.float32).reshape(t_len, dim)
  labels = np.zeros((t_len, 3), np.float32)
  labels[[1, 2], 0] = 1
  labels[[4, 5, 6, 7], 1] = 1
  labels[[0, 3, 8, 9], 2] = 1
  valid = np.ones(t_len, np.float32)
  vec, ok, cls = dfcl.region_vectors(jnp.asarray(feats), jnp.asarray(labels), jnp.asarray(valid),
                                     regions=(1, 2, 2), main_region=True)
  mean = lambda idx: feats[idx].mean(axis=0)  # noqa: E731
  want = [mean([1, 2]), mean([1, 2]),                             # ME: whole, 1 split
          mean([4, 5, 6, 7]), mean([4, 5]), mean([6, 7]),         # MaE: whole, 2 splits
          mean([0, 3, 8, 9]), mean([0, 3]), mean([8, 9])]         # background
  np.testing.assert_allclose(np.asarray(vec), np.stack(want), rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(ok), np.ones(8))
  np.testing.assert_array_equal(np.asarray(cls), [0, 0, 1, 1, 1, 2, 2, 2])
  assert dfcl.slot_counts((1, 2, 2), True) == (2, 3, 3)
  assert dfcl.slot_counts((1, 2, 2), False) == (1, 2, 2)
  plain, _, _ = dfcl.region_vectors(jnp.asarray(feats), jnp.asarray(labels), jnp.asarray(valid),
                                    regions=(1, 2, 2))
  np.testing.assert_allclose(np.asarray(plain), np.stack([want[i] for i in (1, 3, 4, 6, 7)]),
                             rtol=1e-6)


def test_a_bank_with_main_regions_feeds_the_contrastive_loss():
  slots = dfcl.slot_counts((2, 3, 10), True)
  bank = dfcl.init_bank(4, slots, 8)
  assert bank.num_slots == sum(slots) == 18
  rng = np.random.default_rng(0)
  vec = jnp.asarray(rng.normal(size=(2, 18, 8)).astype(np.float32))
  ok = jnp.ones((2, 18))
  bank = dfcl.update_bank(bank, jnp.array([0, 1]), vec, ok, jnp.ones(2))
  loss, aux = dfcl.contrastive_loss(vec, ok, jnp.array([2, 3]), jnp.ones(2), bank, slots)
  assert np.isfinite(float(loss)) and float(aux["num_anchors"]) > 0

