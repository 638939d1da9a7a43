"""The worked extension of docs/extending.md: its parts against numpy loops, and its command run
as written in the doc (a tiny LOSO run of launch.main)."""

import json
import os
import re
import shlex
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from configs import synthetic
from examples import temporal_smoothness
from pwes_jax.training import checks
from pwes_jax.method import objective

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _doc_command():
  """The ``python -m launch.main`` command of docs/extending.md's bash block, as argv."""
  with open(os.path.join(REPO, "docs", "extending.md")) as f:
    text = f.read()
  blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
  commands = [b for b in blocks if "launch.main" in b]
  assert len(commands) == 1, commands
  return shlex.split(commands[0].replace("\\\n", " "))


def test_smoothness_term_matches_a_loop():
  rng = np.random.default_rng(0)
  attention = rng.random((3, 6)).astype(np.float32)
  valid = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]], np.float32)
  row_valid = np.array([1, 1, 0], np.float32)
  got = temporal_smoothness.smoothness({"attention": jnp.asarray(attention)},
                                       {"valid": jnp.asarray(valid),
                                        "row_valid": jnp.asarray(row_valid)}, None, None)
  per_row = []
  for b in range(3):
    if not row_valid[b]:
      continue
    diffs = [(attention[b, t + 1] - attention[b, t]) ** 2 for t in range(5)
             if valid[b, t] and valid[b, t + 1]]
    per_row.append(sum(diffs) / max(len(diffs), 1))
  assert float(got) == pytest.approx(sum(per_row) / len(per_row), rel=1e-6)


def test_dilated_points_spread_each_point_to_its_neighbours():
  batch = {"valid": jnp.ones((1, 6)), "point_index": jnp.array([[1, 3]], jnp.int32),
           "point_label": jnp.array([[0, 1]], jnp.int32),
           "point_valid": jnp.array([[1.0, 1.0]])}
  labels = np.asarray(temporal_smoothness.dilated_points(
      {"suppressed": jnp.zeros((1, 6, 2))}, batch, None))[0]
  expected = np.zeros((6, 3))
  expected[0, 0] = expected[1, 0] = 1  # point ME at 1 and its left neighbour
  expected[2, 0] = expected[2, 1] = 1  # between the two points: both classes
  expected[3, 1] = expected[4, 1] = 1  # point MaE at 3 and its right neighbour
  np.testing.assert_array_equal(labels, expected)


def test_the_extension_is_selected_by_name_and_checked():
  c = synthetic.get_config("tiny")
  c.extensions = ("examples.temporal_smoothness",)
  c.mplg.variant = "dilated_points"
  c.loss.terms = tuple(c.loss.terms) + ("smoothness",)
  checks.check_run_config(c)
  assert objective.term_weight(c, "smoothness") == 0.1
  c.loss.terms = tuple(c.loss.terms) + ("nonexistent",)
  with pytest.raises(ValueError, match=r"config.loss.terms=.*'nonexistent'"):
    checks.check_run_config(c)
  c.extensions = ("examples.no_such_module",)
  with pytest.raises(ValueError, match="config.extensions: cannot import 'examples.no_such"):
    checks.check_run_config(c)


def test_a_name_cannot_be_registered_twice():
  with pytest.raises(ValueError, match="already registered"):
    objective.register_loss_term("smoothness")(temporal_smoothness.smoothness)
  with pytest.raises(ValueError, match="already registered"):
    objective.register_label_miner("full")(temporal_smoothness.dilated_points)


def test_the_docs_command_runs_a_tiny_loso_run(tmp_path):
  argv = _doc_command()
  assert argv[:3] == ["python", "-m", "launch.main"]
  workdir = tmp_path / "ext"
  argv = [sys.executable] + [a for a in argv[1:] if not a.startswith("--workdir=")] + [
      f"--workdir={workdir}", "--folds=0-1", "--config.optim.steps=6",
      "--config.mplg.pretrain_steps=2", "--config.checkpoint.every_steps=3",
      "--config.log_every=3"]
  proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "| tuned |" in proc.stdout
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  assert {r["fold"] for r in rows} == {0, 1}
  assert all("smoothness" in r and np.isfinite(r["smoothness"]) for r in rows)
  config = json.load(open(workdir / "config.json"))
  assert config["mplg"]["variant"] == "dilated_points"
  assert config["extensions"] == ["examples.temporal_smoothness"]
  assert os.path.isfile(workdir / "results.json")


def test_an_extension_not_found_and_one_that_fails_are_told_apart(tmp_path, monkeypatch):
  """Not on the path: the PYTHONPATH hint. Found but failing (its own error, a missing
  dependency, a syntax error): one line naming the module, the error and where it was raised."""
  (tmp_path / "ext_broken.py").write_text("x = 1\nraise RuntimeError('bad\\n  weight')\n")
  (tmp_path / "ext_needs_dep.py").write_text("import no_such_dependency_xyz\n")
  (tmp_path / "ext_syntax.py").write_text("def f(:\n  pass\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  c = synthetic.get_config("tiny")

  def message(module):
    c.extensions = (module,)
    with pytest.raises(ValueError) as e:
      checks.check_run_config(c)
    assert "\n" not in str(e.value)
    return str(e.value)

  for missing in ("my_lab_ext", "my_lab.ext"):
    text = message(missing)
    assert text.startswith(f"config.extensions: cannot import {missing!r}: module ")
    assert "PYTHONPATH" in text
  broken = tmp_path / "ext_broken.py"
  assert message("ext_broken") == (f"config.extensions: importing 'ext_broken' failed: "
                                   f"RuntimeError: bad weight (at {broken}:2)")
  text = message("ext_needs_dep")
  assert text.startswith("config.extensions: importing 'ext_needs_dep' failed: "
                         "ModuleNotFoundError: No module named 'no_such_dependency_xyz' (at ")
  assert text.endswith(f"{tmp_path / 'ext_needs_dep.py'}:1)") and "PYTHONPATH" not in text
  text = message("ext_syntax")
  assert "importing 'ext_syntax' failed: SyntaxError" in text
  assert text.endswith(f"{tmp_path / 'ext_syntax.py'}:1)") and "PYTHONPATH" not in text


def test_a_loss_term_that_is_not_a_scalar_is_one_line_naming_it(tmp_path):
  """A registered term returning a per-example vector fails at the first step's trace with one
  line naming the term, its shape and what to do, not a traceback from the jitted sum."""
  (tmp_path / "ext_vector_term.py").write_text(
      "import jax.numpy as jnp\n"
      "from pwes_jax.method import objective\n"
      "@objective.register_loss_term('per_video_attention')\n"
      "def per_video_attention(outputs, batch, labels, config):\n"
      "  return jnp.mean(outputs['attention'], axis=-1)  # [B]: not reduced over the batch\n")
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run(
      [sys.executable, "-m", "launch.main", "--config=configs/synthetic.py:tiny",
       f"--workdir={tmp_path / 'run'}", "--folds=0", "--config.optim.steps=2",
       "--config.extensions=('ext_vector_term',)",
       "--config.loss.terms=('mil','mil_suppressed','guide','sparsity','mutual','snippet',"
       "'per_video_attention')"],
      cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
  assert proc.returncode == 1, proc.stderr[-3000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith("launch.main: ")]
  assert lines == ["launch.main: loss term 'per_video_attention' returned an array of shape "
                   "(4,) and dtype float32; a loss term must return one real scalar (reduce "
                   "it, e.g. with jnp.mean)"], proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
