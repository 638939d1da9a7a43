"""The package's layers point one way: every module imports only what the table allows, the
import graph has no circle, and no import hides inside a function without a comment saying why.

Read from the source with ``ast`` (nothing is imported). A new module must be added to
``ALLOWED`` with what it may import; ``data`` and ``extraction`` are one layer each.
"""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pwes_jax")

# module -> the pwes_jax modules it may import (anywhere in it).
ALLOWED = {
    # Orchestration: train composes the loop and the report; nothing imports train or trainer.
    "train": {"config_checks", "metrics_log", "progress", "report", "run_dir", "sharding",
              "trainer", "data"},
    "trainer": {"checkpointing", "config_checks", "inference", "metrics_log", "model",
                "progress", "run_dir", "sharding", "state", "steps", "data"},
    "config_checks": {"evaluation", "objective", "run_dir"},
    # Readers of a finished run: run files, never the trainer.
    "report": {"evaluation", "fileio", "inference", "mplg", "objective", "run_dir", "data"},
    "seed_spread": {"report"},
    "spotting": {"checkpointing", "fileio", "inference", "model", "run_dir", "state", "data"},
    # Steps, state and the method.
    "steps": {"dfcl", "objective", "sharding", "state"},
    "state": {"dfcl"},
    "objective": {"dfcl", "losses", "mplg"},
    "model": {"data"},
    "losses": set(),
    "mplg": set(),
    "dfcl": set(),
    # Inference and scoring.
    "inference": {"proposals", "data"},
    "proposals": {"intervals", "data"},
    "evaluation": {"protocols", "data"},
    "protocols": {"intervals", "data"},
    "prediction_files": {"evaluation", "fileio", "data"},
    "intervals": set(),
    # Run files, logs, checkpoints, meshes.
    "run_dir": {"fileio", "data"},
    "output_paths": {"run_dir"},
    "metrics_log": {"fileio", "run_dir"},
    "checkpointing": {"run_dir"},
    "sharding": set(),
    "fileio": set(),
    # What the terminal shows (progress lines, phases) and the compile count / cache.
    "progress": {"compile_cache"},
    "compile_cache": set(),
    "host_memory": set(),
    # Sub-packages.
    "data": {"data", "fileio"},
    "extraction": {"extraction", "fileio", "data"},
}
NOBODY_IMPORTS = ("train", "trainer")


def _modules():
  """``{(layer, file path)}`` of every module of the package except ``__init__``."""
  out = []
  for root, _, files in os.walk(PACKAGE):
    for name in sorted(files):
      if not name.endswith(".py") or name == "__init__.py":
        continue
      rel = os.path.relpath(os.path.join(root, name), PACKAGE)
      parts = rel[:-3].split(os.sep)
      out.append((parts[0], os.path.join(root, name)))
  return out


def _layer(module: str):
  """``pwes_jax.x[.y]`` -> ``x``; anything else -> None."""
  parts = module.split(".")
  return parts[1] if parts[0] == "pwes_jax" and len(parts) > 1 else None


def _imports(node):
  """The pwes_jax layers an Import/ImportFrom node brings in."""
  if isinstance(node, ast.Import):
    return {_layer(a.name) for a in node.names} - {None}
  if node.module == "pwes_jax":  # from pwes_jax import x
    return {a.name for a in node.names}
  if node.module and node.level == 0:
    return {_layer(node.module)} - {None}
  return set()


def _parse(path):
  with open(path) as f:
    source = f.read()
  return ast.parse(source), source.splitlines()


def _all_imports(tree):
  """Every pwes_jax layer the module imports anywhere (module level or inside functions)."""
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      out.update(_imports(node))
  return out


def _graph():
  graph = {}
  for layer, path in _modules():
    tree, _ = _parse(path)
    graph.setdefault(layer, set()).update(_all_imports(tree))
  return graph


def test_every_module_is_in_the_table():
  layers = {layer for layer, _ in _modules()}
  missing = sorted(layers - set(ALLOWED))
  assert not missing, f"add {missing} to ALLOWED with the modules they may import"


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_imports_follow_the_table(layer):
  got = _graph().get(layer, set())
  extra = sorted(got - ALLOWED[layer])
  assert not extra, f"pwes_jax.{layer} imports {extra}, which the layering table forbids"


def _find_circle(graph):
  """One import circle of ``graph`` as a list of layers, or None (depth-first search)."""
  graph = {k: set(v) - {k} for k, v in graph.items()}
  state = {}

  def visit(node, path):
    state[node] = "open"
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == "open":
        return path + [node, nxt]
      if nxt not in state:
        found = visit(nxt, path + [node])
        if found:
          return found
    state[node] = "done"
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node, [])
      if found:
        return found
  return None


def test_the_import_graph_has_no_circle():
  circle = _find_circle(_graph())
  assert circle is None, "import circle: " + " -> ".join(circle)


def test_nothing_imports_the_trainer_back():
  for layer, deps in _graph().items():
    bad = sorted(set(NOBODY_IMPORTS) & deps) if layer != "train" else []
    assert not bad, f"pwes_jax.{layer} imports {bad}"


def _explained(lines, lineno):
  """An import at ``lineno`` (1-based) is explained by a comment on its line (beyond a pylint
  directive) or by a comment line right above it."""
  line = lines[lineno - 1]
  if "#" in line:
    comment = line.split("#", 1)[1]
    rest = comment.split("pylint:", 1)
    if rest[0].strip() or (len(rest) > 1 and len(rest[1].split()) > 1):
      return True
  above = lines[lineno - 2].strip() if lineno >= 2 else ""
  return above.startswith("#")


def test_no_unexplained_import_inside_a_function():
  hidden = []
  for _, path in _modules():
    tree, lines = _parse(path)
    for fn in ast.walk(tree):
      if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
        continue
      for node in ast.walk(fn):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and not _explained(lines, node.lineno):
          hidden.append(f"{os.path.relpath(path, PACKAGE)}:{node.lineno}: "
                        f"{lines[node.lineno - 1].strip()}")
  assert not hidden, "imports inside functions without a comment saying why:\n" + "\n".join(
      hidden)


def test_the_checker_sees_a_hidden_import_and_a_circle():
  """The checks above can fail: a hand-made module with both faults is caught."""
  src = "def f():\n  from pwes_jax import train  # pylint: disable=g-import-not-at-top\n"
  tree = ast.parse(src)
  node = next(n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom))
  assert not _explained(src.splitlines(), node.lineno)
  assert _imports(node) == {"train"}
  explained = "def f():\n  # optional dependency\n  import matplotlib\n"
  node = next(n for n in ast.walk(ast.parse(explained)) if isinstance(n, ast.Import))
  assert _explained(explained.splitlines(), node.lineno)
  assert _find_circle({"report": {"train"}, "train": {"trainer"}, "trainer": {"report"}}) == [
      "report", "train", "trainer", "report"]
  assert _find_circle({"train": {"trainer"}, "trainer": {"state"}}) is None
