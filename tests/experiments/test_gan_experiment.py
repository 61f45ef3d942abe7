"""The GAN experiment end to end: every config in tiny mode, sampling, the train step's EMA,
and a stopped-and-resumed run that ends bit-identical (params and both optimizers)."""
import glob
import os
from pathlib import Path
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import load_config
from experiments import gan

REPO = Path(__file__).resolve().parents[2]
MNIST = REPO.parent / 'shared' / 'data' / 'mnist'
GAN_CONFIGS = sorted(p for p in glob.glob(str(REPO / 'configs/gan/*.py'))
                     if os.path.basename(p) not in ('__init__.py', 'base.py'))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONUNBUFFERED='1')


def _cases():
  out = [(p, 'runlocal') for p in GAN_CONFIGS]
  if MNIST.is_dir():
    out.append((str(REPO / 'configs/gan/mnist.py'), f'runlocal,path={MNIST}'))
  return out


def test_config_list():
  assert {os.path.basename(p) for p in GAN_CONFIGS} >= {'digits.py', 'mnist.py'}


@pytest.mark.slow  # a training per config
@pytest.mark.parametrize('path, arg', _cases(), ids=lambda v: os.path.basename(str(v)))
def test_every_config_trains_and_samples_in_runlocal_mode(path, arg, tmp_path):
  config = load_config(path, arg)
  workdir = str(tmp_path / 'w')
  with tfds.testing.mock_data(num_examples=64):  # TFDS mnist runs on generated data offline
    state = gan.train_and_evaluate(config, workdir)
  assert int(state['step']) == config.train.num_steps
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state))
  grids = sorted(glob.glob(f'{workdir}/samples/step_*.png'))
  assert grids and os.path.basename(grids[-1]) == f'step_{config.train.num_steps:07d}.png'
  png, npz = gan.sample(workdir, 5, out=str(tmp_path / 'out'), seed=3)
  images = np.load(npz)['images']
  side = 8 if config.data.source == 'embedded' else 28
  assert images.shape == (5, side, side, 1) and images.dtype == np.uint8
  assert os.path.exists(png)
  _, npz2 = gan.sample(workdir, 5, out=str(tmp_path / 'out2'), seed=3)
  np.testing.assert_array_equal(images, np.load(npz2)['images'])  # the seed fixes samples


def test_train_step_metrics_and_ema_formula():
  config = load_config(REPO / 'configs/gan/digits.py')
  config.loss, config.gp.kind, config.gp.weight = 'wgan', 'wgan_gp', 10.0
  config.train.n_critic = 2
  nets = gan.GanNets(config, (8, 8, 1))
  init_state, tx_g, tx_d = gan.state_fns(config, nets)
  step_fn = gan.make_train_step(config, nets, (tx_g, tx_d))
  b = config.train.batch_size
  batch = {'image': jax.random.uniform(jax.random.key(0), (2 * b, 8, 8, 1), minval=-1,
                                       maxval=1)}

  @jax.jit
  def run(rng):
    state = init_state(rng)
    return state, step_fn(state, batch, jax.random.key(1))

  before, (after, metrics) = run(jax.random.key(0))
  assert {'loss', 'd_loss', 'g_loss', 'd_real', 'd_fake', 'gp'} <= set(metrics)
  np.testing.assert_allclose(metrics['loss'], metrics['d_loss'] + metrics['g_loss'], rtol=1e-6)
  assert float(metrics['gp']) > 0 and int(after['step']) == 1
  decay = 0.1  # ema_decay(0, 0.999) with warmup = min(0.999, 1 / 10)
  np.testing.assert_allclose(float(metrics['ema_decay']), decay, rtol=1e-6)
  for e0, g1, e1 in zip(jax.tree.leaves(before['ema_params']),
                        jax.tree.leaves(after['g_params']),
                        jax.tree.leaves(after['ema_params'])):
    np.testing.assert_allclose(e1, decay * e0 + (1 - decay) * g1, rtol=1e-5, atol=1e-7)
  # Both optimizers stepped: D twice (n_critic), G once.
  assert int(after['d_opt'][0].count) == 2 and int(after['g_opt'][0].count) == 1


# Spectral norm, BatchNorm, hinge loss and 2 D steps per G step: every piece of GAN state.
RESUME = ['--config.model.spectral_norm=True', '--config.loss=hinge', '--config.train.n_critic=2',
          '--config.train.num_steps=8', '--config.train.checkpoint_every=2',
          '--config.train.eval_every=100']


def _run(workdir, *extra):
  cmd = [sys.executable, '-m', 'experiments.gan', '--config', 'configs/gan/digits.py:runlocal',
         f'--workdir={workdir}', *RESUME, *extra]
  return subprocess.run(cmd, cwd=REPO, env=ENV, check=True, capture_output=True,
                        text=True).stdout


@pytest.mark.slow  # training subprocesses
def test_stopped_run_resumes_with_both_optimizers_bit_identical(tmp_path):
  """A run stopped at step 4 and resumed by re-running the same command ends exactly where
  an uninterrupted run does: G/D params, BatchNorm and SpectralNorm state, both optimizer
  states and the EMA, bit for bit. Every run is its own process, as in real use."""
  ref, work = str(tmp_path / 'ref'), str(tmp_path / 'stopped')
  _run(ref)
  _run(work, '--config.train.stop_after=4')
  assert sorted(int(n) for n in os.listdir(f'{work}/checkpoints') if n.isdigit())[-1] == 4
  assert 'Resumed from step 4' in _run(work)

  _, _, a, _ = gan.load_workdir(ref)
  _, _, b, _ = gan.load_workdir(work)
  assert int(a['step']) == int(b['step']) == 8
  assert {'g_opt', 'd_opt', 'd_spectral', 'g_batch_stats', 'ema_params'} <= set(a)
  flat_a = jax.tree_util.tree_flatten_with_path(a)[0]
  flat_b = jax.tree_util.tree_flatten_with_path(b)[0]
  assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
  for (path, x), (_, y) in zip(flat_a, flat_b):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))
  # The optimizers really moved (not two untouched initial states compared).
  assert int(a['d_opt'][0].count) == 16 and int(a['g_opt'][0].count) == 8


@pytest.mark.parametrize('overrides, match', [
    ({'loss': 'lsgan'}, 'lsgan'),
    ({'gp.kind': 'wgan_gp', 'gp.weight': 0.0}, 'gp.weight'),
    ({'gp.kind': 'dragan'}, 'dragan'),
    ({'train.n_critic': 0}, 'n_critic'),
    ({'data.value_range': '[0,1]'}, 'value_range'),
    ({'model.num_upsamples': 4}, 'not divisible'),
])
def test_bad_inputs_give_clear_errors(overrides, match, tmp_path):
  config = load_config(REPO / 'configs/gan/digits.py')
  config.update_from_flattened_dict(overrides)
  with pytest.raises(ValueError, match=match):
    gan.build_task(config, str(tmp_path))


def test_sampling_a_directory_that_is_not_a_workdir(tmp_path):
  with pytest.raises(FileNotFoundError, match='config.json'):
    gan.sample(str(tmp_path), 4)
