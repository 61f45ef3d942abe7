"""setup.py's ranges, the lock file CI installs (requirements/ci-constraints.txt), the extras
and the one line a part prints without its extra, requirements/keep_jax.py."""
import importlib.metadata
import os
import subprocess
import sys

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import REPO
from genai import _extras

sys.path.insert(0, str(REPO / 'requirements'))
import keep_jax  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import lock  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

SETUP = lock.setup_kwargs()
LOCK = REPO / 'requirements' / 'ci-constraints.txt'


def _pins() -> dict[str, str]:
  out = {}
  for line in LOCK.read_text().splitlines():
    if line and not line.startswith('#'):
      name, version = line.split('==')
      out[canonicalize_name(name)] = version
  return out


def _all_requirements(lockable_only: bool = False) -> list[Requirement]:
  reqs = list(SETUP['install_requires'])
  for extra, rs in SETUP['extras_require'].items():
    if not (lockable_only and extra in lock.UNLOCKABLE_EXTRAS):
      reqs += rs
  return [Requirement(r) for r in reqs]


def test_requirements_are_ranges_and_every_pin_lies_in_them():
  pins = _pins()
  for req in _all_requirements():
    spec = str(req.specifier)
    assert '>=' in spec and '<' in spec.replace('<=', ''), f'{req}: not a range'
  for req in _all_requirements(lockable_only=True):
    spec = str(req.specifier)
    assert '>=' in spec and '<' in spec.replace('<=', ''), f'{req}: not a range'
    if req.marker and not req.marker.evaluate():
      continue  # e.g. tensorflow (not -cpu) off Linux
    name = canonicalize_name(req.name)
    assert name in pins, f'{req.name} has no pin in {LOCK.name}'
    assert req.specifier.contains(pins[name]), f'{req.name}=={pins[name]} is outside {req}'


def test_the_lock_file_is_what_lock_py_writes_from_this_environment():
  """The installed set (CI's fresh venv: exactly the lock file) has the lock's versions."""
  want = lock.render(lock.closure(lock.top_requirements(SETUP)))
  body = lambda t: [l for l in t.splitlines() if l and not l.startswith('#')]
  assert body(LOCK.read_text()) == body(want), (
      'requirements/ci-constraints.txt differs from this environment: '
      'python requirements/lock.py (after moving setup.py\'s ranges)')


def test_chex_and_einops_are_gone_and_nothing_imports_them():
  names = {canonicalize_name(r.name) for r in _all_requirements()}
  assert not names & {'chex', 'einops'}
  for top in ('genai', 'experiments', 'configs', 'benchmarks'):
    for root, _, files in os.walk(REPO / top):
      for f in files:
        if f.endswith('.py'):
          text = (REPO / root / f).read_text()
          assert 'import chex' not in text and 'import einops' not in text, f


def test_extras_are_the_optional_parts_and_the_accelerator_jax():
  extras = SETUP['extras_require']
  assert set(_extras.MODULES) <= set(extras)
  assert set(extras['all']) == {r for e in _extras.MODULES for r in extras[e]}
  assert set(extras['all']) <= set(extras['test'])
  assert [Requirement(r).extras for r in extras['tpu'] + extras['cuda']] == [{'tpu'}, {'cuda12'}]
  provided = set(importlib.metadata.metadata('jax').get_all('Provides-Extra'))
  assert {'tpu', 'cuda12'} <= provided
  core = {canonicalize_name(Requirement(r).name) for r in SETUP['install_requires']}
  for extra in _extras.MODULES:
    assert not core & {canonicalize_name(Requirement(r).name) for r in extras[extra]}


def _run_without(module: str, code: str) -> subprocess.CompletedProcess:
  """`code` in a fresh interpreter where importing `module` fails as if not installed."""
  prelude = f'import sys; sys.modules[{module!r}] = None\n'
  return subprocess.run([sys.executable, '-c', prelude + code], cwd=REPO, capture_output=True,
                        text=True, timeout=300, env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'})


def _main(module: str, *args: str) -> str:
  return (f'import runpy; sys.argv = ["x", *{list(args)!r}]\n'
          f'runpy.run_module({module!r}, run_name="__main__", alter_sys=True)')


@pytest.mark.parametrize('blocked, code, line', [
    ('fastapi', _main('genai.serve', '--workdir', '/nonexistent'),
     "error: genai.serve needs the serve extra: pip install 'genai[serve]' (missing: fastapi)"),
    ('sqlalchemy', _main('genai.serve', '--workdir', '/nonexistent', '--feedback'),
     "error: genai.serve --feedback needs the feedback extra: pip install 'genai[feedback]' "
     '(missing: sqlalchemy)'),
    ('ai_edge_litert', _main('genai.export', '--workdir', 'w', '--out', 'o'),
     "error: genai.export needs the export extra: pip install 'genai[export]' "
     '(missing: ai_edge_litert)'),
])
def test_a_command_without_its_extra_prints_one_line(blocked, code, line):
  proc = _run_without(blocked, code)
  assert proc.returncode == 1 and proc.stdout == ''
  assert proc.stderr.strip().splitlines()[-1] == line
  assert 'Traceback' not in proc.stderr


@pytest.mark.parametrize('blocked, code, line', [
    ('sqlalchemy', 'import genai.feedback.store',
     "genai.feedback.store needs the feedback extra: pip install 'genai[feedback]' "
     '(missing: sqlalchemy)'),
    ('matplotlib', 'from genai.safety import audit_report; audit_report._figure()',
     "genai.safety.audit_report (plots) needs the plots extra: pip install 'genai[plots]' "
     '(missing: matplotlib)'),
])
def test_a_library_part_without_its_extra_raises_an_import_error_naming_it(blocked, code, line):
  proc = _run_without(blocked, code)
  assert proc.stderr.strip().splitlines()[-1] == f'genai._extras.MissingExtra: {line}'


def test_other_import_errors_pass_through():
  with pytest.raises(ModuleNotFoundError, match='no_such_module'):
    with _extras.needs('serve', 'genai.serve'):
      import no_such_module  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  with pytest.raises(ValueError, match='unknown extra'):
    with _extras.needs('nope', 'x'):
      pass


def test_keep_jax_pins_the_installed_jax():
  pins = keep_jax.installed_jax()
  assert f'jax=={importlib.metadata.version("jax")}' in pins
  assert f'jaxlib=={importlib.metadata.version("jaxlib")}' in pins
  assert all(keep_jax.JAX_DISTS.match(p.split('==')[0]) for p in pins)
  for name in ('jax-cuda12-plugin', 'jax-cuda12-pjrt', 'libtpu', 'jax-rocm7-plugin'):
    assert keep_jax.JAX_DISTS.match(name)
  assert not keep_jax.JAX_DISTS.match('jaxtyping')
