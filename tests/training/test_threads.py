"""Folds trained several at a time in threads (``config.loso.concurrent_folds``): the same bits
as one after another, a failure in one fold stops the others and names the fold, a rerun
resumes; the progress and metrics log shared by the threads."""

import json
import os
import shutil
import signal
import threading
import time
import types

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from pwes_jax.workdir import checkpointing
from pwes_jax.training import metrics_log
from pwes_jax.training import progress as progress_lib
from pwes_jax.workdir import run_files
from pwes_jax import train
from pwes_jax.training import context
from pwes_jax.training import loop
from pwes_jax.training import threads
from tests import test_train

_FOLDS = "0-3"


def _run(workdir, data_cache, **overrides):
  c = test_train.tiny_config(**{"loso.folds": _FOLDS, **overrides})
  c.data.cache_dir = data_cache
  return train.train_and_evaluate(c, str(workdir))


def _metric_rows(workdir):
  """``{(fold, step): row without steps_per_sec}`` of the run's metrics log."""
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  keys = [(r["fold"], r["step"]) for r in rows]
  assert len(keys) == len(set(keys)), "a step logged twice"
  return {(r["fold"], r["step"]): {k: v for k, v in r.items() if k != "steps_per_sec"}
          for r in rows}


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def one_at_a_time(tmp_path_factory, data_cache):
  workdir = tmp_path_factory.mktemp("sequential") / "run"
  return workdir, _run(workdir, data_cache, **{"loso.concurrent_folds": 1})


def _assert_same_bits(a_dir, b_dir, folds=range(4)):
  for fold in folds:
    a = run_files.load_outputs(os.path.join(run_files.fold_dir(str(a_dir), fold), "outputs.npz"))
    b = run_files.load_outputs(os.path.join(run_files.fold_dir(str(b_dir), fold), "outputs.npz"))
    assert sorted(a) == sorted(b)
    for name in a:
      for key in a[name]:
        np.testing.assert_array_equal(a[name][key], b[name][key], err_msg=f"{fold} {name} {key}")
    flat_a, flat_b = _state(a_dir, fold), _state(b_dir, fold)
    assert flat_a.keys() == flat_b.keys() and len(flat_a) > 10
    for k in flat_a:
      np.testing.assert_array_equal(flat_a[k], flat_b[k], err_msg=f"fold {fold} {k}")


def _state(workdir, fold):
  """``{"<step> <path>": numpy array}`` of every leaf of every kept checkpoint of ``fold``."""
  manager = checkpointing.make_manager(run_files.checkpoint_dir(str(workdir), fold),
                                       read_only=True)
  try:
    out = {}
    for step in manager.all_steps():
      tree = manager.restore(step, args=ocp.args.PyTreeRestore())
      for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        out[f"{step} {jax.tree_util.keystr(path)}"] = np.asarray(leaf)
    return out
  finally:
    manager.close()


def _without_times(folds):
  """The per-fold results as JSON text (NaN AUCs compare equal), without the training times."""
  return json.dumps({k: {f: v for f, v in rec.items() if f != "train_seconds"}
                     for k, rec in folds.items()}, sort_keys=True)


@pytest.mark.parametrize("width", [2, 3])
def test_concurrent_folds_train_the_same_bits_as_one_at_a_time(tmp_path, data_cache,
                                                               one_at_a_time, width):
  seq_dir, seq = one_at_a_time
  par = _run(tmp_path / "run", data_cache, **{"loso.concurrent_folds": width})
  _assert_same_bits(seq_dir, tmp_path / "run")
  assert par["tuned"]["rows"] == seq["tuned"]["rows"]
  assert _without_times(par["folds"]) == _without_times(seq["folds"])
  assert _metric_rows(tmp_path / "run") == _metric_rows(seq_dir)
  records = [run_files.read_fold_record(str(tmp_path / "run"), f) for f in range(4)]
  assert all(r["finished"] and r["train_seconds"] > 0 for r in records)


def test_concurrent_folds_is_a_rerun_free_field(tmp_path, data_cache, one_at_a_time):
  """A run started one fold at a time may be finished several at a time (and the reverse)."""
  seq_dir, _ = one_at_a_time
  workdir = tmp_path / "run"
  _run(workdir, data_cache, **{"loso.concurrent_folds": 1, "loso.folds": "0"})
  _run(workdir, data_cache, **{"loso.concurrent_folds": 2})
  _assert_same_bits(seq_dir, workdir)


