"""The FID CLI end to end (with a domain classifier trained in a tmp workdir), sample
loading, and the loop's sample evaluator."""
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest

from configs import image_data
from configs.classifier import digits as digits_config
from experiments import classifier as classifier_experiment
from genai.data import images as images_lib
from genai.evaluation import fid
from genai.evaluation import image_metrics
from genai.evaluation import reference_stats as rs
from genai.evaluation import sample_evaluator
from genai.sample import image_files

REPO = Path(__file__).resolve().parents[2]
DIGITS = types.SimpleNamespace(source='embedded')


def _stub_extractor(name='stub', dim=6):
  """A fixed random projection standing in for a feature network (with logits)."""
  def fn(images, value_range=None):
    x = np.asarray(images)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x
    if value_range == '[-1,1]':
      x = (x + 1) / 2
    flat = x.reshape(len(x), -1)
    w = np.random.default_rng(0).normal(size=(flat.shape[1], dim))
    return {'pool': flat @ w, 'logits': flat @ w[:, :4]}
  return rs.FeatureExtractor(name, 'stubhash0000', fn)


@pytest.fixture(scope='module')
def clf_workdir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('clf'))
  classifier_experiment.train_and_evaluate(digits_config.get_config('runlocal'), workdir)
  return workdir


@pytest.fixture(scope='module')
def samples_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp('samples')
  x, _ = images_lib.load_images(DIGITS, 'train')
  image_files.write_samples(str(d), 'a', images_lib.preprocess(x[:60]), '[-1,1]')
  image_files.write_samples(str(d), 'b', images_lib.preprocess(x[60:100]), '[-1,1]')
  return d


@pytest.mark.slow  # a subprocess
def test_cli_prints_labelled_domain_metrics_as_json(clf_workdir, samples_dir, tmp_path):
  cache = tmp_path / 'cache'
  cmd = [sys.executable, '-m', 'genai.evaluation.fid', '--samples', str(samples_dir),
         '--ref', 'digits:test', '--features', f'domain:{clf_workdir}',
         '--cache_dir', str(cache), '--kid_subset_size', '50', '--is_splits', '2',
         '--output', str(tmp_path / 'out.json')]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout)
  assert result == json.loads((tmp_path / 'out.json').read_text())
  # FID-domain is never reported as plain FID.
  for key in ('fid', 'kid_mean', 'kid_std', 'precision', 'recall', 'inception_score'):
    assert key not in result
  assert set(result) >= {'fid_domain', 'kid_domain_mean', 'kid_domain_std', 'precision_domain',
                         'recall_domain', 'inception_score_domain', 'n_samples', 'n_ref',
                         'feature_extractor', 'feature_extractor_hash'}
  assert result['n_samples'] == 100 and result['n_ref'] == 180
  assert result['feature_extractor'] == f'domain:{os.path.abspath(clf_workdir)}'
  assert 0 <= result['precision_domain'] <= 1 and result['fid_domain'] >= 0
  assert 'computing reference stats' in out.stderr
  assert len(list(cache.glob('digits_test_n180_*_domain-*.npz'))) == 1

  # The same reference again (in process): the cache is reused, the numbers are the same.
  msgs = []
  extractor = rs.load_extractor(f'domain:{clf_workdir}')
  samples, value_range = fid.load_samples(str(samples_dir))
  again = fid.evaluate(samples, value_range, rs.parse_dataset_spec('digits:test'), extractor,
                       kid_subset_size=50, is_splits=2, cache_dir=str(cache),
                       print_fn=msgs.append)
  assert not any('computing' in m for m in msgs)
  for key in ('fid_domain', 'kid_domain_mean', 'precision_domain', 'recall_domain'):
    assert again[key] == pytest.approx(result[key], rel=1e-6)


def test_evaluate_with_a_stub_extractor(samples_dir, tmp_path):
  ext = _stub_extractor()
  ref = rs.parse_dataset_spec('digits:test')
  real, _ = fid.load_samples(str(samples_dir))
  noise = np.random.default_rng(0).integers(0, 256, real.shape).astype(np.uint8)
  kw = dict(kid_subset_size=50, is_splits=2, cache_dir=str(tmp_path), print_fn=lambda s: 0)
  good = fid.evaluate(real, None, ref, ext, **kw)
  bad = fid.evaluate(noise, None, ref, ext, **kw)
  assert good['fid'] < bad['fid'] and good['kid_mean'] < bad['kid_mean']
  assert good['precision'] > bad['precision']
  assert 1 <= good['inception_score'] <= 4 and 'note' not in good
  # FID equals the formula on the features directly.
  stats = rs.get_reference_stats(ref, ext, cache_dir=str(tmp_path))
  feats = ext.fn(real)['pool']
  np.testing.assert_allclose(good['fid'], image_metrics.frechet_distance(
      *image_metrics.gaussian_stats(feats), stats.mu, stats.sigma), rtol=1e-6)
  # An extractor without logits (the default Inception weights): IS is null, with a note.
  no_logits = rs.FeatureExtractor('stub2', 'h', lambda x, value_range=None: {
      'pool': ext.fn(x, value_range)['pool']})
  out = fid.evaluate(real, None, ref, no_logits, **kw)
  assert out['inception_score'] is None and 'logits' in out['inception_score_note']


