"""Installing genai where a different supported JAX is already installed (standing in for a
Colab runtime's or a TPU VM's accelerator build) leaves that JAX in place, and the README's
quick start runs on it.

A fresh venv gets jax/jaxlib 0.10.1 (the CI set has 0.10.2); then `pip install -e` the
repository with CI's constraints minus the JAX lines (everything else at the tested
versions; pip's cache makes a second run quick), exactly as a user on an accelerator
machine installs without -c: setup.py's range `jax>=0.10.1,<0.11` is already satisfied, so
pip keeps 0.10.1. Slow: it downloads and installs the core set (about 2.5 GB) once.
"""
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow
OTHER_JAX = '0.10.1'


def _run(argv, timeout=900, **kw):
  proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout,
                        **kw)
  assert proc.returncode == 0, f'{argv}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
  return proc.stdout


def test_install_keeps_a_supported_jax_and_the_quick_start_runs(tmp_path):
  venv = tmp_path / 'venv'
  _run([sys.executable, '-m', 'venv', venv])
  py = venv / 'bin' / 'python'
  _run([py, '-m', 'pip', 'install', '-q', f'jax=={OTHER_JAX}', f'jaxlib=={OTHER_JAX}'])
  constraints = tmp_path / 'constraints-without-jax.txt'
  lines = (REPO / 'requirements' / 'ci-constraints.txt').read_text().splitlines()
  constraints.write_text('\n'.join(l for l in lines
                                   if not re.match(r'(jax|jaxlib)==', l)) + '\n')
  _run([py, '-m', 'pip', 'install', '-q', '-c', constraints, '-e', REPO])
  versions = _run([py, '-c', 'import importlib.metadata as m; '
                   'print(m.version("jax"), m.version("jaxlib"))']).split()
  assert versions == [OTHER_JAX, OTHER_JAX]
  _run([py, '-m', 'pip', 'check'])
  # keep_jax.py, run in that venv, would pin exactly that JAX.
  assert _run([py, REPO / 'requirements' / 'keep_jax.py', '--print']).split() == [
      f'jax=={OTHER_JAX}', f'jaxlib=={OTHER_JAX}']
  # The README's quick start, with fewer steps.
  out = _run([py, '-m', 'experiments.lm', '--config', 'configs/lm/pydoc_char.py:steps=20',
              '--config.optimizer.warmup_steps=5',
              '--workdir', tmp_path / 'quickstart'], cwd=REPO, timeout=600,
             env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'})
  assert 'step 20/20' in out or 'Trained steps 1..20' in out, out[-2000:]
  assert (tmp_path / 'quickstart' / 'checkpoints' / '20').is_dir()
  assert _run([py, '-c', 'import jax; print(jax.__version__)']).strip() == OTHER_JAX
