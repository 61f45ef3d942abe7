"""Where the notebooks' "Open in Colab" badges and install cells point: one setting, LOCATION.

  python colab/set_location.py github.com/you/genai   # set LOCATION here, rewrite the notebooks
  python colab/set_location.py                        # rewrite the notebooks from LOCATION
  python colab/set_location.py --check                # exit 1 if a notebook disagrees (a test)

genai has no public repository yet, so LOCATION is empty: the notebooks then say so instead
of a badge, and on Colab their install cell asks for the repository's git URL (GENAI_REPO,
in the cell or the environment). Once a copy is published, set LOCATION to it (GitHub:
'github.com/OWNER/NAME') and commit the rewritten notebooks: each badge opens that copy's
notebook in Colab, and each install cell clones it and installs it with
requirements/keep_jax.py, which keeps the runtime's JAX (docs/install.md#colab).
"""
from __future__ import annotations

import json
import os
import sys

LOCATION = ''  # e.g. 'github.com/OWNER/genai'; '' while the project has no public remote
BRANCH = 'main'

HERE = os.path.dirname(os.path.abspath(__file__))
# What each notebook installs on Colab besides the core (setup.py's extras).
EXTRAS = {'01_quickstart.ipynb': 'plots', '02_image_models.ipynb': 'plots',
          '03_transfer_learning.ipynb': 'plots', '04_compression.ipynb': 'plots',
          '05_serving.ipynb': 'serve,feedback'}
BADGE = '[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]'
UNPUBLISHED = ('*Open in Colab:* this copy of genai has no published location yet; set it in '
               '`colab/set_location.py` ([docs/install.md](../docs/install.md#colab)).')

INSTALL = '''\
# Install. On Colab: clone genai and install it with the runtime's JAX kept (its TPU/GPU
# build stays; requirements/keep_jax.py). GENAI_REPO is written by colab/set_location.py
# (docs/install.md#colab); the environment variable GENAI_REPO overrides it.
# Locally: run from a checkout where `pip install -e .` was done; this cell only moves to
# the repository root (experiments/ and configs/ live there).
GENAI_REPO = {repo!r}
GENAI_EXTRAS = {extras!r}
import os, subprocess, sys
if 'google.colab' in sys.modules and not os.path.exists('/content/genai'):
    repo = os.environ.get('GENAI_REPO') or GENAI_REPO
    if not repo:
        raise SystemExit('Set GENAI_REPO in this cell to the git URL of your copy of genai '
                         '(this copy has no published location; docs/install.md#colab).')
    subprocess.run(['git', 'clone', '-q', repo, '/content/genai'], check=True)
    subprocess.run([sys.executable, '/content/genai/requirements/keep_jax.py', '-q', '-e',
                    f'/content/genai[{{GENAI_EXTRAS}}]'], check=True)
    os.chdir('/content/genai')
elif os.path.basename(os.getcwd()) == 'colab':
    os.chdir('..')
sys.path.insert(0, os.getcwd())
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
import jax
print('working in', os.getcwd())
print(f'JAX {{jax.__version__}} on {{jax.default_backend()}}:', jax.devices())'''


def repo_url(location: str) -> str:
  return f'https://{location}.git' if location else ''


def badge_line(location: str, name: str) -> str:
  if not location:
    return UNPUBLISHED
  owner_repo = location.split('github.com/', 1)[-1]
  return (f'{BADGE}(https://colab.research.google.com/github/{owner_repo}/blob/{BRANCH}/'
          f'colab/{name})')


def _lines(text: str) -> list[str]:
  """A notebook cell's `source` list for `text`."""
  parts = text.split('\n')
  return [p + '\n' for p in parts[:-1]] + [parts[-1]]


def rewrite(nb: dict, name: str, location: str) -> dict:
  """The notebook with its badge line (first cell) and install cell (first code cell) set."""
  first = ''.join(nb['cells'][0]['source']).split('\n')
  keep = [l for l in first if not (l.startswith(BADGE) or l.startswith('*Open in Colab:*')
                                   or l.startswith('(Replace OWNER'))]
  title = keep[0]
  rest = '\n'.join(keep[1:]).strip('\n')
  nb['cells'][0]['source'] = _lines('\n\n'.join(x for x in (title, badge_line(location, name),
                                                            rest) if x))
  code = next(c for c in nb['cells'] if c['cell_type'] == 'code')
  code['source'] = _lines(INSTALL.format(repo=repo_url(location), extras=EXTRAS[name]))
  return nb


def notebooks() -> list[str]:
  return sorted(n for n in os.listdir(HERE) if n.endswith('.ipynb'))


def _dump(nb: dict) -> str:
  return json.dumps(nb, indent=1, ensure_ascii=False) + '\n'


def sync(location: str, check: bool = False) -> list[str]:
  """Rewrites every notebook for `location`; with check, only lists those that differ."""
  differ = []
  for name in notebooks():
    path = os.path.join(HERE, name)
    with open(path) as f:
      text = f.read()
    new = _dump(rewrite(json.loads(text), name, location))
    if new != text:
      differ.append(name)
      if not check:
        with open(path, 'w') as f:
          f.write(new)
  return differ


def _set_location(location: str) -> None:
  path = os.path.abspath(__file__)
  with open(path) as f:
    lines = f.read().split('\n')
  i = next(i for i, l in enumerate(lines) if l.startswith('LOCATION = '))
  lines[i] = f'LOCATION = {location!r}' + lines[i][lines[i].index('  #'):]
  with open(path, 'w') as f:
    f.write('\n'.join(lines))


def main(argv: list[str]) -> int:
  if argv == ['--check']:
    differ = sync(LOCATION, check=True)
    if differ:
      print(f'not in step with colab/set_location.py: {", ".join(differ)} '
            '(python colab/set_location.py)')
    return 1 if differ else 0
  location = LOCATION
  if argv:
    location = argv[0].removeprefix('https://').removesuffix('.git').rstrip('/')
    _set_location(location)
  changed = sync(location)
  print(f'location {location or "(none)"}; rewrote {", ".join(changed) or "nothing"}')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
