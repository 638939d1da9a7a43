"""The main launcher's terminal: progress, ETA, phase summary and warnings, no library INFO
unless --verbosity asks; a rerun reuses compiled programs from the persistent cache; the
allocator tuning of the launchers."""

import dataclasses
import os
import platform
import re
import subprocess
import sys
import tempfile

import jax
import numpy as np
import pytest

from pwes_jax import runtime
from pwes_jax.training import progress as progress_lib

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# absl's INFO prefix (``I1130 18:11:38.565510 1399... file.py:123]``) and Python logging's.
_INFO = re.compile(r"^(I\d{4} \d\d:\d\d:\d\d|INFO[: ])")


def _launch(workdir, cache, *extra):
  env = dict(os.environ, PWES_COMPILE_CACHE=str(cache), JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)  # one CPU device, as a user's shell has
  proc = subprocess.run(
      [sys.executable, "-m", "launch.main", "--config=configs/synthetic.py:tiny",
       f"--workdir={workdir}", "--folds=0-2", "--config.optim.steps=10",
       "--config.checkpoint.every_steps=5", "--config.mplg.pretrain_steps=4", *extra],
      cwd=_ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout.splitlines(), proc.stderr.splitlines()


@pytest.fixture(scope="module")
def cache_dir():
  return os.environ.get("PWES_TEST_COMPILE_CACHE",
                        os.path.join(tempfile.gettempdir(), "pwes_jax_test_xla_cache"))


def test_default_run_is_quiet_and_shows_progress_eta_and_summary(tmp_path, cache_dir):
  out, err = _launch(tmp_path / "run", cache_dir)
  lines = out + err
  leaked = [l for l in lines if _INFO.match(l)]
  assert not leaked, leaked[:5]
  assert not any("orbax" in l.lower() or "checkpoint_manager" in l for l in lines), lines
  folds = [l for l in out if re.match(r"^\[\d/3\] fold  \d \(subject ", l)]
  assert len(folds) == 3, out
  assert "steps/s" in folds[0] and "ETA" not in folds[-1]
  # Fold 0 trains alone, then folds 1 and 2 side by side: no two-at-a-time figure yet.
  assert folds[0].endswith(", ETA after the next folds (2 at a time from now)"), folds[0]
  assert re.search(r", ETA \d+s$", folds[1]), folds[1]
  summary = [l for l in out if l.startswith("time: ")]
  assert len(summary) == 1 and "training" in summary[0] and "evaluation" in summary[0]
  # The synthetic config trains folds 1 and 2 side by side in two threads: still quiet.
  assert any(l.startswith("folds trained 2 at a time for ") for l in out), out
  compiles = [l for l in out if l.startswith("compiles: ")]
  assert len(compiles) == 1 and "loaded from the compilation cache" in compiles[0]
  # The summary comes before the table; the table ends the run.
  table = out.index(next(l for l in out if l.startswith("| run |")))
  assert out.index(summary[0]) < table
  # Warnings stay visible (the fold 0 subject's negative video, the tuned-row note).
  assert any(l.startswith("warning: ") and "negative videos" in l for l in err), err
  assert not any(re.match(r"^[WE]\d{4} ", l) for l in err), err  # no absl prefix
  assert len(lines) <= 30, lines

  # A second run (new workdir, same programs) loads the compiled step from the cache.
  out2, _ = _launch(tmp_path / "run2", cache_dir)
  line = next(l for l in out2 if l.startswith("compiles: "))
  reused = int(re.search(r"(\d+) loaded from the compilation cache", line).group(1))
  assert reused >= 2, line  # at least the train step of each bucket drawn and the forward


def test_verbosity_brings_library_info_back(tmp_path, cache_dir):
  out, err = _launch(tmp_path / "run", cache_dir, "--verbosity=0")
  info = [l for l in out + err if _INFO.match(l)]
  assert any("checkpoint" in l for l in info), (out + err)[:20]


def test_compile_counts_see_each_new_program_once():
  runtime.listen()
  x = np.ones((7, 3), np.float32)
  f = jax.jit(lambda x: x * 3.0 + 1.0)
  before = runtime.counts()
  f(x).block_until_ready()
  once = runtime.counts() - before
  f(x).block_until_ready()  # the same shapes: no new program
  f(x[:2]).block_until_ready()  # new shapes: one more
  twice = runtime.counts() - before
  assert once.programs == 1 and once.compile_seconds > 0.0
  assert twice.programs == 2 and twice.compiled + twice.from_cache == 2


def test_enable_keeps_a_configured_dir_and_honours_off(tmp_path):
  configured = jax.config.jax_compilation_cache_dir  # conftest sets the test cache
  assert configured
  assert runtime.enable(str(tmp_path / "other")) == configured
  jax.config.update("jax_compilation_cache_dir", None)
  try:
    assert runtime.enable("off") is None
    assert not jax.config.jax_compilation_cache_dir
  finally:
    jax.config.update("jax_compilation_cache_dir", configured)


def test_eta_counts_remaining_folds_at_the_steady_rate():
  lines = []
  p = progress_lib.RunProgress(total_folds=4, out=lines.append)
  p.unit_done("fold 0", 1, 100.0, steady_seconds=12.0)  # pays the compiles
  p.unit_done("fold 1", 1, 10.0)
  p.unit_done("fold 2", 1, 20.0)
  assert lines[0].startswith("[1/4] fold 0") and lines[0].endswith("ETA 36s")  # 3 x 12 s
  assert lines[1].endswith("ETA 20s")   # 2 left x 10 s
  assert lines[2].endswith("ETA 15s")   # 1 left x mean(10, 20)
  p.unit_done("fold 3", 1, 5.0)
  assert "ETA" not in lines[3]
  with p.phase("evaluation"):
    pass
  assert p.summary().startswith("time: ")


def test_summary_has_no_compiles_line_when_nothing_was_built(monkeypatch):
  """A rerun of a finished workdir builds no program: no 'compiles: 0 program(s) ...' line;
  once a program was built, the line is there."""
  counts = {"n": runtime.Counts()}
  monkeypatch.setattr(progress_lib.runtime, "counts", lambda: counts["n"])
  p = progress_lib.RunProgress(total_folds=0, out=[].append)
  assert "compiles:" not in p.summary()
  counts["n"] = dataclasses.replace(runtime.Counts(), programs=1,
                                    compile_seconds=0.5)
  assert "\ncompiles: 1 program(s) built in 0.5 s: 1 compiled" in p.summary()


def test_keep_freed_memory_sets_glibc_thresholds_unless_the_user_did(monkeypatch):
  monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1")
  assert runtime.keep_freed_memory() is False  # the user's tuning wins
  monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
  if platform.libc_ver()[0] == "glibc":
    assert runtime.keep_freed_memory() is True


# ------------------------------------------------------------------------------------------------
# A cache that cannot be used, or holds damaged entries.


@pytest.fixture
def no_configured_cache():
  configured = jax.config.jax_compilation_cache_dir
  jax.config.update("jax_compilation_cache_dir", None)
  try:
    yield
  finally:
    jax.config.update("jax_compilation_cache_dir", configured)


def _read_only(monkeypatch):
  def refuse(*args, **kwargs):
    raise PermissionError(13, "Permission denied", kwargs.get("dir"))
  monkeypatch.setattr(runtime.tempfile, "NamedTemporaryFile", refuse)


@pytest.mark.parametrize("case", ["not_a_directory", "read_only"])
def test_an_unusable_cache_directory_is_one_warning_and_a_run_without_it(
    tmp_path, caplog, monkeypatch, no_configured_cache, case):
  if case == "not_a_directory":
    (tmp_path / "home").write_text("a file where the cache directory should be")
    directory, reason = str(tmp_path / "home" / "xla"), "a path component is a file"
  else:
    _read_only(monkeypatch)  # (the tests may run as root, whom no mode bit stops)
    directory, reason = str(tmp_path / "xla"), "permission denied"
  with caplog.at_level("WARNING"):
    assert runtime.enable(directory) is None
  assert not jax.config.jax_compilation_cache_dir
  said = [r.getMessage() for r in caplog.records]
  assert len(said) == 1, said
  assert said[0].startswith(f"compilation cache {directory} cannot be used: {reason}")
  assert "running without it (set PWES_COMPILE_CACHE to a writable directory, or to off)" in said[0]


def test_a_launcher_with_an_unusable_cache_goes_on_without_it(tmp_path):
  (tmp_path / "home").write_text("not a directory")
  env = dict(os.environ, PWES_COMPILE_CACHE=str(tmp_path / "home" / "xla"), JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run([sys.executable, "-m", "launch.spot", f"--workdir={tmp_path / 'none'}",
                         f"--features={tmp_path / 'none.npz'}", f"--output={tmp_path / 'o.json'}"],
                        cwd=_ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert "Traceback" not in proc.stderr, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert lines[0].startswith("warning: compilation cache ") and "cannot be used" in lines[0]
  assert lines[-1].startswith("spot: ")  # the run went on to its own (one-line) error


_DAMAGE = r"""
import os, sys
import jax, jax.numpy as jnp
from pwes_jax import runtime
assert runtime.enable(sys.argv[1]) == sys.argv[1]
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
f = jax.jit(lambda x: jnp.sin(x) @ x.T + 1.0)
print(float(f(jnp.ones((32, 32))).sum()))
"""


def test_a_damaged_cache_entry_is_set_aside_and_rebuilt_once(tmp_path):
  cache = tmp_path / "xla"
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=_ROOT)
  env.pop("XLA_FLAGS", None)

  def run():
    proc = subprocess.run([sys.executable, "-c", _DAMAGE, str(cache)], cwd=_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc

  value = run().stdout
  entry = next(n for n in os.listdir(cache) if n.startswith("jit__lambda-"))
  whole = (cache / entry).read_bytes()
  (cache / entry).write_bytes(whole[:len(whole) // 3])  # a killed or full-disk write
  again = run()
  assert again.stdout == value
  said = [l for l in again.stderr.splitlines() if "compilation cache" in l or "Error reading" in l]
  assert len(said) == 1, again.stderr
  assert f"damaged entry {entry} set aside (.damaged)" in said[0]
  assert (cache / f"{entry}.damaged").read_bytes() == whole[:len(whole) // 3]
  assert len((cache / entry).read_bytes()) > len(whole) // 3  # written afresh
  third = run()  # rebuilt once: the next run reads it without a word
  assert third.stdout == value and "compilation cache" not in third.stderr
  assert "Error reading" not in third.stderr
