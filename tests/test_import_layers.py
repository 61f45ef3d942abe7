"""The import graph of genai/ is a DAG with the layers of docs/architecture.md.

Reads every import statement of every module (top-level and inside functions alike) with
`ast`, without importing anything: the library never imports experiments/, configs/ or
benchmarks/; a package imports only from itself or from a lower layer; and the modules
inside one package import each other without a cycle.
"""
import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GENAI = REPO / 'genai'
OUTSIDE = ('experiments', 'configs', 'benchmarks', 'tests')


def _layers() -> dict[str, int]:
  text = (REPO / 'docs/architecture.md').read_text()
  block = re.search(r'```layers\n(.*?)```', text, re.S)
  assert block, 'docs/architecture.md lost its ```layers block'
  return {pkg: i for i, line in enumerate(block.group(1).split('\n')) for pkg in line.split()}


def _module_name(path: Path) -> str:
  parts = path.relative_to(REPO).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
  """(line, absolute module name) of every import in `path`, relative ones resolved."""
  mod = _module_name(path)
  package = mod if path.name == '__init__.py' else mod.rpartition('.')[0]
  out = []
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      out += [(node.lineno, a.name) for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        anchor = package.split('.')[:len(package.split('.')) - node.level + 1]
        base = '.'.join(anchor + ([base] if base else []))
      # `from genai.x import y` may name a module y: count both.
      out += [(node.lineno, base)] + [(node.lineno, f'{base}.{a.name}') for a in node.names]
  return out


MODULES = sorted(GENAI.rglob('*.py'))
KNOWN = {_module_name(p) for p in MODULES}
# Modules directly in genai/ (not packages), e.g. genai/errors.py: below every layer. Any
# package may import them; they import nothing from genai.
TOP_LEVEL = {p.stem for p in GENAI.glob('*.py') if p.name != '__init__.py'}


def _package(mod: str) -> str | None:
  """'x' for genai.x and genai.x.*; None for the top-level genai/__init__.py."""
  parts = mod.split('.')
  return parts[1] if parts[0] == 'genai' and len(parts) > 1 else None


def test_the_layers_block_names_every_package():
  packages = {p.name for p in GENAI.iterdir() if (p / '__init__.py').exists()}
  assert set(_layers()) == packages


def test_the_library_never_imports_experiments_configs_or_benchmarks():
  bad = [f'{p.relative_to(REPO)}:{line} imports {name}' for p in MODULES
         for line, name in _imports(p) if name.split('.')[0] in OUTSIDE]
  bad += [f'{p.relative_to(REPO)} calls import_module' for p in MODULES
          if re.search(r"import_module\([^)]*(experiments|configs|benchmarks)", p.read_text())]
  assert not bad, '\n'.join(bad)


def test_every_import_goes_down_the_layers():
  layers = _layers()
  bad = []
  for p in MODULES:
    src = _package(_module_name(p))
    for line, name in _imports(p):
      dst = _package(name) if name.startswith('genai.') else None
      if src is None or src in TOP_LEVEL or dst is None or dst == src or dst in TOP_LEVEL:
        continue
      if layers[dst] >= layers[src]:
        bad.append(f'{p.relative_to(REPO)}:{line}: genai.{src} (layer {layers[src]}) imports '
                   f'{name} (layer {layers[dst]})')
  assert not bad, 'imports that go up or sideways:\n' + '\n'.join(bad)


def test_top_level_modules_import_nothing_from_genai():
  bad = [f'{p.relative_to(REPO)}:{line} imports {name}' for p in MODULES
         if p.parent == GENAI and p.stem in TOP_LEVEL
         for line, name in _imports(p) if name.split('.')[0] == 'genai']
  assert not bad, '\n'.join(bad)


def test_modules_of_one_package_form_no_cycle():
  graph = {_module_name(p): {n for _, n in _imports(p) if n in KNOWN} for p in MODULES}
  state: dict[str, int] = {}

  def visit(mod, stack):
    state[mod] = 1
    for dep in sorted(graph.get(mod, ())):
      if dep == mod or dep in mod.split('.') or mod.startswith(dep + '.'):
        continue  # a module and its own package's __init__
      if state.get(dep) == 1:
        pytest.fail('import cycle: ' + ' -> '.join(stack + [mod, dep]))
      if dep not in state:
        visit(dep, stack + [mod])
    state[mod] = 2

  for mod in sorted(graph):
    if mod not in state:
      visit(mod, [])
