"""README.md and docs/*.md name only things that exist.

For every page (the README and each docs/*.md):

- every relative link points to a file of the repository, and an `#anchor` on a Markdown
  page to one of its headings (GitHub's slugs);
- every `python -m X` in code (fenced blocks and inline spans) names a module: a file of this
  repository (`X/Y.py`, or a package with `__main__.py`; checked on disk, nothing imported),
  or an installed module (`importlib.util.find_spec`);
- every repository path in code (`genai/serve/api.py`, `configs/lm/pydoc_char.py:runlocal`,
  `genai/parallel/sharding.DEFAULT_RULES`) exists, and every dotted `genai.x` / `experiments.x`
  name starts with a package or module that exists.

And for the README: it stays a first read (under 300 lines); its test commands are the ones
`.ci/run` runs; its map of `genai/` has the layers of docs/architecture.md. docs/README.md
links every page of docs/. Nothing here imports the library: it runs in well under a second.
"""
import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / 'README.md'
PAGES = [README] + sorted((REPO / 'docs').glob('*.md'))
IDS = [str(p.relative_to(REPO)) for p in PAGES]
README_MAX_LINES = 300
TOP = ('genai', 'experiments', 'configs', 'tests', 'benchmarks', 'colab', 'docs', '.ci')
PLACEHOLDER = re.compile(r'[<>*{}$\[\]|]')  # `configs/<family>/*.py` names no one file


def split_page(text: str) -> tuple[list[str], str]:
  """(the fenced code blocks, the prose with the blocks blanked out)."""
  blocks, prose, current = [], [], None
  for line in text.split('\n'):
    if line.lstrip().startswith('```'):
      if current is None:
        current = []
      else:
        blocks.append('\n'.join(current))
        current = None
      prose.append('')
    elif current is not None:
      current.append(line)
      prose.append('')
    else:
      prose.append(line)
  return blocks, '\n'.join(prose)


INLINE = re.compile(r'(`+)(.+?)\1', re.S)


def inline_code(prose: str) -> list[str]:
  return [m.group(2).strip() for m in INLINE.finditer(prose)]


def code_of(page: Path) -> list[str]:
  blocks, prose = split_page(page.read_text())
  return blocks + inline_code(prose)


def slug(heading: str) -> str:
  """GitHub's anchor for a heading: link text kept, lower case, punctuation dropped."""
  text = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', heading.strip()).lower()
  return re.sub(r'[^\w\- ]', '', text).replace(' ', '-')


def anchors(page: Path) -> set[str]:
  _, prose = split_page(page.read_text())
  seen: dict[str, int] = {}
  out = set()
  for line in prose.split('\n'):
    m = re.match(r'#{1,6}\s+(.*?)\s*#*\s*$', line)
    if m:
      base = slug(m.group(1))
      n = seen.get(base, 0)
      seen[base] = n + 1
      out.add(base if n == 0 else f'{base}-{n}')
  return out


LINK = re.compile(r'!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')


def links(page: Path) -> list[str]:
  _, prose = split_page(page.read_text())
  prose = INLINE.sub('', prose)
  return [m.group(1) for m in LINK.finditer(prose)]


@pytest.mark.parametrize('page', PAGES, ids=IDS)
def test_relative_links_point_to_files_and_headings(page):
  bad = []
  for target in links(page):
    if re.match(r'[a-z][a-z0-9+.-]*:', target):  # http:, https:, mailto:
      continue
    path, _, anchor = target.partition('#')
    dest = (page.parent / path).resolve() if path else page
    if not dest.exists():
      bad.append(f'{target}: no file {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest}')
    elif anchor and dest.suffix == '.md' and anchor not in anchors(dest):
      bad.append(f'{target}: no heading #{anchor} in {dest.relative_to(REPO)}')
  assert not bad, f'{page.relative_to(REPO)} has broken links:\n  ' + '\n  '.join(bad)


def module_exists(name: str) -> bool:
  parts = name.split('.')
  if (REPO / parts[0]).is_dir() or (REPO / f'{parts[0]}.py').is_file():
    path = REPO.joinpath(*parts)
    return path.with_suffix('.py').is_file() or (path / '__main__.py').is_file()
  try:
    return importlib.util.find_spec(name) is not None
  except (ImportError, ValueError):
    return False


PYTHON_M = re.compile(r'\bpython3?\s+-m\s+([A-Za-z_][\w.]*)')


@pytest.mark.parametrize('page', PAGES, ids=IDS)
def test_python_m_modules_exist(page):
  names = sorted({m.group(1).rstrip('.') for code in code_of(page)
                  for m in PYTHON_M.finditer(code)})
  missing = [n for n in names if not module_exists(n)]
  assert not missing, (f'{page.relative_to(REPO)} runs modules that do not exist: '
                       f'{", ".join("python -m " + n for n in missing)}')


def defines(module: Path, name: str) -> bool:
  """Whether the module file (or package `__init__.py`) mentions `name` as a word: a cheap
  stand-in for "has that attribute" that imports nothing."""
  path = module / '__init__.py' if module.is_dir() else module
  return path.is_file() and re.search(rf'\b{re.escape(name)}\b', path.read_text()) is not None


