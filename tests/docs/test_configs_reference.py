"""docs/configs.md lists every config field with its current default, and every recipe.

The page has one `## ` section per shared file (`configs/common.py`,
`configs/image_data.py`) and per family base config. Each field appears in a table whose
header is `| field | default | meaning |`, as a row `` | `key` | `default` | ... | ``, with
the default written as a Python literal. The rules checked here:

- every field of the shared blocks (optimizer, train, parallel; the image data block and
  the eval.fid_* fields) has a row in its shared section, with the shared default;
- every field of a family's base config has a row in the family's section, with the
  family's default, unless it is a shared field whose default the family keeps (then the
  shared section documents it). The GAN's `optimizer_g.*` / `optimizer_d.*` count as
  `optimizer.*`;
- every row names a field that exists, with the default the code has now;
- every recipe file of a family is in its section's recipe table, with its config args.
"""
import ast
import glob
import os
import re

import ml_collections
import pytest

from conftest import REPO, load_config

from configs import common
from configs import image_data
import configs.classifier as classifier_base
from configs.diffusion import base as diffusion_base
from configs.diffusion import dit_digits
from configs.gan import base as gan_base
from configs.image_gpt import base as image_gpt_base
from configs.lm import base as lm_base
import configs.text_classifier as text_classifier_base
from configs.vae import base as vae_base

DOC = REPO / 'docs' / 'configs.md'
FIX = 'Update docs/configs.md'
FIELD_HEADER = ('field', 'default', 'meaning')


