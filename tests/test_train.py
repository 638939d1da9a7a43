"""End-to-end LOSO training on the tiny synthetic preset: outputs, resume, NaN guard, compiles."""

import importlib
import json
import os
import shutil

import jax
import numpy as np
import pytest

from configs import synthetic
from pwes_jax.workdir import checkpointing
from pwes_jax.training import metrics_log
from pwes_jax.method import model as model_lib
from pwes_jax.workdir import run_files
from pwes_jax.training import state as state_lib
from pwes_jax.training import steps
from pwes_jax import train
from pwes_jax.training import context
from pwes_jax.training import loop
from pwes_jax.data import folds as folds_lib
from pwes_jax.data import source


def tiny_config(**overrides):
  c = synthetic.get_config("tiny")
  c.optim.steps = 12
  c.mplg.pretrain_steps = 4
  c.checkpoint.every_steps = 4
  c.log_every = 4
  c.loso.folds = "0,1"
  for key, value in overrides.items():
    section, field = key.split(".")
    c[section][field] = value
  return c


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp("data"))


def run(tmp_path, data_cache, name="run", **overrides):
  c = tiny_config(**overrides)
  c.data.cache_dir = data_cache
  workdir = str(tmp_path / name)
  return c, workdir, train.train_and_evaluate(c, workdir)


def fold_params(workdir, fold):
  manager = checkpointing.make_manager(
      os.path.join(run_files.fold_dir(workdir, fold), "checkpoints"))
  step = manager.latest_step()
  restored = manager.restore(step)
  manager.close()
  return step, restored


def test_tiny_run_writes_outputs_metrics_and_checkpoints(tmp_path, data_cache):
  c, workdir, result = run(tmp_path, data_cache)
  assert set(result["folds"]) == {"0", "1"}
  for fold in (0, 1):
    fdir = run_files.fold_dir(workdir, fold)
    record = json.load(open(os.path.join(fdir, "fold.json")))
    assert record["finished"] and record["steps"] == c.optim.steps
    outputs = run_files.load_outputs(os.path.join(fdir, "outputs.npz"))
    assert set(outputs) == set(record["test_videos"]) | set(record["train_videos"])
    for out in outputs.values():
      t = out["attention"].shape[0]
      assert out["probs"].shape == (t, 3) and out["suppressed"].shape == (t, 2)
      assert np.all(np.isfinite(out["probs"]))
    step, _ = fold_params(workdir, fold)
    assert step == c.optim.steps
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert {l["fold"] for l in lines} == {0, 1}
  assert all(np.isfinite(l["loss"]) and l["steps_per_sec"] > 0 for l in lines)
  # DFCL switches on after pretraining: anchors appear only then.
  assert any(l["anchors"] > 0 for l in lines if l["step"] > c.mplg.pretrain_steps)
  assert all(l["anchors"] == 0 for l in lines if l["step"] <= c.mplg.pretrain_steps)
  assert os.path.isfile(os.path.join(workdir, "results.json"))
  preds = json.load(open(os.path.join(workdir, "predictions.json")))["videos"]
  assert preds and all(p["offset"] >= p["onset"] for ps in preds.values() for p in ps)


def test_rerun_skips_finished_folds(tmp_path, data_cache):
  _, workdir, first = run(tmp_path, data_cache)
  mtime = os.path.getmtime(os.path.join(run_files.fold_dir(workdir, 0), "outputs.npz"))
  c = tiny_config()
  c.data.cache_dir = data_cache
  second = train.train_and_evaluate(c, workdir)
  assert os.path.getmtime(os.path.join(run_files.fold_dir(workdir, 0), "outputs.npz")) == mtime
  assert second["tuned"]["rows"] == first["tuned"]["rows"]


def test_resume_after_kill_gives_identical_results(tmp_path, data_cache):
  _, full_dir, full = run(tmp_path, data_cache, "full", **{"loso.folds": "1"})
  # Simulate a kill after the step-8 checkpoint: drop the later checkpoint and the outputs.
  killed = str(tmp_path / "killed")
  shutil.copytree(full_dir, killed)
  fdir = run_files.fold_dir(killed, 1)
  os.remove(os.path.join(fdir, "fold.json"))
  os.remove(os.path.join(fdir, "outputs.npz"))
  shutil.rmtree(os.path.join(fdir, "checkpoints", "12"))
  c = tiny_config(**{"loso.folds": "1"})
  c.data.cache_dir = data_cache
  resumed = train.train_and_evaluate(c, killed)
  a = run_files.load_outputs(os.path.join(run_files.fold_dir(full_dir, 1), "outputs.npz"))
  b = run_files.load_outputs(os.path.join(fdir, "outputs.npz"))
  for name in a:
    np.testing.assert_array_equal(a[name]["attention"], b[name]["attention"])
  assert resumed["tuned"]["rows"] == full["tuned"]["rows"]
  assert resumed["folds"]["1"]["attention_auc"] == full["folds"]["1"]["attention_auc"]
  assert np.isfinite(full["folds"]["1"]["attention_auc"])
  rows = [json.loads(l) for l in open(os.path.join(killed, "metrics.jsonl"))]
  keys = [(r["fold"], r["step"]) for r in rows]
  assert len(keys) == len(set(keys)), "a resumed fold logged a step twice"


