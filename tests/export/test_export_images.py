"""Image generator export (GAN, VAE, class-conditional diffusion): SavedModel and TFLite
(float and int8) 'sample' signatures against JAX on the same latents / noise, and the
command line end to end."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, load_config
from experiments import diffusion, gan, vae
from genai.export import tflite
from genai.export import workdir as export_workdir
from genai.objectives import diffusion as dfn
from genai.sample import diffusion_samplers as samplers

pytestmark = pytest.mark.slow  # three trainings, SavedModel and TFLite (int8) conversions

B = 3
CONFIGS = {'gan': (gan, 'configs/gan/digits.py', 'runlocal'),
           'vae': (vae, 'configs/vae/digits.py', 'runlocal'),
           'diffusion': (diffusion, 'configs/diffusion/digits.py', 'runlocal,cond')}


def _train(family, root):
  module, path, arg = CONFIGS[family]
  config = load_config(REPO / path, arg)
  config.train.num_steps = 3
  config.train.steps_per_call = 1
  config.train.eval_every = 100  # the final step still evaluates once
  config.train.checkpoint_every = 3
  if 'optimizer' in config:
    config.optimizer.warmup_steps = 1
  workdir = str(root / f'w_{family}')
  module.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  """{family: (workdir, out dir, info, params, signatures)}, exported with int8 files."""
  root = tmp_path_factory.mktemp('image_export')
  result = {}
  for family in CONFIGS:
    workdir = _train(family, root)
    out = str(root / f'out_{family}')
    info = export_workdir.export_workdir(workdir, out, quantize='int8', batch_size=B, steps=3)
    _, params, sigs, _ = export_workdir.build(workdir, batch_size=B, steps=3)
    result[family] = (workdir, out, info, params, sigs)
  return result


def _inputs(sig):
  rng = np.random.RandomState(0)
  out = {}
  for k, s in sig.inputs.items():
    if k == 'labels':
      out[k] = np.array([0, 3, 9], np.int32)
    elif k == 'guidance':
      out[k] = np.float32(1.5)
    else:
      out[k] = rng.randn(*s.shape).astype(np.float32)
  return out


def _check(got, want, atol):
  np.testing.assert_allclose(got['images'], want['images'], atol=atol)
  diff = np.abs(got['images_uint8'].astype(int) - np.asarray(want['images_uint8']).astype(int))
  assert diff.max() <= 1, diff.max()  # rounding at a .5 boundary


def _check_int8(got, want):
  """int8 weights: close on average (a diffusion chain can flip a clipped pixel)."""
  assert np.abs(got['images'] - want['images']).mean() < 0.02
  diff = np.abs(got['images_uint8'].astype(int) - np.asarray(want['images_uint8']).astype(int))
  assert diff.mean() < 0.02 * 255


@pytest.mark.parametrize('family', list(CONFIGS))
def test_saved_model_and_tflite_match_jax(exported, family):
  _, out, info, params, sigs = exported[family]
  sig = sigs['sample']
  inputs = _inputs(sig)
  want = jax.device_get(jax.jit(sig.fn)(params, inputs))
  assert want['images_uint8'].dtype == np.uint8 and want['images'].shape[0] == B
  assert set(info['files']) == {'saved_model/1', 'sample.tflite', 'sample_int8.tflite'}
  loaded = tf.saved_model.load(os.path.join(out, 'saved_model', '1'))
  assert set(loaded.signatures) == {'serving_default', 'sample'}
  got = loaded.signatures['serving_default'](**{k: tf.constant(v) for k, v in inputs.items()})
  _check({k: v.numpy() for k, v in got.items()}, want, 1e-5)
  _check(tflite.Runner(os.path.join(out, 'sample.tflite'), 'sample')(**inputs), want, 1e-4)
  _check_int8(tflite.Runner(os.path.join(out, 'sample_int8.tflite'))(**inputs), want)
  assert info['files']['sample_int8.tflite'] < info['files']['sample.tflite']


def test_diffusion_chain_equals_ddim_sample_with_eta_0(exported):
  workdir = exported['diffusion'][0]
  config, model, params, info = diffusion.load_workdir(workdir)
  sched = dfn.make_schedule(config.diffusion)
  labels, w = np.array([1, 2, 3], np.int32), 1.0
  shape = (B,) + tuple(info['image_shape'])
  rng = jax.random.key(5)
  apply = lambda x, t, y: model.apply({'params': params}, x, t, y, train=False)
  want = samplers.ddim_sample(
      samplers.guided_model_fn(apply, labels, num_classes=info['num_classes'], guidance=w),
      sched, shape, rng, num_steps=3, eta=0.0, prediction=config.diffusion.prediction)
  noise = jax.random.normal(jax.random.split(rng)[0], shape)
  got = samplers.ddim_chain(
      samplers.guided_model_fn(apply, labels, num_classes=info['num_classes'],
                               guidance=jax.numpy.float32(w)), sched, noise,
      num_steps=3, prediction=config.diffusion.prediction)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def test_command_line(exported, tmp_path):
  workdir = exported['gan'][0]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  run = subprocess.run([sys.executable, '-m', 'genai.export', f'--workdir={workdir}',
                        f'--out={tmp_path}/o', '--format=tflite', '--batch_size=2'],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  assert 'sample.tflite' in run.stdout and 'images_uint8 uint8[2, 8, 8, 1]' in run.stdout
  assert sorted(os.listdir(tmp_path / 'o')) == ['export_info.json', 'sample.tflite']
  assert json.load(open(tmp_path / 'o' / 'export_info.json'))['family'] == 'gan'
