"""Reference datasets by spec, and the cache of their feature statistics."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from genai.data import images as images_lib
from genai.evaluation import image_metrics
from genai.evaluation import reference_stats as rs

MNIST = Path(__file__).resolve().parents[2].parent / 'shared' / 'data' / 'mnist'


class CountingExtractor:
  """A deterministic stand-in for Inception: a fixed random projection, counting calls."""

  def __init__(self, dim=12, weights_hash='aaaa1111'):
    self.calls = 0
    self.dim = dim
    self.extractor = rs.FeatureExtractor('fake', weights_hash, self._fn)

  def _fn(self, images, value_range=None):
    self.calls += 1
    x = np.asarray(images)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x
    if value_range == '[-1,1]':
      x = (x + 1) / 2
    flat = x.reshape(len(x), -1)
    w = np.random.default_rng(0).normal(size=(flat.shape[1], self.dim))
    return {'pool': np.tanh(flat @ w / 4), 'logits': flat @ w[:, :5]}


def test_dataset_specs(tmp_path):
  ref = rs.parse_dataset_spec('digits:test')
  assert (ref.key, ref.data_cfg.source, ref.split) == ('digits', 'embedded', 'test')
  ref = rs.parse_dataset_spec('mnist:test', data_path=str(tmp_path))
  assert ref.data_cfg.source == 'idx' and ref.data_cfg.path == str(tmp_path)
  assert ref.key == f'mnist@idx:{tmp_path}'
  ref = rs.parse_dataset_spec('mnist:train')
  assert (ref.data_cfg.source, ref.data_cfg.tfds_name, ref.key) == ('tfds', 'mnist', 'tfds:mnist')
  ref = rs.parse_dataset_spec('idx:/data/mnist:test', image_size=32)
  assert (ref.data_cfg.path, ref.split, ref.image_size) == ('/data/mnist', 'test', 32)
  ref = rs.parse_dataset_spec('tfds:cifar10:train')
  assert (ref.data_cfg.tfds_name, ref.split) == ('cifar10', 'train')
  # A workdir: its config.data and eval split.
  (tmp_path / 'config.json').write_text(json.dumps(
      {'data': {'source': 'embedded', 'eval_split': 'test', 'image_size': 16}}))
  ref = rs.parse_dataset_spec(str(tmp_path))
  assert (ref.key, ref.split, ref.image_size) == ('digits', 'test', 16)
  for bad, match in [('mnist', 'NAME:SPLIT'), ('idx:/x', 'idx:PATH:SPLIT'),
                     (str(tmp_path / 'nothing'), 'NAME:SPLIT')]:
    with pytest.raises(ValueError, match=match):
      rs.parse_dataset_spec(bad)
  (tmp_path / 'plain').mkdir()
  with pytest.raises(ValueError, match='config.json'):
    rs.parse_dataset_spec(str(tmp_path / 'plain'))


def test_metric_keys_label_domain_features():
  assert rs.metric_key('fid', False) == 'fid'
  assert [rs.metric_key(k, True) for k in ('fid', 'kid_mean', 'kid_std', 'precision',
                                           'inception_score', 'inception_score_std')] == [
      'fid_domain', 'kid_domain_mean', 'kid_domain_std', 'precision_domain',
      'inception_score_domain', 'inception_score_domain_std']
  with pytest.raises(ValueError, match='domain:WORKDIR'):
    rs.load_extractor('vgg')
  with pytest.raises(ValueError, match='needs a classifier workdir'):
    rs.load_extractor('domain:')


def test_stats_are_computed_cached_and_reused(tmp_path):
  fake = CountingExtractor()
  ref = rs.parse_dataset_spec('digits:test')
  stats = rs.get_reference_stats(ref, fake.extractor, cache_dir=tmp_path, print_fn=lambda s: 0)
  assert fake.calls == 1 and stats.count == 180
  # Exactly the statistics of the features of the split's images.
  x, _ = images_lib.load_images(ref.data_cfg, 'test')
  mu, sigma = image_metrics.gaussian_stats(fake.extractor.fn(x)['pool'])
  fake.calls -= 1
  np.testing.assert_allclose(stats.mu, mu, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(stats.sigma, sigma, rtol=1e-5, atol=1e-7)
  assert stats.features.dtype == np.float32 and stats.features.shape == (180, 12)
  # The file name and metadata carry the keys.
  name = os.path.basename(stats.path)
  assert name.startswith('digits_test_n180_s0_fake-aaaa1111')
  assert stats.meta['weights_hash'] == 'aaaa1111' and stats.meta['split'] == 'test'

  again = rs.get_reference_stats(ref, fake.extractor, cache_dir=tmp_path)
  assert fake.calls == 1, 'a matching cache file must be reused'
  np.testing.assert_array_equal(again.sigma, stats.sigma)

  # Any key that differs means another file, computed afresh.
  rs.get_reference_stats(ref, fake.extractor, count=100, cache_dir=tmp_path)
  rs.get_reference_stats(rs.parse_dataset_spec('digits:train'), fake.extractor,
                         count=200, cache_dir=tmp_path)
  other = CountingExtractor(weights_hash='bbbb2222')
  rs.get_reference_stats(ref, other.extractor, cache_dir=tmp_path)
  assert fake.calls == 3 and other.calls == 1
  assert len(list(tmp_path.glob('*.npz'))) == 4

  # A file whose metadata disagrees (e.g. tampered, or an old format) is recomputed.
  z = dict(np.load(stats.path))
  meta = json.loads(str(z['meta']))
  meta['weights_hash'] = 'something-else'
  np.savez(stats.path, **{**z, 'meta': np.array(json.dumps(meta))})
  msgs = []
  rs.get_reference_stats(ref, fake.extractor, cache_dir=tmp_path, print_fn=msgs.append)
  assert fake.calls == 4 and 'recomputing' in msgs[0]
  Path(stats.path).write_bytes(b'not an npz')  # Corrupt file: recomputed too.
  rs.get_reference_stats(ref, fake.extractor, cache_dir=tmp_path)
  assert fake.calls == 5


def test_cache_dir_from_environment_and_feature_subsample(tmp_path, monkeypatch):
  monkeypatch.setenv('GENAI_CACHE_DIR', str(tmp_path))
  assert rs.default_cache_dir() == tmp_path / 'ref_stats'
  fake = CountingExtractor()
  stats = rs.get_reference_stats(rs.parse_dataset_spec('digits:train'), fake.extractor,
                                 max_features=300, print_fn=lambda s: 0)
  assert Path(stats.path).parent == tmp_path / 'ref_stats'
  assert stats.features.shape == (300, 12) and stats.count == 1617
  # The mean/covariance still use every image.
  x, _ = images_lib.load_images(rs.parse_dataset_spec('digits:train').data_cfg, 'train')
  np.testing.assert_allclose(stats.mu, fake.extractor.fn(x)['pool'].mean(0), atol=1e-6)
  # no-cache mode writes nothing.
  n_files = len(list((tmp_path / 'ref_stats').glob('*')))
  rs.get_reference_stats(rs.parse_dataset_spec('digits:test'), fake.extractor,
                         use_cache=False, print_fn=lambda s: 0)
  assert len(list((tmp_path / 'ref_stats').glob('*'))) == n_files


def test_reference_images_count_and_resize():
  ref = rs.parse_dataset_spec('digits:test', image_size=16)
  x = rs.load_reference_images(ref, count=10)
  assert x.shape == (10, 16, 16, 1) and x.dtype == np.uint8 and x.max() > 200
  with pytest.raises(ValueError, match='has 180'):
    rs.load_reference_images(rs.parse_dataset_spec('digits:test'), count=1000)


@pytest.mark.skipif(not MNIST.is_dir(), reason=f'{MNIST} (real MNIST) absent')
def test_real_mnist_reference(tmp_path):
  fake = CountingExtractor(dim=8)
  ref = rs.parse_dataset_spec('mnist:test', data_path=str(MNIST))
  stats = rs.get_reference_stats(ref, fake.extractor, count=500, cache_dir=tmp_path,
                                 print_fn=lambda s: 0)
  assert stats.count == 500 and stats.meta['dataset'] == f'mnist@idx:{MNIST}'
  assert os.path.basename(stats.path).startswith('mnist-idx-')


def _inception_available():
  try:
    from genai.evaluation import inception_weights  # pylint: disable=import-outside-toplevel
    return inception_weights.cache_paths()[0].exists()
  except ImportError:
    return False


@pytest.mark.slow  # the real Inception weights
@pytest.mark.skipif(not _inception_available(),
                    reason='Inception weights not cached: python -m genai.evaluation.inception_weights')
def test_real_inception_reference_stats(tmp_path):
  from genai.evaluation import inception_weights  # pylint: disable=import-outside-toplevel
  extractor = rs.load_extractor('inception', batch_size=8)
  assert extractor.name == 'inception' and not extractor.is_domain
  assert extractor.weights_hash == inception_weights.load_inception_params()[1]
  ref = rs.parse_dataset_spec('digits:test')
  with pytest.warns(image_metrics.SingularCovarianceWarning):  # 8 samples, 2048 dims
    stats = rs.get_reference_stats(ref, extractor, count=8, cache_dir=tmp_path,
                                   print_fn=lambda s: 0)
  assert stats.mu.shape == (2048,) and stats.features.shape == (8, 2048)
  assert np.all(stats.features >= 0)  # pool3 follows ReLUs and an average pool.
  assert f'inception-{extractor.weights_hash[:12]}' in os.path.basename(stats.path)


def test_provenance_is_stored_beside_the_stats_and_checked(tmp_path, monkeypatch):
  import hashlib  # pylint: disable=import-outside-toplevel
  from genai import errors  # pylint: disable=import-outside-toplevel
  fake = CountingExtractor()
  ex = rs.FeatureExtractor('fake', 'aaaa1111', fake._fn, layer='pool', input_resize='none')
  ref = rs.parse_dataset_spec('digits:test')
  stats = rs.get_reference_stats(ref, ex, cache_dir=tmp_path, print_fn=lambda s: 0)
  # Beside the .npz, a .json with the same record: which images (an independent SHA-256 of
  # the split's uint8 bytes), which network, which resizes.
  side = json.loads(Path(stats.path).with_suffix('.json').read_text())
  x, _ = images_lib.load_images(ref.data_cfg, 'test')
  digest = hashlib.sha256(f'{x.dtype.str}{list(x.shape)}'.encode() + x.tobytes()).hexdigest()
  prov = side['provenance']
  assert prov == stats.meta['provenance']
  assert prov['images']['sha256'] == digest and prov['images']['count'] == 180
  assert prov['images']['dataset'] == 'digits' and prov['images']['split'] == 'test'
  assert prov['network'] == {'extractor': 'fake', 'weights_sha256': 'aaaa1111', 'layer': 'pool'}
  assert prov['resize'] == {'dataset': 'none (native size)', 'network_input': 'none'}
  assert rs.get_reference_stats(ref, ex, cache_dir=tmp_path).path == stats.path  # reused
  assert fake.calls == 1
  # The same cache key, but the images at that path changed: refused, not reused.
  real_load = rs.load_reference_images
  monkeypatch.setattr(rs, 'load_reference_images',
                      lambda r, c=0: np.ascontiguousarray(real_load(r, c)[::-1]))
  with pytest.raises(rs.ReferenceStatsMismatch, match=r'images\.sha256') as e:
    rs.get_reference_stats(ref, ex, cache_dir=tmp_path)
  assert errors.is_user_error(e.value) and '\n' not in str(e.value)
  assert 'delete the file' in str(e.value)
  monkeypatch.setattr(rs, 'load_reference_images', real_load)
  # Another input resize of the same network: refused too.
  resized = rs.FeatureExtractor('fake', 'aaaa1111', fake._fn, layer='pool',
                                input_resize='bicubic to 299x299')
  with pytest.raises(rs.ReferenceStatsMismatch, match=r'resize\.network_input'):
    rs.get_reference_stats(ref, resized, cache_dir=tmp_path)
  assert fake.calls == 1
  # A stats file given by hand: used when it matches, refused for other images.
  assert rs.load_stats_file(stats.path, ref, ex).path == stats.path
  with pytest.raises(rs.ReferenceStatsMismatch, match=r'images\.'):
    rs.load_stats_file(stats.path, rs.parse_dataset_spec('digits:train'), ex, count=180)
  with pytest.raises(FileNotFoundError, match='reference-stats'):
    rs.load_stats_file(tmp_path / 'missing.npz', ref, ex)
  # A file of the old format (no provenance) is refused by hand.
  z = dict(np.load(stats.path))
  meta = json.loads(str(z['meta']))
  del meta['provenance']
  old = tmp_path / 'old.npz'
  np.savez(old, **{**z, 'meta': np.array(json.dumps(meta))})
  with pytest.raises(rs.ReferenceStatsMismatch, match='no provenance'):
    rs.load_stats_file(old, ref, ex)


def test_inception_extractor_records_its_resize():
  assert '299x299' in rs.INCEPTION_RESIZE and 'resize_bilinear' in rs.INCEPTION_RESIZE
