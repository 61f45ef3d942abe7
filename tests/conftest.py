"""Test setup: quiet TensorFlow, faster XLA compiles, make the repo root importable (configs/,
experiments/).

Two tiers (pytest.ini): `python -m pytest -q tests` runs every test not marked `slow`;
`python -m pytest -q -m slow tests` runs the slow ones (notebooks, subprocess end-to-end runs,
real-weight parity, the browser test, the fuzz pass, long trainings)."""
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# The tests' tiny models spend most of their time in XLA compiles, which take about half as
# long without XLA's backend optimisations (the tests check results, not speed). Subprocesses
# inherit it. Setting --xla_backend_optimization_level in XLA_FLAGS yourself overrides it.
_XLA_FLAGS = os.environ.get('XLA_FLAGS', '')
if 'xla_backend_optimization_level' not in _XLA_FLAGS:
  os.environ['XLA_FLAGS'] = (_XLA_FLAGS + ' --xla_backend_optimization_level=0'
                             ' --xla_llvm_disable_expensive_passes=true').strip()
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared'
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))


def load_config(path, arg='runlocal'):
  """`get_config(arg)` of a config file."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location('cfg', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.fixture(scope='session')
def lm_workdir(tmp_path_factory):
  """A char LM (pydoc text, context 64) trained for 20 steps; shared by the serving tests."""
  from experiments import lm  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, str(REPO / 'tests/serve'))
  from serving_helpers import lm_config  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp('serve_lm'))
  lm.train_and_evaluate(lm_config(), workdir)
  return workdir
