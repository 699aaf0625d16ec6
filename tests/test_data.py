"""The capsjax.data package as a whole: its import graph and its exports."""
import ast
import os
import subprocess
import sys

from conftest import ROOT
from capsjax import data

PACKAGE = os.path.join(ROOT, 'capsjax')
# What a data module may import from capsjax outside capsjax.data.
DATA_MAY_IMPORT = {'capsjax.checks', 'capsjax.errors'}


def module_name(path):
  relative = os.path.relpath(path, ROOT)[:-len('.py')].split(os.sep)
  if relative[-1] == '__init__':
    relative = relative[:-1]
  return '.'.join(relative)


def capsjax_modules():
  """`{module name: path}` of every module of the capsjax package."""
  found = {}
  for directory, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(directory, name)
        found[module_name(path)] = path
  return found


def imports(path, modules, top_level_only):
  """The capsjax modules `path` imports (`from a import b` counts as a.b
  when that is a module, else as a)."""
  tree = ast.parse(open(path).read())
  nodes = tree.body if top_level_only else list(ast.walk(tree))
  named = set()
  for node in nodes:
    if isinstance(node, ast.Import):
      named.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      for alias in node.names:
        full = f'{node.module}.{alias.name}'
        named.add(full if full in modules else node.module)
  return {name for name in named if name in modules}


def local_imports(path):
  """Every module imported inside a function of `path`."""
  found = set()
  for function in ast.walk(ast.parse(open(path).read())):
    if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
      for node in ast.walk(function):
        if isinstance(node, ast.Import):
          found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
          found.add(node.module)
  return found


def find_cycle(graph):
  """A list of modules forming a cycle in `graph`, or None."""
  state = {}

  def visit(node, path):
    state[node] = 'open'
    for target in sorted(graph.get(node, ())):
      if state.get(target) == 'open':
        return path[path.index(target):] + [target]
      if target not in state:
        cycle = visit(target, path + [target])
        if cycle:
          return cycle
    state[node] = 'done'
    return None

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node, [node])
      if cycle:
        return cycle
  return None


def test_find_cycle_finds_one():
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c',
                                                              'a']
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': set()}) is None


def test_data_modules_import_no_cycle_and_nothing_upward():
  modules = capsjax_modules()
  data_modules = {m: p for m, p in modules.items()
                  if m.startswith('capsjax.data')}
  assert {'capsjax.data.dataset', 'capsjax.data.augment',
          'capsjax.data.batching', 'capsjax.data.sources',
          'capsjax.data.sources.tfds'} <= set(data_modules)
  # Every import, including any inside a function: no cycle can hide there.
  graph = {m: imports(p, modules, False) for m, p in data_modules.items()}
  assert find_cycle(graph) is None, find_cycle(graph)
  for name, targets in graph.items():
    upward = {t for t in targets
              if not t.startswith('capsjax.data') and t != 'capsjax'}
    assert upward <= DATA_MAY_IMPORT, (name, upward)
    # Only heavy optional dependencies are imported late, never capsjax.
    late = {m for m in local_imports(data_modules[name])
            if m.split('.')[0] == 'capsjax'}
    assert not late, (name, late)


def test_capsjax_top_level_imports_have_no_cycle():
  modules = capsjax_modules()
  graph = {m: imports(p, modules, True) for m, p in modules.items()}
  assert find_cycle(graph) is None, find_cycle(graph)


def test_importing_data_loads_neither_tensorflow_nor_pillow():
  code = ('import sys; import capsjax.data; '
          'print(sorted(m for m in sys.modules '
          'if m.split(".")[0] in ("tensorflow", "tensorflow_datasets", '
          '"PIL")))')
  result = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                          env={**os.environ, 'PYTHONPATH': ROOT},
                          capture_output=True, text=True, check=True)
  assert result.stdout.strip() == '[]', result.stdout


def test_exports():
  assert set(data.SOURCES) == {'tfds', 'idx', 'embedded', 'folder'}
  for name in data.__all__:
    assert hasattr(data, name), name
