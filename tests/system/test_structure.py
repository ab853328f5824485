"""The package's architecture as tests: its parts import each other without cycles, and `mvit_jax.models` stands
alone (no trainer, data, inference or TensorFlow code behind it)."""
import pytest
import ast
import os
import subprocess
import sys

from tests import testlib

PACKAGE = os.path.join(testlib.REPO, 'mvit_jax')
PARTS = ('system', 'models', 'data', 'train', 'inference', 'tools')


def _modules() -> dict[str, str]:
  """Dotted module name -> file path, for every module of mvit_jax."""
  found = {}
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(folder, name)
        dotted = os.path.relpath(path, testlib.REPO)[:-3].replace(os.sep, '.')
        found[dotted.removesuffix('.__init__')] = path
  return found


def _imports(path: str, modules, top_level_only: bool) -> set[str]:
  """The mvit_jax modules `path` imports (anywhere in the file, or only in its top-level statements)."""
  tree = ast.parse(open(path).read())
  nodes = tree.body if top_level_only else list(ast.walk(tree))
  out = set()
  for node in nodes:
    if isinstance(node, ast.Import):
      out |= {a.name for a in node.names if a.name in modules}
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('mvit_jax'):
      for alias in node.names:
        submodule = f'{node.module}.{alias.name}'
        out.add(submodule if submodule in modules else node.module)
  return out


def _part(module: str) -> str:
  """'models' for mvit_jax.models.layers; 'entry' for the command entry points at the top (mvit_jax.main, ...)."""
  name = module.split('.')
  return name[1] if len(name) > 2 or (len(name) == 2 and name[1] in PARTS) else 'entry'


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One cycle of the directed graph as a path [a, b, ..., a], or None."""
  state, stack = {}, []

  def visit(node):
    state[node] = 'open'
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 'open':
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state and (found := visit(nxt)):
        return found
    stack.pop()
    state[node] = 'done'
    return None

  for node in sorted(graph):
    if node not in state and (found := visit(node)):
      return found
  return None


def test_the_parts_import_each_other_without_a_cycle():
  """Every import counts, also one inside a function: a lazy import is still a dependency."""
  modules = _modules()
  graph: dict[str, set[str]] = {}
  for module, path in modules.items():
    source = _part(module)
    for target in map(_part, _imports(path, modules, top_level_only=False)):
      if target != source and source != 'entry' and target != 'entry':
        graph.setdefault(source, set()).add(target)
  assert set(graph) <= set(PARTS)
  assert _cycle(graph) is None, f'import cycle between parts: {" -> ".join(_cycle(graph))}'
  assert 'models' not in graph or graph['models'] <= {'system'}, graph['models']


def test_modules_import_each_other_without_a_cycle():
  modules = _modules()
  graph = {m: _imports(path, modules, top_level_only=True) - {m} for m, path in modules.items()}
  # A package's __init__ importing its own modules is how packages work, not a cycle.
  graph = {m: {t for t in targets if not (m.startswith(t + '.'))} for m, targets in graph.items()}
  assert _cycle(graph) is None, f'import cycle: {" -> ".join(_cycle(graph))}'


def test_cycle_finder_finds_a_cycle():
  assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
  assert _cycle({'a': {'b'}, 'b': {'c'}}) is None


@pytest.mark.slow
def test_importing_models_loads_no_trainer_data_or_tensorflow():
  script = ('import sys, mvit_jax.models\n'
            'print(" ".join(sorted(m for m in sys.modules if m.split(".")[0] in ("mvit_jax", "tensorflow", "grain", '
            '"av", "torch", "optax", "clu", "tensorflow_datasets", "cv2"))))\n')
  result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, check=True,
                          cwd=testlib.REPO)
  loaded = result.stdout.split()
  assert 'mvit_jax.models.mvit' in loaded
  outside = [m for m in loaded if not m.startswith(('mvit_jax.models', 'mvit_jax.system')) and m != 'mvit_jax']
  assert not outside, outside