def test_a_failing_fold_stops_the_others_and_a_rerun_resumes(tmp_path, data_cache,
                                                             one_at_a_time, monkeypatch):
  """Fold 2 fails at its first metrics check while fold 1 trains beside it: the run raises fold
  2's error, fold 1 stops before finishing, fold 3 never starts; the rerun finishes every fold
  with the bits of an uninterrupted run."""
  seq_dir, seq = one_at_a_time
  check = metrics_log.check_finite
  fold1_started = threading.Event()
  unit, stops = loop._train_unit, []  # pylint: disable=protected-access

  def unit_seen(ctx, make_driver, log, progress, stop=None):
    if stop is not None:
      stops.append(stop)  # the fold threads' shared stop event
    return unit(ctx, make_driver, log, progress, stop)

  def failing(history, fold_index):
    if fold_index == 1 and not fold1_started.is_set():
      fold1_started.set()
      assert stops[0].wait(60)  # fold 1 goes on only after fold 2's failure stopped the run
    if fold_index == 2:
      fold1_started.wait(60)  # both folds are under way when fold 2 fails
      raise metrics_log.NonFiniteLossError(f"fold {fold_index}: loss is nan at step 3")
    check(history, fold_index)

  monkeypatch.setattr(metrics_log, "check_finite", failing)
  monkeypatch.setattr(loop, "_train_unit", unit_seen)
  workdir = tmp_path / "run"
  with pytest.raises(train.NonFiniteLossError, match=r"^fold 2: loss is nan at step 3$"):
    _run(workdir, data_cache, **{"loso.concurrent_folds": 2})
  monkeypatch.setattr(metrics_log, "check_finite", check)
  monkeypatch.setattr(loop, "_train_unit", unit)
  assert sorted(run_files.finished_folds(str(workdir))) == [0]
  assert not os.path.exists(os.path.join(run_files.fold_dir(str(workdir), 3), "fold.json"))
  assert not os.path.exists(run_files.fold_dir(str(workdir), 3))  # never started
  resumed = _run(workdir, data_cache, **{"loso.concurrent_folds": 2})
  _assert_same_bits(seq_dir, workdir)
  assert resumed["tuned"]["rows"] == seq["tuned"]["rows"]


def test_concurrent_folds_of_1_or_stacked_groups_train_one_unit_at_a_time():
  c = test_train.tiny_config()
  c.loso.concurrent_folds = 3
  assert loop.concurrent_folds(c) == 3
  c.loso.parallel_folds = 2  # folds side by side in one step: no threads on top
  assert loop.concurrent_folds(c) == 1
  del c.loso["concurrent_folds"]  # a config written before the field existed
  c.loso.parallel_folds = 1
  assert loop.concurrent_folds(c) == 1


@pytest.mark.parametrize("value", [0, -1, True])
def test_bad_concurrent_folds_is_refused_before_training(tmp_path, value):
  c = test_train.tiny_config()
  c.loso.concurrent_folds = value
  with pytest.raises(ValueError, match=r"config\.loso\.concurrent_folds=.*positive integer"):
    train.train_and_evaluate(c, str(tmp_path / "run"))
  assert not os.path.exists(os.path.join(tmp_path, "run", "config.json"))


class _Clock:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_concurrent_phases_are_shares_of_the_wall_time(monkeypatch):
  """Two threads' setup/training/inference seconds (summed: 40 s) inside a 20 s concurrent
  block become 20 s of the summary's phases, in the threads' proportions."""
  clock = _Clock()
  monkeypatch.setattr(progress_lib.time, "perf_counter", clock)
  p = progress_lib.RunProgress(total_folds=3, out=lambda line: None)
  p.add("training", 10.0)
  clock.now = 10.0
  p.unit_done("fold 0", 1, 10.0)
  with p.concurrently(2):
    for _ in range(2):  # two threads, each: 2 s setup, 16 s training, 2 s inference
      p.add("setup", 2.0)
      p.add("training", 16.0)
      p.add("inference", 2.0)
    clock.now = 30.0
    p.unit_done("fold 1", 1, 20.0)
    p.unit_done("fold 2", 1, 20.0)
  assert p.seconds["setup"] == pytest.approx(2.0)
  assert p.seconds["training"] == pytest.approx(10.0 + 16.0)
  assert p.seconds["inference"] == pytest.approx(2.0)
  summary = p.summary()
  assert summary.startswith("time: 30.0 s wall = setup 2.0 s, training 26.0 s, inference 2.0 s")
  assert "folds trained 2 at a time for 20.0 s of it" in summary


