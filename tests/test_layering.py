"""The package's layers point one way: every module imports only what the table allows, the
import graph has no circle, and no import hides inside a function without a comment saying why.

Read from the source with ``ast`` (nothing is imported). The rooms are the sub-packages
(``method``, ``training``, ``evaluation``, ``workdir``, ``data``, ``extraction``) and the few
front-door modules left flat in ``pwes_jax/``; a new room must be added to ``ALLOWED`` with what it
may import. Inside a sub-package the modules may import each other, but never in a circle.
"""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pwes_jax")

# Each room of the house (a sub-package, or a front-door module of ``pwes_jax/``) -> the rooms it
# may import. Read top-down: launchers call the front doors; the front doors compose training,
# evaluation and the run directory; the method and the data are the ground floors.
ALLOWED = {
    # The front doors ``launch/`` calls.
    "train": {"training", "report", "workdir", "data"},
    "sweep": {"train", "training", "report", "workdir"},
    "report": {"evaluation", "method", "workdir", "data"},
    "seed_spread": {"report", "workdir"},
    "spot": {"evaluation", "method", "workdir", "data"},
    "evaluate": {"evaluation", "workdir", "data"},
    # Process set-up (logging, compilation cache, allocator): imports nothing of ours.
    "runtime": set(),
    # The layers.
    "training": {"training", "method", "evaluation", "workdir", "data", "runtime"},
    "evaluation": {"evaluation", "workdir", "data"},
    "method": {"method", "data"},
    "workdir": {"workdir", "data"},
    "extraction": {"extraction", "workdir", "data"},
    "data": {"data"},
}
# Front doors no layer imports back (only another front door may: sweep runs train).
FRONT_DOORS = ("train", "sweep", "report", "seed_spread", "spot", "evaluate")
MAX_FLAT_MODULES = 8


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


def test_no_layer_imports_a_front_door():
  for room, deps in _graph().items():
    if room in FRONT_DOORS:
      continue
    bad = sorted(set(FRONT_DOORS) & deps)
    assert not bad, f"pwes_jax.{room} imports the front door(s) {bad}"


def test_at_most_a_few_modules_are_left_flat():
  flat = sorted(name for name in os.listdir(PACKAGE)
                if name.endswith(".py") and name != "__init__.py")
  assert len(flat) <= MAX_FLAT_MODULES, f"{len(flat)} flat modules: {flat}"


def _module_graph():
  """``{dotted module: {dotted pwes_jax modules it imports}}`` over the whole package."""
  graph = {}
  for _, path in _modules():
    rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
    tree, _ = _parse(path)
    deps = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        deps |= {a.name for a in node.names if a.name.startswith("pwes_jax.")}
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and (
          node.module == "pwes_jax" or node.module.startswith("pwes_jax.")):
        deps |= {f"{node.module}.{a.name}" for a in node.names}
    graph[rel] = {d for d in deps if d != rel}
  known = set(graph)
  return {m: {d for d in deps if d in known} for m, deps in graph.items()}


def test_no_circle_between_modules_inside_a_room():
  circle = _find_circle(_module_graph())
  assert circle is None, "module import circle: " + " -> ".join(circle)


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
