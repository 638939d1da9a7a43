"""Two processes with two CPU devices each form one 4-device fold mesh (gloo collectives)."""

import glob
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from configs import synthetic
from pwes_jax.workdir import lock
from pwes_jax.workdir import run_files
from pwes_jax import train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OVERRIDES = {"optim.steps": 6, "mplg.pretrain_steps": 3, "checkpoint.every_steps": 3,
             "log_every": 3}


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_train_their_own_folds_like_one_process(tmp_path):
  data = str(tmp_path / "data")
  workdir = str(tmp_path / "multi")
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=2")
  flags = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]

  def launch(port):
    procs = [subprocess.Popen(
        [sys.executable, "-m", "launch.main", "--config=configs/synthetic.py:tiny",
         f"--workdir={workdir}", "--folds=0-3", "--config.loso.parallel_folds=4",
         f"--config.data.cache_dir={data}", f"--coordinator_address=127.0.0.1:{port}",
         "--num_processes=2", f"--process_id={i}", "--cpu_collectives=gloo", *flags],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    for p, log in zip(procs, logs):
      assert p.returncode == 0, log[-3000:]
    return logs

  logs = launch(port)
  assert "fold-steps/s" in logs[0] and "fold-steps/s" in logs[1]
  assert "| +MPLG+DFCL | tuned |" in logs[0]  # only process 0 reports
  assert "| +MPLG+DFCL | tuned |" not in logs[1]

  c = synthetic.get_config("tiny")
  for k, v in OVERRIDES.items():
    section, _, field = k.rpartition(".")
    (c[section] if section else c)[field] = v
  c.loso.folds = "0-3"
  c.data.cache_dir = data
  single = str(tmp_path / "single")
  train.train_and_evaluate(c, single)
  for fold in range(4):
    for run in (workdir, single):
      steps = os.listdir(os.path.join(run_files.fold_dir(run, fold), "checkpoints"))
      assert "6" in steps
    a = run_files.load_outputs(os.path.join(run_files.fold_dir(single, fold), "outputs.npz"))
    b = run_files.load_outputs(os.path.join(run_files.fold_dir(workdir, fold), "outputs.npz"))
    for name in a:
      np.testing.assert_allclose(a[name]["attention"], b[name]["attention"], rtol=2e-4,
                                 atol=2e-5)

  # A rerun with fold 1's fold.json damaged: process 0 alone sets it aside (process 1 only
  # reads); both rebuild fold 1 from its last checkpoint and skip the finished folds.
  outputs = os.path.join(run_files.fold_dir(workdir, 1), "outputs.npz")
  before = run_files.load_outputs(outputs)
  with open(os.path.join(run_files.fold_dir(workdir, 1), "fold.json"), "w") as f:
    f.write('{"finished": tr')
  logs = launch(_free_port())
  assert logs[0].count("set aside as") == 1 and "set aside as" not in logs[1], logs[0][-3000:]
  for log in logs:
    assert "folds [0, 2, 3] already finished" in log, log[-3000:]
  assert len(glob.glob(os.path.join(run_files.fold_dir(workdir, 1), "fold.json.damaged-*"))) == 1
  assert run_files.read_fold_record(workdir, 1)["finished"]
  after = run_files.load_outputs(outputs)
  assert sorted(after) == sorted(before)
  for name in before:
    np.testing.assert_allclose(after[name]["attention"], before[name]["attention"], rtol=2e-4,
                               atol=2e-5)


def _launch_two(tmp_path, per_process_flags, timeout=300):
  """Starts a two-process tiny run; returns ``[(returncode, log, seconds)]``. A process still
  running after ``timeout`` seconds (a hang) fails the test."""
  import time  # pylint: disable=g-import-not-at-top  (only these tests time processes)
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=2")
  flags = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
  t0 = time.time()
  procs = [subprocess.Popen(
      [sys.executable, "-m", "launch.main", "--config=configs/synthetic.py:tiny",
       f"--workdir={tmp_path / 'w'}", "--folds=0-3", "--config.loso.parallel_folds=4",
       f"--config.data.cache_dir={tmp_path / 'data'}", f"--coordinator_address=127.0.0.1:{port}",
       "--num_processes=2", f"--process_id={i}", "--cpu_collectives=gloo",
       "--heartbeat_timeout_s=10", "--shutdown_timeout_s=10", *flags, *per_process_flags[i]],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  out = []
  for p in procs:
    try:
      log = p.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
      p.kill()
      pytest.fail(f"process still running after {timeout} s: {p.communicate()[0][-3000:]}")
    out.append((p.returncode, log, time.time() - t0))
  return out


def test_one_bad_dataset_dir_ends_both_processes_with_its_message(tmp_path):
  bad = f"--config.data.dataset_dir={tmp_path / 'nope'}"
  results = _launch_two(tmp_path, [[], [bad]])
  for rc, log, seconds in results:
    assert rc not in (0, None), log[-3000:]
    assert seconds < 150, (seconds, log[-2000:])  # both end promptly, not at the timeout
    assert "dataset.json" in log and "missing" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
  assert "process 1 failed at start" in results[0][1]


def test_a_workdir_in_use_ends_both_processes_at_start(tmp_path):
  """Process 0 takes the workdir lock for the run: a lock held by a live process (this test's)
  ends both processes at start with the busy message naming it; the lock is left as it was
  and no fold directory is made."""
  w = tmp_path / "w"
  w.mkdir()
  lock_file = lock.lock_path(str(w))
  holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": "2026-12-01 00:00:00"}
  with open(lock_file, "w") as f:
    json.dump(holder, f)
  results = _launch_two(tmp_path, [[], []])
  for rc, log, seconds in results:
    assert rc not in (0, None), log[-3000:]
    assert seconds < 150, (seconds, log[-2000:])  # both end promptly, not at the timeout
    assert f"workdir {w} is in use by process {os.getpid()}" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
  assert "process 0 failed at start" in results[1][1]
  with open(lock_file) as f:
    assert json.load(f) == holder
  assert not os.path.exists(run_files.fold_dir(str(w), 0))


def test_processes_with_different_configs_are_refused(tmp_path):
  results = _launch_two(tmp_path, [[], ["--config.optim.learning_rate=0.01"]])
  for rc, log, seconds in results:
    assert rc not in (0, None), log[-3000:]
    assert seconds < 150, (seconds, log[-2000:])  # both end promptly, not at the timeout
    assert "run another config than process 0" in log, log[-3000:]
  assert not os.path.exists(run_files.fold_dir(str(tmp_path / "w"), 0))


def test_sigterm_ends_a_process_and_the_other_follows(tmp_path):
  import signal  # pylint: disable=g-import-not-at-top  (only this test sends signals)
  import time  # pylint: disable=g-import-not-at-top  (see above)
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=2")
  w = tmp_path / "w"
  procs = [subprocess.Popen(
      [sys.executable, "-m", "launch.main", "--config=configs/synthetic.py:tiny",
       f"--workdir={w}", "--folds=0-3", "--config.loso.parallel_folds=4",
       f"--config.data.cache_dir={tmp_path / 'data'}", f"--coordinator_address=127.0.0.1:{port}",
       "--num_processes=2", f"--process_id={i}", "--cpu_collectives=gloo",
       "--heartbeat_timeout_s=5", "--shutdown_timeout_s=5", "--config.optim.steps=100000",
       "--config.log_every=1"],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  deadline = time.time() + 300
  while not (w / "metrics.p1.jsonl").exists() and time.time() < deadline:
    assert all(p.poll() is None for p in procs), procs[0].communicate()[0][-2000:]
    time.sleep(0.2)
  t0 = time.time()
  procs[1].send_signal(signal.SIGTERM)
  try:
    procs[1].communicate(timeout=10)
    log0 = procs[0].communicate(timeout=90)[0]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert procs[1].returncode == -signal.SIGTERM
  assert procs[0].returncode != 0 and time.time() - t0 < 90, log0[-2000:]
