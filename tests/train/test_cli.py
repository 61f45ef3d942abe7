"""genai/train/cli.py: a config override that names no field is one clear line, not an
ml_collections traceback; flag errors are one `error:` line with exit code 2."""
import os
import subprocess
import sys

import pytest

from conftest import load_config
from genai.train import cli

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, 'configs/lm/pydoc_char.py')


def test_unknown_field_names_the_close_fields():
  config = load_config(CONFIG, None)
  msg = cli.unknown_field(['prog', '--config.optimizer.lr=1'], config)
  assert msg.startswith("--config.optimizer.lr: 'optimizer.lr' is not a config field;")
  assert 'Fields of optimizer: b1, b2,' in msg and 'learning_rate' in msg
  msg = cli.unknown_field(['prog', '--config.model.num_layer', '2'], config)
  assert 'did you mean model.num_layers' in msg
  msg = cli.unknown_field(['prog', '--config.train.num_steps.x=3'], config)
  assert 'train.num_steps is a int, not a block' in msg
  assert cli.unknown_field(['prog', '--config.train.num_steps=3', '--workdir=w'], config) is None


@pytest.mark.slow  # a subprocess
def test_the_experiment_cli_exits_with_that_line():
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.lm', '--config', f'{CONFIG}:runlocal',
       '--config.optimizer.lr=1', '--workdir', '/nonexistent/never_written'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith(
      "error: --config.optimizer.lr: 'optimizer.lr' is not a config field; Fields of "
      'optimizer: ')
  assert 'Traceback' not in proc.stderr


@pytest.mark.slow  # a subprocess
def test_other_flag_errors_are_one_line_too():
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.lm', '--config', f'{CONFIG}:runlocal',
       '--config.train.batch_size=abc', '--workdir', '/nonexistent/never_written'],
      cwd=REPO, env=dict(os.environ, JAX_PLATFORMS='cpu'), capture_output=True, text=True,
      timeout=300)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      "error: flag --config.train.batch_size=abc: invalid literal for int() with base 10: "
      "'abc'; see --helpshort for the flags")
  assert 'Traceback' not in proc.stderr