def path_exists(text: str) -> bool:
  """A repo path, a `path.py:config_arg`, or a `module/path.attribute`."""
  text = text.split(':', 1)[0].rstrip('.,;')
  if (REPO / text).exists():
    return True
  base, dot, attr = text.rpartition('.')
  return bool(dot) and '/' in base and defines(REPO / f'{base}.py', attr.split('(')[0])


PATH_IN_BLOCK = re.compile(r'(?<![\w/.$-])((?:%s)/[\w./-]*)' % '|'.join(map(re.escape, TOP)))
DOTTED = re.compile(r'(?<![\w./-])((?:genai|experiments)(?:\.[A-Za-z_]\w*)+)')


def repo_paths(page: Path) -> set[str]:
  blocks, prose = split_page(page.read_text())
  found = {m.group(1) for block in blocks for m in PATH_IN_BLOCK.finditer(block)}
  for span in inline_code(prose):
    for word in span.split():
      word = word.strip('(),;')
      if word.startswith(tuple(t + '/' for t in TOP)) and not PLACEHOLDER.search(word):
        found.add(word)
  return found


@pytest.mark.parametrize('page', PAGES, ids=IDS)
def test_repo_paths_exist(page):
  missing = sorted(p for p in repo_paths(page) if not path_exists(p))
  assert not missing, (f'{page.relative_to(REPO)} names paths that do not exist: '
                       f'{", ".join(missing)}')


def dotted_name_exists(name: str) -> bool:
  """`genai.x.y.attr`: every part is a package or module up to the first that is not, which
  the module before it defines (`genai.sample.decode.generate`, `genai.families.get`)."""
  parts = name.split('.')
  path = REPO / parts[0]
  for part in parts[1:]:
    if (path / part).is_dir():
      path = path / part
    elif (path / f'{part}.py').is_file():
      path = path / f'{part}.py'
    else:
      return path != REPO / parts[0] and defines(path, part)
  return True


@pytest.mark.parametrize('page', PAGES, ids=IDS)
def test_dotted_module_names_exist(page):
  names = {m.group(1) for code in code_of(page) for m in DOTTED.finditer(code)}
  missing = sorted(n for n in names if not dotted_name_exists(n))
  assert not missing, (f'{page.relative_to(REPO)} names modules that do not exist: '
                       f'{", ".join(missing)}')


def test_readme_is_a_first_read():
  lines = README.read_text().count('\n')
  assert lines < README_MAX_LINES, (
      f'README.md has {lines} lines (limit {README_MAX_LINES}); move reference material '
      'into a docs/ page and link it.')


def test_docs_index_links_every_page():
  index = REPO / 'docs' / 'README.md'
  linked = {(index.parent / t.partition('#')[0]).resolve() for t in links(index)}
  unlisted = [p.name for p in PAGES[1:] if p != index and p.resolve() not in linked]
  assert not unlisted, f'docs/README.md does not link {", ".join(unlisted)}'


def shell_commands(text: str) -> list[str]:
  """The commands of a shell text: comments dropped, continuation lines joined, split on
  `&&` and newlines, whitespace collapsed; pip's -q dropped (it only changes the output)."""
  text = re.sub(r'\\\n', ' ', text)
  out = []
  for line in text.split('\n'):
    line = line.split(' #', 1)[0] if not line.lstrip().startswith('#') else ''
    for cmd in line.split('&&'):
      cmd = ' '.join(cmd.split())
      if cmd.startswith('pip install'):
        cmd = cmd.replace(' -q ', ' ')
      if cmd:
        out.append(cmd)
  return out


def test_readme_test_commands_are_what_ci_runs():
  blocks, _ = split_page(README.read_text())
  readme = [c for b in blocks if 'python -m pytest' in b for c in shell_commands(b)]
  ci = shell_commands((REPO / '.ci' / 'run').read_text())
  assert readme, "README.md has no code block with the test command (python -m pytest)"
  not_in_ci = [c for c in readme if c not in ci]
  assert not not_in_ci, f'README test commands that .ci/run does not run: {not_in_ci}'
  pytest_in_ci = [c for c in ci if 'pytest' in c and not c.startswith('pip')]
  not_in_readme = [c for c in pytest_in_ci if c not in readme]
  assert not not_in_readme, f'.ci/run runs tests the README does not show: {not_in_readme}'


def architecture_layers() -> list[list[str]]:
  text = (REPO / 'docs' / 'architecture.md').read_text()
  block = re.search(r'```layers\n(.*?)```', text, re.S)
  assert block, 'docs/architecture.md has no ```layers block'
  return [line.split() for line in block.group(1).strip().split('\n')]


def test_readme_map_has_the_layers_of_architecture():
  """The README's map of genai/ lists the layers top down: one line per layer, the highest
  first, as docs/architecture.md's ```layers block lists them bottom up."""
  blocks, _ = split_page(README.read_text())
  house = [b for b in blocks if b.startswith('genai/')]
  assert house, "README.md lost its map of the house (a code block starting 'genai/')"
  packages = {p.name for p in (REPO / 'genai').iterdir() if (p / '__init__.py').exists()}
  rows = []
  for line in house[0].split('\n')[1:]:
    if not line.startswith('  ') or line.startswith(' ' * 5):
      continue
    names = re.split(r'\s{3,}', line.strip())[0].split()
    if names and set(names) <= packages:
      rows.append(names)
  assert [sorted(r) for r in rows] == [sorted(l) for l in reversed(architecture_layers())], (
      'README.md map of genai/ and the ```layers block of docs/architecture.md differ')