def test_concurrent_eta_counts_what_is_left_of_the_folds_under_way(monkeypatch):
  """Five folds, fold 0 alone (10 s), then two at a time: when fold 1 ends (20 s) its partner
  fold 2, under way for as long, is nearly done, so the ETA is one more round (folds 3 and 4),
  not three folds' worth; and so on, hand-worked."""
  clock = _Clock()
  thread = {"id": 0}
  monkeypatch.setattr(progress_lib.time, "perf_counter", clock)
  monkeypatch.setattr(progress_lib, "threading", types.SimpleNamespace(
      RLock=threading.RLock, get_ident=lambda: thread["id"]))
  lines = []
  p = progress_lib.RunProgress(total_folds=5, out=lines.append)

  def start(tid, at):
    clock.now, thread["id"] = at, tid
    p.unit_started()

  def done(tid, at, name, seconds):
    clock.now, thread["id"] = at, tid
    p.unit_done(name, 1, seconds)

  p.announce_concurrency(2)
  start(0, 0.0)
  done(0, 10.0, "fold 0", 10.0)  # alone: no figure for two at a time yet, so no ETA
  with p.concurrently(2):
    start(1, 10.0)
    start(2, 10.0)
    done(1, 30.0, "fold 1", 20.0)  # fold 2 has 20 - 20 = 0 s left; folds 3, 4 take 20 s each
    start(1, 30.0)  # fold 3
    done(2, 32.0, "fold 2", 22.0)  # mean 21 s: fold 3 has 21 - 2 = 19 s left, fold 4 21 s
    start(2, 32.0)  # fold 4
    done(1, 51.0, "fold 3", 21.0)  # mean 21 s: fold 4 has 21 - 19 = 2 s left
    done(2, 53.0, "fold 4", 21.0)
  assert [l.rsplit("ETA ", 1)[-1] if "ETA" in l else None for l in lines] == [
      "after the next folds (2 at a time from now)", "20s", "21s", "2s", None]


def test_metrics_log_keeps_rows_appended_while_another_fold_truncates(tmp_path):
  log = metrics_log.MetricsLog(str(tmp_path), use_tensorboard=False)
  for step in range(1, 51):
    log.write(2, step, {"loss": 1.0})

  def append():
    for step in range(1, 301):
      log.write(1, step, {"loss": float(step)})

  def truncate():
    for step in range(50, 0, -1):
      log.truncate(2, step)

  threads = [threading.Thread(target=append), threading.Thread(target=truncate)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert [r["step"] for r in log.rows(1)] == list(range(1, 301))
  assert [r["step"] for r in log.rows(2)] == [1]


def test_an_interrupt_waits_for_the_folds_under_way(monkeypatch):
  """Ctrl-C (here SIGALRM raising SystemExit in the calling thread) while two folds train: the
  call ends with the exception only after both folds under way have finished what they were
  doing (a checkpoint being written is completed, not cut), and no further fold starts. A
  ``Thread.join`` cut short by the signal would have returned at once (CPython 3.11)."""
  finished = []
  both = threading.Barrier(2)

  def unit(ctx, make_driver, log, progress, stop=None):
    index = make_driver()
    both.wait(60)  # both folds are under way when the signal comes
    if index == 2:
      signal.pthread_kill(threading.main_thread().ident, signal.SIGALRM)
    assert stop.wait(60)  # the caller stopped the threads ...
    time.sleep(1.0 if index == 1 else 0.2)  # ... and waits for them (fold 1 the slower)
    finished.append(index)
    return []

  def interrupt(signum, frame):
    raise SystemExit(130)

  previous = signal.signal(signal.SIGALRM, interrupt)
  try:
    with pytest.raises(SystemExit):
      threads.train_threads([lambda: 1, lambda: 2, lambda: 3], 2,
                            lambda make_driver, stop: unit(None, make_driver, None, None, stop))
  finally:
    signal.signal(signal.SIGALRM, previous)
  assert sorted(finished) == [1, 2]


def test_fold_threads_run_under_the_callers_jax_context(tmp_path, data_cache, monkeypatch):
  """``with jax.default_device(d)`` (and JAX's other thread-local contexts) around a run reaches
  the fold threads: every fold trains on ``d``, not the first fold only."""
  devices = {}
  finish = context.finish_fold

  def recording(ctx, fold, params, *args, **kwargs):
    devices[fold.index] = {d for leaf in jax.tree.leaves(params) for d in leaf.devices()}
    return finish(ctx, fold, params, *args, **kwargs)

  monkeypatch.setattr(context, "finish_fold", recording)
  target = jax.devices()[1]
  with jax.default_device(target):
    _run(tmp_path / "run", data_cache, **{"loso.concurrent_folds": 2})
  assert devices == {f: {target} for f in range(4)}


def test_a_resumed_fold_reuses_the_fresh_folds_programs(tmp_path, data_cache):
  """A fold restored from its checkpoint runs the programs a fresh fold compiled (Orbax's
  restored arrays are committed to a device, a fresh state's are not: another program per
  bucket before)."""
  c = test_train.tiny_config(**{"loso.folds": "0,1"})
  c.data.cache_dir = data_cache
  programs = context.build_programs(c)
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(c, workdir, programs=programs)
  compiled = programs.train_step._cache_size()  # pylint: disable=protected-access
  fdir = run_files.fold_dir(workdir, 1)
  for name in ("fold.json", "outputs.npz"):
    os.remove(os.path.join(fdir, name))
  shutil.rmtree(os.path.join(fdir, "checkpoints", "12"))  # resumes at step 8
  train.train_and_evaluate(c, workdir, programs=programs)
  assert run_files.read_fold_record(workdir, 1)["finished"]
  assert programs.train_step._cache_size() == compiled  # pylint: disable=protected-access