def flatten(d: ml_collections.ConfigDict, prefix: str = '') -> dict:
  """{'a.b.c': leaf value} of a ConfigDict (FieldReferences resolved)."""
  out = {}
  for key, value in d.items():
    if isinstance(value, ml_collections.ConfigDict):
      out.update(flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def _prefixed(block: str, d: ml_collections.ConfigDict) -> dict:
  return {f'{block}.{k}': v for k, v in flatten(d).items()}


COMMON = {**_prefixed('optimizer', common.optimizer_config()),
          **_prefixed('train', common.train_config()),
          **_prefixed('parallel', common.parallel_config())}
IMAGE = {**_prefixed('data', image_data.get_image_data_config()),
         **_prefixed('eval', image_data.add_fid_eval_fields(ml_collections.ConfigDict()))}
ALIASES = {'optimizer_g': 'optimizer', 'optimizer_d': 'optimizer'}  # GAN: two optimizers


def _diffusion_fields() -> dict:
  """The diffusion base plus the model.dit block that the dit_* recipes add (add_dit)."""
  dit = flatten(dit_digits.add_dit(diffusion_base.get_base_config()))
  return {**flatten(diffusion_base.get_base_config()),
          **{k: v for k, v in dit.items() if k.startswith('model.dit.')}}


# family -> (section heading marker, configs/ subfolder, base fields, uses the image blocks)
FAMILIES = {
    'lm': ('`configs/lm/base.py`', 'lm', lambda: flatten(lm_base.get_base_config()), False),
    'vae': ('`configs/vae/base.py`', 'vae', lambda: flatten(vae_base.get_base_config()), True),
    'gan': ('`configs/gan/base.py`', 'gan', lambda: flatten(gan_base.get_base_config()), True),
    'diffusion': ('`configs/diffusion/base.py`', 'diffusion', _diffusion_fields, True),
    'image_gpt': ('`configs/image_gpt/base.py`', 'image_gpt',
                  lambda: flatten(image_gpt_base.get_base_config()), True),
    'classifier': ('`configs/classifier/__init__.py`', 'classifier',
                   lambda: flatten(classifier_base.get_base_config()), True),
    'text_classifier': ('`configs/text_classifier/__init__.py`', 'text_classifier',
                        lambda: flatten(text_classifier_base.get_base_config()), False),
}


# --------------------------------------------------------------------------- parsing

def _doc() -> str:
  assert DOC.exists(), f'{DOC} is missing; it is the configs reference. {FIX}.'
  return DOC.read_text()


def section(marker: str) -> str:
  """The text of the `## ` section whose heading contains `marker`."""
  lines = _doc().splitlines()
  starts = [i for i, line in enumerate(lines) if line.startswith('## ') and marker in line]
  assert len(starts) == 1, (f'docs/configs.md needs exactly one "## " heading containing '
                            f'{marker}; found {len(starts)}. {FIX}.')
  end = next((i for i in range(starts[0] + 1, len(lines)) if lines[i].startswith('## ')),
             len(lines))
  return '\n'.join(lines[starts[0]:end])


def _cells(line: str) -> list[str]:
  """Cells of a markdown table row; `\\|` is a literal pipe inside a cell."""
  inner = line.strip()[1:-1] if line.strip().endswith('|') else line.strip()[1:]
  return [c.strip().replace('\\|', '|') for c in re.split(r'(?<!\\)\|', inner)]


def tables(text: str, header: tuple[str, ...]) -> list[list[list[str]]]:
  """Body rows (as cells) of every table in `text` whose header is `header`."""
  out, rows, lines, i = [], None, text.splitlines(), 0
  while i < len(lines):
    line = lines[i].strip()
    if line.startswith('|') and tuple(c.lower() for c in _cells(line)) == header:
      rows, i = [], i + 2  # skip the |---| line
      while i < len(lines) and lines[i].strip().startswith('|'):
        rows.append(_cells(lines[i]))
        i += 1
      out.append(rows)
      continue
    i += 1
  return out


def _unquote(cell: str) -> str:
  m = re.fullmatch(r'`([^`]*)`', cell)
  return m.group(1) if m else cell


def field_rows(text: str) -> dict[str, str]:
  """{field: default cell} of the field tables in `text`."""
  out = {}
  for rows in tables(text, FIELD_HEADER):
    for cells in rows:
      out[_unquote(cells[0])] = _unquote(cells[1])
  return out


def _same(doc_default: str, value) -> bool:
  try:
    parsed = ast.literal_eval(doc_default)
  except (ValueError, SyntaxError):
    return False
  return repr(parsed) == repr(value)


def _check(rows: dict[str, str], fields: dict, required: set[str], where: str) -> None:
  missing = sorted(required - set(rows))
  assert not missing, (
      f'docs/configs.md, section {where}, does not document these config fields: '
      f'{missing}. {FIX}: add a row | `key` | `default` | meaning | for each.')
  unknown = sorted(set(rows) - set(fields))
  assert not unknown, (
      f'docs/configs.md, section {where}, documents fields the config does not have: '
      f'{unknown}. {FIX}: remove or rename those rows.')
  wrong = {k: (rows[k], repr(fields[k])) for k in sorted(rows) if not _same(rows[k], fields[k])}
  assert not wrong, (
      f'docs/configs.md, section {where}, has stale defaults (doc, code): {wrong}. {FIX}.')


def shared_key(key: str, image: bool):
  """The shared-section key that documents `key`, or None if the family owns it."""
  block, _, rest = key.partition('.')
  canonical = f'{ALIASES.get(block, block)}.{rest}'
  if canonical in COMMON:
    return canonical, COMMON[canonical]
  if image and canonical in IMAGE:
    return canonical, IMAGE[canonical]
  return None


# --------------------------------------------------------------------------- tests

@pytest.mark.parametrize('marker,fields', [('`configs/common.py`', COMMON),
                                           ('`configs/image_data.py`', IMAGE)])
def test_shared_blocks_documented(marker, fields):
  _check(field_rows(section(marker)), fields, set(fields), marker)


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_family_fields_documented(family):
  marker, _, get_fields, image = FAMILIES[family]
  fields = get_fields()
  required = set()
  for key, value in fields.items():
    shared = shared_key(key, image)
    if shared is None or repr(shared[1]) != repr(value):
      required.add(key)
  _check(field_rows(section(marker)), fields, required, marker)


def _recipe_args(path: str) -> list[str]:
  """The config-arg names a recipe declares (its first common.parse_arg call)."""
  calls = []
  original = common.parse_arg

  def spy(arg, **defaults):
    calls.append(sorted(defaults))
    return original(arg, **defaults)

  common.parse_arg = spy
  try:
    load_config(path, None)
  finally:
    common.parse_arg = original
  assert calls, f'{path} does not call configs.common.parse_arg'
  return calls[0]


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_recipes_listed(family):
  marker, folder, _, _ = FAMILIES[family]
  text = section(marker)
  listed = {}
  for rows in tables(text, ('file', 'what it trains',
                            'fields it changes from the base (no config args)',
                            'config args')):
    for cells in rows:
      listed[_unquote(cells[0])] = cells[-1]
  recipes = sorted(p for p in glob.glob(str(REPO / 'configs' / folder / '*.py'))
                   if os.path.basename(p) not in ('base.py', '__init__.py'))
  missing = [os.path.basename(p) for p in recipes if os.path.basename(p) not in listed]
  assert not missing, (f'docs/configs.md, section {marker}, has no recipe-table row for '
                       f'{missing}. {FIX}.')
  for path in recipes:
    name = os.path.basename(path)
    args_cell = listed[name]
    undocumented = [a for a in _recipe_args(path)
                    if not re.search(rf'`{re.escape(a)}(=[^`]*)?`', args_cell)]
    assert not undocumented, (
        f'docs/configs.md: the recipe row of {name} does not list its config args '
        f'{undocumented} (as `name` or `name=...`). {FIX}.')
