"""Two processes with two CPU devices each form one 4-device fold mesh (gloo collectives)."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from configs import synthetic
from pwes_jax import run_dir
from pwes_jax import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
      steps = os.listdir(os.path.join(run_dir.fold_dir(run, fold), "checkpoints"))
      assert "6" in steps
    a = run_dir.load_outputs(os.path.join(run_dir.fold_dir(single, fold), "outputs.npz"))
    b = run_dir.load_outputs(os.path.join(run_dir.fold_dir(workdir, fold), "outputs.npz"))
    for name in a:
      np.testing.assert_allclose(a[name]["attention"], b[name]["attention"], rtol=2e-4,
                                 atol=2e-5)