def test_same_seed_same_metrics(tmp_path, data_cache):
  _, _, a = run(tmp_path, data_cache, "a", **{"loso.folds": "1"})
  _, _, b = run(tmp_path, data_cache, "b", **{"loso.folds": "1"})
  assert a["tuned"]["rows"] == b["tuned"]["rows"]
  assert a["folds"]["1"]["attention_auc"] == b["folds"]["1"]["attention_auc"]


def test_nan_loss_names_fold_and_step(tmp_path, data_cache):
  # A NaN loss weight passes the config checks (only negative weights are refused); the
  # guard names the first step, whose loss is already NaN.
  with pytest.raises(train.NonFiniteLossError, match=r"fold 0: loss is nan at step 0\b"):
    run(tmp_path, data_cache, "nan", **{"loss.sparsity_weight": float("nan"),
                                        "loso.folds": "0"})


def test_train_step_compiles_once_per_bucket(tmp_path, data_cache):
  """The production step (``Programs.train_step`` in ``loop.train_folds``) compiles one
  program per length bucket, never more, over a fold and a second fold run after it."""
  c = tiny_config()
  c.data.cache_dir = data_cache
  dataset = source.prepare_dataset(c, str(tmp_path))
  all_folds = folds_lib.loso_folds(dataset)
  ctx = context.make_context(c, str(tmp_path), dataset, all_folds)
  drawn = {context.shared_bucket(ctx, s) for s in range(c.optim.steps)}
  assert len(drawn) == len(ctx.buckets) == 2  # every bucket is used, so each must compile
  records = loop.train_folds(ctx, all_folds[:2], metrics_log.MetricsLog(str(tmp_path), False))
  assert [r["fold"] for r in records] == [0, 1]
  compiled = ctx.programs.train_step._cache_size()  # pylint: disable=protected-access
  assert compiled == len(ctx.buckets)


def test_unknown_mplg_variant_fails_before_training(tmp_path, data_cache):
  with pytest.raises(ValueError, match="config.mplg.variant"):
    run(tmp_path, data_cache, "bad", **{"mplg.variant": "bogus"})


def test_donated_step_updates_the_bank_in_place(tmp_path, data_cache):
  """The compiled step never copies the memory bank (it is donated and updated in place)."""
  c = tiny_config()
  c.data.cache_dir = data_cache
  dataset = source.prepare_dataset(c, str(tmp_path))
  all_folds = folds_lib.loso_folds(dataset)
  ctx = context.make_context(c, str(tmp_path), dataset, all_folds)
  bank_videos = 37  # a shape no other buffer has
  state = state_lib.init_state(ctx.model, ctx.tx, c, state_lib.fold_key(c, 0),
                               dataset.info.feature_dim, bank_videos)
  batch = context.fold_sampler(ctx, all_folds[0]).sample(0, bucket=0)
  shape = f"f32[{bank_videos},{sum(c.dfcl.regions)},{c.model.embed_dim}]"
  step = lambda s, b: steps.train_step(s, b, model=ctx.model, tx=ctx.tx, config=c)
  hlo = jax.jit(step, donate_argnums=0).lower(state, batch).compile().as_text()
  assert shape in hlo
  copies = [line for line in hlo.splitlines() if shape in line and " copy(" in line]
  assert not copies, copies[:3]


def test_learns_planted_expressions_on_the_casme2_preset(tmp_path):
  """Trained attention separates held-out expression snippets from background far better than
  chance and than a naive flow-norm detector (32-d features, narrow model, 150 steps)."""
  from pwes_jax import report  # pylint: disable=g-import-not-at-top
  from pwes_jax.data import layout  # pylint: disable=g-import-not-at-top
  c = synthetic.get_config()
  c.data.synthetic_feature_dim = 32
  c.model.embed_dim = 32
  c.model.attention_hidden = 16
  c.data.max_buckets = 2
  c.optim.steps = 150
  c.mplg.pretrain_steps = 50
  c.checkpoint.every_steps = 1000
  c.tensorboard = False
  c.loso.folds = "0"
  result = train.train_and_evaluate(c, str(tmp_path / "run"))
  learned = result["folds"]["0"]["attention_auc"]
  dataset = source.prepare_dataset(c, str(tmp_path / "run"))
  inside = source.snippet_ground_truth(dataset)
  record = run_files.read_fold_record(str(tmp_path / "run"), 0)
  naive, labels = [], []
  for name in record["test_videos"]:
    _, flow = layout.load_features(dataset, [v for v in dataset.videos if v.video == name][0])
    naive.append(np.linalg.norm(flow - flow.mean(0), axis=1))
    labels.append(inside[name])
  naive_auc = report.attention_auc(np.concatenate(naive), np.concatenate(labels))
  assert learned > 0.75, (learned, naive_auc)
  assert learned > naive_auc + 0.1, (learned, naive_auc)
  assert result["tuned"]["rows"]["overall"]["tp"] > 0



