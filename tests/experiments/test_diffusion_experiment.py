"""The diffusion experiment end to end: every config in tiny mode, then sampling (API and
CLI), class-conditional guidance, and configuration errors."""
import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import load_config
from experiments import diffusion

REPO = Path(__file__).resolve().parents[2]
MNIST = REPO.parent / 'shared' / 'data' / 'mnist'
CONFIGS = sorted(p for p in glob.glob(str(REPO / 'configs/diffusion/*.py'))
                 if os.path.basename(p) not in ('__init__.py', 'base.py'))


def test_config_list():
  assert {os.path.basename(p) for p in CONFIGS} >= {'digits.py', 'mnist.py'}


@pytest.mark.slow  # a training per config
@pytest.mark.parametrize('path', CONFIGS, ids=os.path.basename)
def test_every_config_trains_in_runlocal_mode_then_samples(path, tmp_path):
  config = load_config(path)
  workdir = str(tmp_path / 'w')
  with tfds.testing.mock_data(num_examples=40):  # TFDS configs run on generated data offline
    state = diffusion.train_and_evaluate(config, workdir)
  assert int(state['step']) == config.train.num_steps
  pngs = sorted(os.listdir(os.path.join(workdir, 'samples')))
  assert f'step_{config.train.num_steps:07d}.png' in pngs
  # The eval grid's sampler settings (config.sample): reuses its compiled chain.
  x, png, npz = diffusion.sample(workdir, num_images=5, out=str(tmp_path / 'out'),
                                 batch_size=config.eval.num_samples)
  h, w, c = json.load(open(os.path.join(workdir, 'image_info.json')))['image_shape']
  assert x.shape == (5, h, w, c) and x.min() >= -1 and x.max() <= 1
  saved = np.load(npz)['images']
  assert saved.shape == (5, h, w, c) and saved.dtype == np.uint8 and os.path.exists(png)
  grid = np.load(os.path.join(workdir, 'samples', f'step_{config.train.num_steps:07d}.npz'))
  assert grid['images'].shape == (config.eval.num_samples, h, w, c)


@pytest.mark.slow  # a training and subprocesses
def test_class_conditional_ddpm_and_cli_with_guidance(tmp_path):
  """Trains the conditional digits config, samples with DDPM in process, then one class
  with guidance through the command line. XLA's backend optimisation is turned off in the
  CLI subprocesses only: it halves compile time, which dominates these tiny runs."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2',
             XLA_FLAGS=(os.environ.get('XLA_FLAGS', '')
                        + ' --xla_backend_optimization_level=0').strip())
  workdir, out = tmp_path / 'w', tmp_path / 'cli'
  run = lambda *args: subprocess.run([sys.executable, '-m', 'experiments.diffusion', *args],
                                     cwd=REPO, env=env, capture_output=True, text=True,
                                     timeout=600)
  config = load_config(REPO / 'configs/diffusion/digits.py', 'runlocal,cond')
  config.eval.num_samples = 0
  config.train.eval_every = config.train.num_steps
  diffusion.train_and_evaluate(config, str(workdir))
  x, _, npz = diffusion.sample(str(workdir), num_images=3, out=str(tmp_path / 'ddpm'),
                               sampler='ddpm', guidance=0.0)
  assert x.shape == (3, 8, 8, 1) and list(np.load(npz)['labels']) == [0, 1, 2]
  assert json.load(open(workdir / 'image_info.json'))['num_classes'] == 10
  r = run(f'--workdir={workdir}', '--sample', '--num_images=6', f'--out={out}',
          '--sampler=ddim', '--sample_steps=3', '--eta=0.5', '--guidance=2.0', '--label=3')
  assert r.returncode == 0, r.stderr[-3000:]
  saved = np.load(out / 'samples.npz')
  assert saved['images'].shape == (6, 8, 8, 1) and list(saved['labels']) == [3] * 6
  assert (out / 'samples.png').exists()
  r = run(f'--workdir={workdir}', '--sample', '--label=12', f'--out={out}')
  assert r.returncode != 0 and 'not a class of this model' in r.stderr


def test_mnist_config_args():
  c = load_config(REPO / 'configs/diffusion/mnist.py', f'path={MNIST},cond')
  assert c.data.source == 'idx' and c.data.path == str(MNIST)
  assert c.model.class_conditional and c.sample.guidance > 0
  c = load_config(REPO / 'configs/diffusion/mnist.py', '')
  assert c.data.source == 'tfds' and c.data.tfds_name == 'mnist'
  assert not c.model.class_conditional and c.train.num_steps > 1000
  with pytest.raises(ValueError, match='Unknown config arg'):
    load_config(REPO / 'configs/diffusion/mnist.py', 'size=big')


def test_errors():
  model_cfg = ml_collections.ConfigDict({'backbone': 'vit', 'dropout': 0.0})
  with pytest.raises(ValueError, match="model.backbone='vit'"):
    diffusion.make_backbone(model_cfg, (8, 8, 1), 0)
  config = load_config(REPO / 'configs/diffusion/digits.py', 'runlocal,cond')
  with pytest.raises(ValueError, match='data has no labels'):
    diffusion.resolve_num_classes(config, 0)
  assert diffusion.resolve_num_classes(config, 10) == 10
  with pytest.raises(ValueError, match='unconditional'):
    diffusion.sample_labels(4, 0, label=2)
  assert diffusion.sample_labels(4, 0) is None
  np.testing.assert_array_equal(diffusion.sample_labels(12, 10), np.arange(12) % 10)
  with pytest.raises(FileNotFoundError, match='config.json'):
    diffusion.load_workdir('/nonexistent/workdir')


@pytest.mark.slow  # two trainings
def test_distillation_from_a_teacher_workdir(tmp_path):
  """A smaller UNet student learns from a trained teacher's eps predictions; the student
  workdir samples without the teacher's weights; a mismatched teacher is refused."""
  teacher_cfg = load_config(str(REPO / 'configs/diffusion/digits.py'))
  teacher = diffusion.train_and_evaluate(teacher_cfg, str(tmp_path / 'teacher'))
  c = load_config(str(REPO / 'configs/diffusion/digits.py'))
  c.distill.teacher = str(tmp_path / 'teacher')
  c.model.unet.features = max(4, c.model.unet.features // 2)
  state = diffusion.train_and_evaluate(c, str(tmp_path / 'student'))
  import jax
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, state['teacher']),
               jax.tree.map(np.asarray, teacher['ema_params']))
  images, _, _ = diffusion.sample(str(tmp_path / 'student'), num_images=2,
                                  out=str(tmp_path / 'samples'), steps=2)
  assert np.isfinite(images).all()
  bad = load_config(str(REPO / 'configs/diffusion/digits.py'))
  bad.distill.teacher = str(tmp_path / 'teacher')
  bad.diffusion.num_timesteps = bad.diffusion.num_timesteps + 1
  with pytest.raises(ValueError, match='a teacher must match the student'):
    diffusion.train_and_evaluate(bad, str(tmp_path / 'bad'))
