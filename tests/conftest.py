"""Test-wide setup: four fake CPU devices, set once before JAX initialises."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=4").strip()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", False)
# Identical programs compiled by different tests (each run builds its own jitted step) are
# compiled once per session: XLA compile time dominates the tiny end-to-end runs on a CPU.
import tempfile  # noqa: E402

jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("PWES_TEST_COMPILE_CACHE",
                                 os.path.join(tempfile.gettempdir(), "pwes_jax_test_xla_cache")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
  """One tiny trained run (fold 0 only, 6 steps) shared by the report and spot tests."""
  from configs import synthetic  # pylint: disable=g-import-not-at-top
  from pwes_jax import train  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("tiny_run"))
  config = synthetic.get_config("tiny")
  config.optim.steps = 6
  config.loso.folds = "0"
  train.train_and_evaluate(config, workdir)
  return workdir
