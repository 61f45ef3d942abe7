"""The autoregressive image transformer end to end: every config trains in runlocal mode and
scores its eval split, a stopped run resumes bit-identically, sampling (in process, the
command line, the image server) is class-conditional and deterministic, bad inputs give
clear errors."""
import glob
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import REPO, load_config
from experiments import image_gpt
from genai import families
from genai.train import workdir as workdir_lib

CONFIGS = sorted(p for p in glob.glob(str(REPO / 'configs/image_gpt/*.py'))
                 if os.path.basename(p) not in ('__init__.py', 'base.py'))
DIGITS = REPO / 'configs/image_gpt/digits.py'


def _train(config, workdir):
  """train_and_evaluate, also returning every evaluate() result."""
  evals = []

  def build(c, w):
    task = image_gpt.build_task(c, w)
    evaluate = task.evaluate
    task.evaluate = lambda state, step: evals.append((step, evaluate(state, step))) or evals[-1][1]
    return task

  return workdir_lib.run(config, str(workdir), build), evals


@pytest.fixture(scope='module')
def digits_run(tmp_path_factory):
  """One trained runlocal digits workdir (class-conditional), shared by the tests below."""
  workdir = tmp_path_factory.mktemp('igpt_digits')
  config = load_config(DIGITS)
  state, evals = _train(config, workdir)
  return config, workdir, state, evals


def test_config_list_and_the_family_registry():
  assert {os.path.basename(p) for p in CONFIGS} >= {'digits.py', 'mnist.py'}
  assert 'image_gpt' in families.names()
  module = families.get('image_gpt')
  assert callable(module.load_workdir) and callable(module.serving)
  assert load_config(DIGITS).experiment == 'image_gpt'


def _check_run(config, workdir, state, evals, image_shape):
  n = config.train.num_steps
  assert int(state['step']) == n
  assert [s for s, _ in evals][-1] == n
  r = evals[-1][1]
  h, w, c = image_shape
  assert np.isfinite(r['eval/nll_nats']) and r['eval/nll_nats'] > 0
  assert r['eval/bits_per_dim'] == pytest.approx(r['eval/nll_nats'] / (h * w * c * np.log(2)))
  grid = r['images/samples']
  assert grid.dtype == np.uint8 and grid.ndim == 4 and grid.shape[0] == 1
  saved = np.load(workdir / 'samples' / f'step_{n:07d}.npz')
  assert saved['images'].shape == (config.eval.num_samples, h, w, c)
  if config.model.class_conditional:
    np.testing.assert_array_equal(saved['labels'], np.arange(config.eval.num_samples) % 10)
  levels = config.tokens.levels
  # Every sampled pixel sits on one of the quantisation levels.
  assert set(np.unique(saved['images'])) <= set(np.round(np.arange(levels) / (levels - 1) * 255))


@pytest.mark.slow  # a training per config
@pytest.mark.parametrize('path, arg', [(p, 'runlocal') for p in CONFIGS] + [
    (str(DIGITS), 'runlocal,uncond')],
    ids=lambda v: os.path.basename(v))
def test_every_config_trains_evaluates_and_writes_samples(path, arg, tmp_path, request):
  config = load_config(path, arg)
  if path == str(DIGITS) and arg == 'runlocal':
    _, tmp_path, state, evals = request.getfixturevalue('digits_run')
  else:
    with tfds.testing.mock_data(num_examples=300):  # TFDS configs: generated data, offline
      state, evals = _train(config, tmp_path)
  _check_run(config, tmp_path, state, evals, (8, 8, 1) if 'digits' in path else (28, 28, 1))
  assert config.model.class_conditional == ('uncond' not in arg)


