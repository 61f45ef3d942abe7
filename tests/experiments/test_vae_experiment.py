"""The VAE experiment end to end: every config in runlocal mode, metrics and sample files,
the --sample command line, and clear errors for data the likelihood cannot score."""
import glob
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import load_config
from experiments import vae
from genai.train import workdir as workdir_lib
from genai.train.checkpoints import Checkpointer

REPO = Path(__file__).resolve().parents[2]
VAE_CONFIGS = sorted(p for p in glob.glob(str(REPO / 'configs/vae/*.py'))
                     if os.path.basename(p) not in ('__init__.py', 'base.py'))


def _train(config, workdir):
  """train_and_evaluate, also returning every evaluate() result."""
  evals = []

  def build(c, w):
    task = vae.build_task(c, w)
    evaluate = task.evaluate

    def recording(state, step):
      evals.append((step, evaluate(state, step)))
      return evals[-1][1]

    task.evaluate = recording
    return task

  state = workdir_lib.run(config, str(workdir), build)
  return state, evals


RUNS = [(p, 'runlocal') for p in VAE_CONFIGS] + [
    (str(REPO / 'configs/vae/digits.py'), 'runlocal,likelihood=gaussian')]


def test_config_list():
  assert {os.path.basename(p) for p in VAE_CONFIGS} >= {'digits.py', 'mnist.py'}


@pytest.fixture(scope='module')
def digits_run(tmp_path_factory):
  """One trained runlocal digits workdir, shared by the tests that need a checkpoint."""
  workdir = tmp_path_factory.mktemp('digits')
  config = load_config(REPO / 'configs/vae/digits.py')
  state, evals = _train(config, workdir)
  return config, workdir, state, evals


@pytest.mark.slow  # a training per config
@pytest.mark.parametrize('path, arg', RUNS, ids=lambda v: os.path.basename(v))
def test_every_config_trains_evaluates_and_writes_samples(path, arg, tmp_path, request):
  config = load_config(path, arg)
  if arg == 'runlocal' and path.endswith('digits.py'):
    _, tmp_path, state, evals = request.getfixturevalue('digits_run')
  else:
    with tfds.testing.mock_data(num_examples=300):  # TFDS configs: generated data, offline
      state, evals = _train(config, tmp_path)
  n = config.train.num_steps
  assert int(state['step']) == n
  assert Checkpointer(str(tmp_path / 'checkpoints')).latest_step() == n
  eval_steps = [s for s, _ in evals]
  assert eval_steps[-1] == n and len(eval_steps) == 2  # every eval_every, and at the end
  r = evals[-1][1]
  for key in ('nelbo_nats', 'nelbo_bits_per_dim', 'recon_nll_nats', 'kl_nats', 'iw_nll_nats',
              'iw_nll_bits_per_dim', 'active_units'):
    assert np.isfinite(r[f'eval/{key}']), key
  assert r['eval/nelbo_nats'] == pytest.approx(r['eval/recon_nll_nats'] + r['eval/kl_nats'])
  assert r['eval/kl_nats'] >= 0
  h, w, c = (8, 8, 1) if 'digits' in path else (28, 28, 1)
  assert r['eval/nelbo_bits_per_dim'] == pytest.approx(
      r['eval/nelbo_nats'] / (h * w * c * np.log(2)))
  for key in ('images/prior_samples', 'images/reconstructions'):
    grid = r[key]
    assert grid.dtype == np.uint8 and grid.ndim == 4 and grid.shape[0] == 1, key
  for step in eval_steps:
    for name in ('prior', 'reconstructions'):
      assert (tmp_path / 'samples' / f'{name}_{step:07d}.png').is_file()
  prior = np.load(tmp_path / 'samples' / 'prior_0000006.npz')['images']
  assert prior.shape == (config.eval.num_samples, h, w, c) and prior.dtype == np.uint8


@pytest.mark.slow  # a training and a subprocess
def test_sample_command_line_writes_a_grid_and_npz(digits_run, tmp_path):
  _, workdir, _, _ = digits_run
  out = tmp_path / 'out'
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.vae', f'--workdir={workdir}', '--sample',
       '--num_images=12', f'--out={out}'], cwd=REPO, env=env, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr
  images = np.load(out / 'samples.npz')['images']
  assert images.shape == (12, 8, 8, 1) and images.dtype == np.uint8
  assert (out / 'samples.png').is_file()
  # The same seed gives the same images; in-process sampling agrees with the files.
  again, value_range = vae.sample(str(workdir), 12, seed=0)
  assert value_range == '[0,1]' and again.shape == (12, 8, 8, 1)
  assert 0.0 <= again.min() and again.max() <= 1.0
  np.testing.assert_array_equal(np.round(again * 255).astype(np.uint8), images)


def test_bernoulli_model_refuses_data_in_minus_one_one(tmp_path):
  config = load_config(REPO / 'configs/vae/digits.py')
  config.data.binarize = False
  config.data.value_range = '[-1,1]'
  with pytest.raises(ValueError, match=r"expects images in \[0,1\].*data.value_range='\[0,1\]'"):
    vae.train_and_evaluate(config, str(tmp_path))


def test_bernoulli_model_refuses_grey_levels(tmp_path):
  config = load_config(REPO / 'configs/vae/digits.py')
  config.data.binarize = False
  with pytest.raises(ValueError, match='data.binarize=True'):
    vae.train_and_evaluate(config, str(tmp_path))


def test_gaussian_model_refuses_a_mismatched_value_range(tmp_path):
  config = load_config(REPO / 'configs/vae/digits.py', 'runlocal,likelihood=gaussian')
  task_data = vae.images_lib.load_image_data(config.data, batch_size=8, seed=0)
  model = vae.make_vae(config.model, task_data.image_shape)
  with pytest.raises(ValueError, match='looks like'):
    vae.check_data(model, '[-1,1]', task_data.eval_images)  # [0,1] images, [-1,1] declared


def test_config_args_pick_the_data_source():
  c = load_config(REPO / 'configs/vae/mnist.py', 'path=../shared/data/mnist')
  assert (c.data.source, c.data.path, c.data.binarize) == ('idx', '../shared/data/mnist', True)
  c = load_config(REPO / 'configs/vae/mnist.py', '')
  assert (c.data.source, c.data.tfds_name) == ('tfds', 'mnist')
  with pytest.raises(ValueError, match='likelihood'):
    load_config(REPO / 'configs/vae/digits.py', 'likelihood=laplace')


def test_sampling_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='config.json'):
    vae.sample(str(tmp_path), 4)
  with pytest.raises(ValueError, match='num_images'):
    vae.sample(str(tmp_path), 0)


def test_interleave_rows_pads_the_last_row():
  a = np.ones((5, 2, 2, 1), np.float32)
  b = np.full((5, 2, 2, 1), 0.5, np.float32)
  out = vae.interleave_rows(a, b, cols=3)
  assert out.shape == (12, 2, 2, 1)
  np.testing.assert_array_equal(out[:3], 1.0)
  np.testing.assert_array_equal(out[3:6], 0.5)
  np.testing.assert_array_equal(out[6:8], 1.0)
  np.testing.assert_array_equal(out[8], 0.0)
