"""The objective against numpy: eq. 15 (which labels, when, padding zeroed) and eq. 18 (the
weighted sum of the named terms, the DFCL term and the bank write gated by pretraining)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from configs import synthetic
from pwes_jax.method import dfcl
from pwes_jax.method import losses
from pwes_jax.method import model as model_lib
from pwes_jax.method import mplg
from pwes_jax.method import objective
from pwes_jax.training import state as state_lib
from pwes_jax.training import steps

B, T, F, N = 3, 16, 32, 4
LENGTHS = (16, 10, 0)  # the last row is a padded batch row
PRETRAIN = 5


@objective.register_label_miner("test_everything_is_foreground")
def _everything(outputs, batch, config):
  """Labels every snippet ME, padding included (the objective must zero the padding)."""
  del batch, config
  b, t, c = outputs["probs"].shape
  return jnp.zeros((b, t, c)).at[..., 0].set(1.0)


def make_config(variant="full", dfcl_enabled=True):
  c = synthetic.get_config("tiny")
  c.mplg.variant = variant
  c.mplg.pretrain_steps = PRETRAIN
  c.dfcl.enabled = dfcl_enabled
  c.loss.guide_weight = 0.3  # weights that are not all 1
  c.loss.mutual_weight = 0.7
  c.dfcl.weight = 0.4
  return c


def make_batch(seed=0):
  rng = np.random.default_rng(seed)
  valid = np.zeros((B, T), np.float32)
  for b, n in enumerate(LENGTHS):
    valid[b, :n] = 1
  rgb = rng.normal(size=(B, T, F)).astype(np.float32) * valid[..., None]
  flow = rng.normal(size=(B, T, F)).astype(np.float32) * valid[..., None]
  point_index = np.array([[2, 9, 9, 0], [4, 0, 0, 0], [0, 0, 0, 0]], np.int32)
  point_label = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], np.int32)
  point_valid = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], np.float32)
  return {"rgb": rgb, "flow": flow, "valid": valid, "point_index": point_index,
          "point_label": point_label, "point_valid": point_valid,
          "video_label": np.array([[1, 1], [0, 1], [0, 0]], np.float32),
          "video_id": np.array([0, 1, -1], np.int32),
          "row_valid": np.array([1, 1, 0], np.float32)}


def ref_points(batch, c=2):
  """Dense point labels with a loop: one-hot at each valid point, a later point wins."""
  out = np.zeros((B, T, c + 1), np.float32)
  for b in range(B):
    for n in range(N):
      if batch["point_valid"][b, n]:
        out[b, batch["point_index"][b, n]] = 0
        out[b, batch["point_index"][b, n], batch["point_label"][b, n]] = 1
  return out


@pytest.fixture(scope="module")
def net():
  c = make_config()
  model = model_lib.build_model(c.model)
  x = jnp.zeros((1, 8, F))
  params = model.init({"params": jax.random.PRNGKey(0)}, x, x, jnp.ones((1, 8)),
                      train=False)["params"]
  return model, params


def outputs_of(net, batch):
  model, params = net
  return model.apply({"params": params}, batch["rgb"], batch["flow"], batch["valid"],
                     train=True, rngs={"dropout": jax.random.PRNGKey(1)})


@pytest.mark.parametrize("step", [0, PRETRAIN - 1, PRETRAIN, PRETRAIN + 7],
                         ids=["first step", "last pretraining step", "first mined step",
                              "later"])
def test_eq15_points_before_pretraining_then_mined_labels_with_padding_zeroed(net, step):
  batch = make_batch()
  out = outputs_of(net, batch)
  labels = np.asarray(objective.snippet_labels(out, batch, jnp.int32(step),
                                               make_config("test_everything_is_foreground")))
  if step < PRETRAIN:
    np.testing.assert_array_equal(labels, ref_points(batch))
  else:
    expected = np.zeros((B, T, 3), np.float32)
    expected[..., 0] = batch["valid"]
    np.testing.assert_array_equal(labels, expected)


@pytest.mark.parametrize("variant", ["full", "pplm"])
def test_eq15_mined_labels_are_the_miners_per_video_labels(net, variant):
  batch = make_batch()
  out = outputs_of(net, batch)
  c = make_config(variant)
  labels = np.asarray(objective.snippet_labels(out, batch, jnp.int32(PRETRAIN), c))
  for b in range(B):
    args = (np.asarray(out["probs"][b]), np.asarray(out["attention"][b]))
    if variant == "full":
      args += (np.asarray(out["features"][b]),)
    args += (batch["point_index"][b], batch["point_label"][b], batch["point_valid"][b],
             batch["valid"][b])
    if variant == "full":
      row = mplg.pseudo_labels(*args, top_ratio=c.mplg.top_ratio, theta=c.mplg.theta,
                               neg_ratio=c.mplg.neg_ratio, variant="full",
                               threshold_mode=c.mplg.threshold_mode)
    else:
      row = mplg.pplm_labels(*args, fg_threshold=c.mplg.pplm_fg_threshold,
                             bg_threshold=c.mplg.pplm_bg_threshold)
    np.testing.assert_array_equal(labels[b], np.asarray(row) * batch["valid"][b][:, None])


def _loss(net, batch, step, config, bank):
  model, params = net
  fn = jax.jit(functools.partial(objective.loss_fn, model=model, config=config))
  return fn(params, batch, jax.random.PRNGKey(1), bank, jnp.int32(step))


@pytest.mark.parametrize("step", [PRETRAIN - 1, PRETRAIN], ids=["pretraining", "after"])
def test_eq18_is_the_weighted_sum_of_the_named_terms_plus_gated_dfcl(net, step):
  batch = make_batch()
  c = make_config()
  # A bank holding this batch's region vectors under other video ids (2, 3): the batch's
  # anchors find positives and negatives there.
  empty = dfcl.init_bank(4, tuple(c.dfcl.regions), c.model.embed_dim)
  _, (_, (vectors, vector_valid)) = _loss(net, batch, PRETRAIN, c, empty)
  bank = dfcl.update_bank(empty, jnp.array([2, 3, -1]), vectors, vector_valid,
                          jnp.array([1.0, 1.0, 0.0]))
  total, (metrics, (vectors, vector_valid)) = _loss(net, batch, step, c, bank)
  out = outputs_of(net, batch)
  labels = objective.snippet_labels(out, batch, jnp.int32(step), c)
  valid, rows = batch["valid"], batch["row_valid"]
  k_max = losses.static_max_k(T, c.loss.mil_ratios)
  video3 = np.concatenate([batch["video_label"], np.ones((B, 1), np.float32)], -1)
  ref = {
      "mil": losses.mil_loss(out["probs"], video3, valid, rows, c.loss.mil_ratios, k_max),
      "mil_suppressed": losses.mil_loss(out["suppressed"], batch["video_label"], valid, rows,
                                        c.loss.mil_ratios[:2], k_max),
      "guide": losses.guide_loss(out["attention"], out["probs"][..., -1], valid, rows),
      "sparsity": losses.sparsity_loss(out["attention"], valid, rows),
      "mutual": losses.mutual_loss(out["attention_rgb"], out["attention_flow"], valid, rows),
      "snippet": losses.snippet_loss(out["suppressed"], out["probs"], labels, valid, rows),
  }
  weights = {"mil": 1.0, "mil_suppressed": 1.0, "guide": 0.3, "sparsity": 0.8,
             "mutual": 0.7, "snippet": 1.0}
  for name, value in ref.items():
    assert float(metrics[name]) == pytest.approx(float(value), rel=1e-5, abs=1e-7), name
  expected = sum(weights[k] * float(ref[k]) for k in c.loss.terms)
  if step >= PRETRAIN:
    assert float(metrics["anchors"]) > 0 and float(metrics["contrastive"]) != 0
    expected += 0.4 * float(metrics["contrastive"])
    assert np.asarray(vector_valid)[:2].sum() > 0
  else:
    assert float(metrics["contrastive"]) == 0 and float(metrics["anchors"]) == 0
    assert np.asarray(vector_valid).sum() == 0  # nothing reaches the bank while pretraining
  assert float(total) == pytest.approx(expected, rel=1e-5)
  assert float(metrics["loss"]) == float(total)


def test_eq18_without_dfcl_has_no_contrastive_term_and_no_region_vectors(net):
  c = make_config(dfcl_enabled=False)
  c.loss.terms = ("mil", "snippet")  # only the named terms are summed
  total, (metrics, region_vectors) = _loss(net, make_batch(), PRETRAIN, c, None)
  assert region_vectors is None and "contrastive" not in metrics
  assert "guide" not in metrics
  assert float(total) == pytest.approx(float(metrics["mil"]) + float(metrics["snippet"]),
                                       rel=1e-6)


@pytest.mark.parametrize("step,bank_write,moves", [
    (PRETRAIN - 1, 1.0, False), (PRETRAIN, 1.0, True), (PRETRAIN, 0.0, False)],
    ids=["pretraining: no write", "after: written", "after but vetoed: no write"])
def test_the_bank_write_is_gated(step, bank_write, moves):
  c = make_config()
  model = model_lib.build_model(c.model)
  tx = state_lib.make_optimizer(c)
  state = state_lib.init_state(model, tx, c, state_lib.fold_key(c, 0), F, 4)
  state = state.replace(step=jnp.int32(step))
  batch = make_batch()
  fn = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, config=c))
  new, _ = fn(state, batch, bank_write=bank_write)
  changed = not np.array_equal(np.asarray(new.bank.valid), np.asarray(state.bank.valid))
  assert changed == moves
  # Rows of videos not in the batch (ids 2, 3) and the padded row never change.
  np.testing.assert_array_equal(np.asarray(new.bank.valid)[2:], 0)
  if moves:
    assert np.asarray(new.bank.valid)[:2].sum() > 0


def test_shipped_configs_use_the_paper_terms():
  """``objective.PAPER_TERMS`` (what report names and old runs default to) is what the configs
  ship."""
  assert tuple(common.base_config().loss.terms) == objective.PAPER_TERMS


# ------------------------------------------------------------------------------------------------
# Pseudo-label quality (metrics only).


def _counts_by_loop(mined, truth, valid):
  """Plain-Python counts of labelled / correct / true snippets per class."""
  out = {}
  for k, name in enumerate(objective.QUALITY_CLASSES):
    labelled = correct = true = 0
    for b in range(truth.shape[0]):
      for t in range(truth.shape[1]):
        if not valid[b, t] or truth[b, t] < 0:
          continue
        labelled += int(mined[b, t, k] > 0)
        correct += int(mined[b, t, k] > 0 and truth[b, t] == k)
        true += int(truth[b, t] == k)
    out.update({f"pl_{name}_labelled": labelled, f"pl_{name}_correct": correct,
                f"pl_{name}_true": true})
  return out


def test_pseudo_label_counts_hand_case_with_padding_and_a_negative_video():
  # Row 0: ME at 1-2, MaE at 4-5, snippet 7 padded. Row 1: a negative video (all background),
  # snippets 5-7 padded. Row 2: a padded row (truth -1, valid 0).
  truth = np.array([[2, 0, 0, 2, 1, 1, 2, -1],
                    [2, 2, 2, 2, 2, -1, -1, -1],
                    [-1] * 8], np.int32)
  valid = (truth >= 0).astype(np.float32)
  mined = np.zeros((3, 8, 3), np.float32)
  mined[0, [1, 3], 0] = 1     # ME: one right (1), one wrong (3)
  mined[0, [4, 5, 6], 1] = 1  # MaE: two right, one on background
  mined[0, 0, 2] = 1          # background right
  mined[1, [0, 1], 0] = 1     # ME labels in a negative video: both wrong
  mined[1, [2, 3], 2] = 1     # background right
  mined[0, 7, 0] = 1          # a label on a padded snippet is not counted
  got = {k: float(v) for k, v in objective.pseudo_label_counts(
      jnp.asarray(mined), jnp.asarray(truth), jnp.asarray(valid)).items()}
  assert got == _counts_by_loop(mined, truth, valid)
  assert got["pl_me_labelled"] == 4 and got["pl_me_correct"] == 1 and got["pl_me_true"] == 2
  assert got["pl_mae_labelled"] == 3 and got["pl_mae_correct"] == 2 and got["pl_mae_true"] == 2
  assert got["pl_bg_labelled"] == 3 and got["pl_bg_correct"] == 3 and got["pl_bg_true"] == 8


def test_pseudo_label_counts_match_a_loop_on_random_batches():
  rng = np.random.default_rng(0)
  for _ in range(5):
    truth = rng.integers(-1, 3, (4, 16)).astype(np.int32)
    valid = (rng.random((4, 16)) > 0.2).astype(np.float32)
    mined = np.eye(3, dtype=np.float32)[rng.integers(0, 3, (4, 16))]
    mined *= (rng.random((4, 16, 1)) > 0.3)
    got = objective.pseudo_label_counts(jnp.asarray(mined), jnp.asarray(truth),
                                        jnp.asarray(valid))
    assert {k: float(v) for k, v in got.items()} == _counts_by_loop(mined, truth, valid)


def test_the_step_logs_pseudo_label_counts_of_the_miners_labels_not_the_loss_labels(net):
  """While pretraining the loss uses the points, but the counts measure the miner's labels;
  the truth never changes the loss."""
  batch = make_batch()
  batch["truth"] = np.where(batch["valid"] > 0, np.arange(T)[None, :] % 3, -1).astype(np.int32)
  c = make_config(dfcl_enabled=False)
  total, (metrics, _) = _loss(net, batch, 0, c, None)  # step 0: eq. 15 labels are the points
  mined = objective.mined_labels(outputs_of(net, batch), batch, c)
  expected = objective.pseudo_label_counts(mined, batch["truth"], batch["valid"])
  assert float(expected["pl_me_labelled"] + expected["pl_mae_labelled"]) > 0
  for k, v in expected.items():
    assert float(metrics[k]) == float(v), k
  flipped = dict(batch, truth=np.where(batch["truth"] >= 0, 2 - batch["truth"], -1))
  total2, (metrics2, _) = _loss(net, flipped, 0, c, None)
  assert float(total2) == float(total)
  assert float(metrics2["pl_bg_true"]) != float(metrics["pl_bg_true"])
  _, (without, _) = _loss(net, make_batch(), 0, c, None)
  assert not any(k.startswith("pl_") for k in without)  # no truth in the batch, no counts


def test_a_loss_term_may_not_take_a_pseudo_label_metric_name():
  with pytest.raises(ValueError, match="already registered or reserved"):
    objective.register_loss_term("pl_me_precision")(lambda *a: 0.0)