def test_load_samples_formats_and_errors(samples_dir, tmp_path):
  x, vr = fid.load_samples(str(samples_dir))  # A folder of .npz files.
  assert x.shape == (100, 8, 8, 1) and x.dtype == np.uint8 and vr is None
  x, _ = fid.load_samples(str(samples_dir / 'a.npz'), max_samples=10)
  assert x.shape == (10, 8, 8, 1)
  pngs = tmp_path / 'pngs'
  pngs.mkdir()
  for i in range(3):
    image_files.write_png(str(pngs / f'{i}.png'), np.full((8, 8, 1), i * 50, np.uint8))
  x, _ = fid.load_samples(str(pngs))
  np.testing.assert_array_equal(x[:, 0, 0, 0], [0, 50, 100])
  floats = tmp_path / 'f.npz'
  np.savez(floats, images=np.zeros((4, 8, 8, 1), np.float32))
  with pytest.raises(ValueError, match='--value_range'):
    fid.load_samples(str(floats))
  np.savez(floats, images=np.full((4, 8, 8, 1), 0.5, np.float32))
  with pytest.raises(ValueError, match=r'looks like \[0,1\]'):
    fid.load_samples(str(floats), value_range='[-1,1]')
  assert fid.load_samples(str(floats), value_range='[0,1]')[1] == '[0,1]'
  np.savez(tmp_path / 'x.npz', samples=np.zeros((2, 8, 8, 1), np.uint8))
  with pytest.raises(ValueError, match="no 'images'"):
    fid.load_samples(str(tmp_path / 'x.npz'))
  with pytest.raises(FileNotFoundError, match='does not exist'):
    fid.load_samples(str(tmp_path / 'missing.npz'))


# ------------------------------------------------------------- the loop plug-in.


def _sample_fn(pool):
  """sample_fn(state, n, rng): n random rows of `pool` (floats in [-1,1])."""
  def fn(state, n, rng):
    del state
    return pool[np.asarray(jax.random.choice(rng, len(pool), (n,), replace=False))]
  return fn


def test_sample_evaluator(tmp_path):
  ext = _stub_extractor()
  ref = rs.parse_dataset_spec('digits:test')
  stats = rs.get_reference_stats(ref, ext, cache_dir=str(tmp_path), print_fn=lambda s: 0)
  x, _ = images_lib.load_images(DIGITS, 'train')
  real = images_lib.preprocess(x, value_range='[-1,1]')
  noise = np.random.default_rng(0).uniform(-1, 1, real.shape).astype(np.float32)
  kw = dict(batch_size=64, value_range='[-1,1]', kid_subset_size=100, kid_subsets=10)
  good = sample_evaluator.make_sample_evaluator(_sample_fn(real), ext, stats, 300, **kw)
  bad = sample_evaluator.make_sample_evaluator(_sample_fn(noise), ext, stats, 300, **kw)
  r1, r2 = good(None, 5), good(None, 5)
  assert set(r1) == {'fid', 'kid', 'kid_std'} and r1 == r2  # Same step: same samples.
  assert good(None, 6)['fid'] != r1['fid']
  assert r1['fid'] < bad(None, 5)['fid'] and r1['kid'] < bad(None, 5)['kid']
  with pytest.raises(ValueError, match='fid_samples'):
    sample_evaluator.make_sample_evaluator(_sample_fn(real), ext, stats, 1)
  broken = sample_evaluator.make_sample_evaluator(lambda s, n, r: real[:3], ext, stats, 10)
  with pytest.raises(ValueError, match='must return 10 images'):
    broken(None, 0)


@pytest.mark.slow  # a classifier training
def test_sample_evaluator_from_config(clf_workdir, tmp_path, monkeypatch):
  monkeypatch.setenv('GENAI_CACHE_DIR', str(tmp_path))
  config = ml_collections.ConfigDict({'seed': 0, 'data': {'source': 'embedded',
                                                          'eval_split': 'test'}})
  config.eval = image_data.add_fid_eval_fields(ml_collections.ConfigDict())
  x, _ = images_lib.load_images(DIGITS, 'train')
  fn = _sample_fn(images_lib.preprocess(x, value_range='[-1,1]'))
  assert sample_evaluator.from_config(config, fn) is None  # fid_samples=0: off.
  config.eval.fid_samples = 64
  config.eval.fid_features = f'domain:{clf_workdir}'
  config.eval.kid_subset_size = 50
  evaluate = sample_evaluator.from_config(config, fn, value_range='[-1,1]',
                                          print_fn=lambda s: 0)
  out = evaluate(None, 3)
  assert set(out) == {'fid_domain', 'kid_domain', 'kid_domain_std'}
  assert all(np.isfinite(v) for v in out.values())
  assert list((tmp_path / 'ref_stats').glob('digits_test_n180_*.npz'))


@pytest.mark.slow  # a training per family
@pytest.mark.parametrize('family', ['vae', 'gan', 'diffusion'])
def test_image_experiments_log_fid_at_eval(family, clf_workdir, tmp_path, monkeypatch):
  """eval.fid_samples > 0 wires the plug-in into each image experiment's evaluate."""
  import importlib  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv('GENAI_CACHE_DIR', str(tmp_path / 'cache'))
  experiment = importlib.import_module(f'experiments.{family}')
  config = importlib.import_module(f'configs.{family}.digits').get_config('runlocal')
  config.eval.update(fid_samples=24, fid_batch_size=8, fid_ref_count=32, kid_subsets=2,
                     kid_subset_size=8, fid_features=f'domain:{clf_workdir}')
  task = experiment.build_task(config, str(tmp_path / 'workdir'))
  state = jax.jit(task.init_state)(jax.random.key(0))
  out = task.evaluate(state, 0)
  fid = {k: v for k, v in out.items() if k.startswith('eval/') and 'domain' in k}
  assert set(fid) == {'eval/fid_domain', 'eval/kid_domain', 'eval/kid_domain_std'}
  assert all(np.isfinite(v) for v in fid.values())