def test_rerun_with_a_different_config_is_refused(tmp_path, data_cache):
  _, workdir, _ = run(tmp_path, data_cache, "cfg", **{"loso.folds": "1"})
  c = tiny_config(**{"loso.folds": "1", "mplg.theta": 0.5})
  c.data.cache_dir = data_cache
  with pytest.raises(ValueError, match=r"different config \(mplg.theta: 0.8 -> 0.5\)"):
    train.train_and_evaluate(c, workdir)


@pytest.mark.parametrize("field,value,message", [
    ("eval.protocol", "megc2", "eval.protocol"),
    ("model.dtype", "float16", "model.dtype"),
    ("log_every", 0, "log_every"),
    ("dfcl.tau", 0.0, "dfcl.tau"),
    ("mplg.threshold_mode", "literal", "threshold_mode"),
    ("inference.top_ratio", 1.5, "inference.top_ratio"),
], ids=["unknown protocol", "unsupported dtype", "zero log interval", "zero temperature",
        "unknown threshold mode", "top ratio above one"])
def test_bad_config_values_fail_before_any_data_is_touched(tmp_path, field, value, message):
  c = tiny_config(**{field: value}) if "." in field else tiny_config()
  if "." not in field:
    c[field] = value
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(c, str(tmp_path / "never"))
  assert not os.path.exists(tmp_path / "never" / "data")


def test_launcher_reports_a_missing_dataset_without_a_traceback(tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run(
      [sys.executable, "-m", "launch.main", "--config=configs/synthetic.py:tiny",
       f"--workdir={tmp_path / 'w'}", f"--config.data.dataset_dir={tmp_path / 'nope'}"],
      cwd=repo, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr
  assert "dataset.json" in proc.stderr and "missing" in proc.stderr


def test_programs_are_reused_explicitly_and_refused_for_another_config(tmp_path, data_cache):
  c = tiny_config(**{"loso.folds": "0"})
  c.data.cache_dir = data_cache
  programs = context.build_programs(c)
  train.train_and_evaluate(c, str(tmp_path / "a"), programs=programs)
  compiled = programs.train_step._cache_size()  # pylint: disable=protected-access
  assert compiled >= 1
  # Another seed and other point labels: the traced step is the same, nothing recompiles.
  c2 = tiny_config(**{"loso.folds": "1", "data.point_mode": "apex"})
  c2.seed = 3
  c2.data.cache_dir = data_cache
  train.train_and_evaluate(c2, str(tmp_path / "b"), programs=programs)
  assert programs.train_step._cache_size() == compiled  # pylint: disable=protected-access
  c3 = tiny_config(**{"loso.folds": "1", "mplg.theta": 0.5})
  c3.data.cache_dir = data_cache
  with pytest.raises(ValueError, match="Programs were built for a config"):
    train.train_and_evaluate(c3, str(tmp_path / "c"), programs=programs)


@pytest.mark.parametrize("name, arg", [("synthetic", None), ("synthetic", "tiny"),
                                       ("casme2", None)])
def test_jitted_init_is_bit_identical_to_the_eager_init(name, arg):
  """``state.make_init`` (one program, used by the trainer) gives init_state's exact bits."""
  config = importlib.import_module(f"configs.{name}").get_config(*([arg] if arg else []))
  model = model_lib.build_model(config.model)
  tx = state_lib.make_optimizer(config)
  feature_dim = config.data.synthetic_feature_dim
  init = state_lib.make_init(model, tx, config, feature_dim, 5)
  for fold in (0, 3):
    key = state_lib.fold_key(config, fold)
    eager = state_lib.init_state(model, tx, config, key, feature_dim, 5)
    jitted = init(key)
    assert jax.tree.structure(eager) == jax.tree.structure(jitted)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
      a, b = np.asarray(a), np.asarray(b)
      assert a.dtype == b.dtype and a.shape == b.shape
      assert a.tobytes() == b.tobytes()