@pytest.mark.slow  # two trainings
def test_a_stopped_run_resumes_bit_identically(digits_run, tmp_path):
  config, _, straight, _ = digits_run  # evaluations draw no training randomness
  config = load_config(DIGITS)
  config.train.stop_after = 4
  image_gpt.train_and_evaluate(config, str(tmp_path / 'stopped'))
  assert workdir_lib.newest_step(str(tmp_path / 'stopped')) == 4
  config.train.stop_after = 0
  resumed = image_gpt.train_and_evaluate(config, str(tmp_path / 'stopped'))
  assert int(resumed['step']) == int(straight['step']) == config.train.num_steps
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow  # a training
def test_sampling_is_class_conditional_and_deterministic(digits_run):
  _, workdir, _, _ = digits_run
  x, labels, value_range = image_gpt.sample(str(workdir), 6, seed=3, label=4)
  assert x.shape == (6, 8, 8, 1) and value_range == '[0,1]'
  np.testing.assert_array_equal(labels, 4)
  assert set(np.unique(x)) <= {0.0, 1.0}
  again, _, _ = image_gpt.sample(str(workdir), 6, seed=3, label=4)
  np.testing.assert_array_equal(x, again)
  other_seed, _, _ = image_gpt.sample(str(workdir), 6, seed=4, label=4)
  assert not np.array_equal(x, other_seed)
  # (That the label changes the model's distribution: tests/objectives/test_image_gpt_objective.)
  cycled = image_gpt.sample(str(workdir), 12, seed=0, batch_size=5)[1]
  np.testing.assert_array_equal(cycled, np.arange(12) % 10)
  with pytest.raises(ValueError, match='not a class of this model'):
    image_gpt.sample(str(workdir), 2, label=10)


@pytest.mark.slow  # a training and a subprocess
def test_sample_command_line_and_the_image_server(digits_run, tmp_path):
  _, workdir, _, _ = digits_run
  out = tmp_path / 'out'
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.image_gpt', f'--workdir={workdir}', '--sample',
       '--num_images=12', '--label=7', f'--out={out}'], cwd=REPO, capture_output=True,
      text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
  assert proc.returncode == 0, proc.stderr
  saved = np.load(out / 'samples.npz')
  assert saved['images'].shape == (12, 8, 8, 1) and saved['images'].dtype == np.uint8
  np.testing.assert_array_equal(saved['labels'], 7)
  x, _, _ = image_gpt.sample(str(workdir), 12, seed=0, label=7)
  np.testing.assert_array_equal(np.round(x * 255).astype(np.uint8), saved['images'])

  from genai.serve import models  # pylint: disable=g-import-not-at-top
  model = models.load(str(workdir))
  assert isinstance(model, models.ImageModel) and model.family == 'image_gpt'
  a = model.generate(3, seed=5, label=2)
  assert a.shape == (3, 8, 8, 1) and a.dtype == np.uint8
  np.testing.assert_array_equal(a, model.generate(3, seed=5, label=2))
  with pytest.raises(ValueError, match='not a class of this model'):
    model.generate(1, label=10)


@pytest.mark.parametrize('overrides, match', [
    ({'tokens.patch': 3}, 'tokens.patch=3 must be >= 1 and divide the image size 8x8'),
    ({'tokens.levels': 1}, r'tokens.levels=1 must be in \[2, 256\]'),
    ({'model.num_heads': 3}, 'divisible by model.num_heads=3'),
])
def test_bad_inputs_give_clear_errors(overrides, match, tmp_path):
  config = load_config(DIGITS)
  for key, value in overrides.items():
    block, field = key.split('.')
    config[block][field] = value
  with pytest.raises(ValueError, match=match):
    image_gpt.build_task(config, str(tmp_path))


def test_sampling_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='config.json'):
    image_gpt.sample(str(tmp_path), 4)
  with pytest.raises(ValueError, match='num_images'):
    image_gpt.sample(str(tmp_path), 0)
  with pytest.raises(ValueError, match='unconditional'):
    image_gpt.sample_labels(4, 0, label=1)
  assert image_gpt.sample_labels(4, 0) is None
  np.testing.assert_array_equal(image_gpt.sample_labels(5, 3), [0, 1, 2, 0, 1])
