"""Tests for genai.data.images."""

import types
from pathlib import Path

import numpy as np
import pytest

from genai.data import images as im

SHARED = Path(__file__).resolve().parents[2].parent / 'shared'
MNIST = SHARED / 'data' / 'mnist'


def cfg(**kw):
  return types.SimpleNamespace(**kw)


def test_embedded_digits_shapes_and_split():
  x, y = im.load_images(cfg(source='embedded'), 'train')
  xt, yt = im.load_images(cfg(source='embedded'), 'test')
  assert x.shape == (1617, 8, 8, 1) and xt.shape == (180, 8, 8, 1)
  assert x.dtype == np.uint8 and y.dtype == np.int32
  assert x.min() == 0 and x.max() == 255
  assert set(np.unique(y)) == set(range(10))
  x2, y2 = im.load_images(cfg(source='embedded'), 'train')
  np.testing.assert_array_equal(x, x2)
  np.testing.assert_array_equal(y, y2)
  with pytest.raises(ValueError, match="use 'train' or 'test'"):
    im.load_images(cfg(source='embedded'), 'validation')


@pytest.mark.skipif(not MNIST.is_dir(), reason=f'{MNIST} (real MNIST) absent')
def test_idx_mnist():
  x, y = im.load_images(cfg(source='idx', path=str(MNIST)), 'train')
  assert x.shape == (60000, 28, 28, 1) and x.dtype == np.uint8
  assert y.shape == (60000,) and y[0] == 5
  assert y.min() == 0 and y.max() == 9
  xt, yt = im.load_images(cfg(source='idx', path=str(MNIST)), 'test')
  assert xt.shape == (10000, 28, 28, 1) and yt.shape == (10000,)
  assert yt[0] == 7  # First t10k label.


def test_idx_raw_and_errors(tmp_path):
  # An uncompressed IDX pair written by hand parses the same way.
  imgs = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  header = bytes([0, 0, 8, 3]) + np.array([2, 3, 4], '>u4').tobytes()
  (tmp_path / 'train-images-idx3-ubyte').write_bytes(header + imgs.tobytes())
  (tmp_path / 'train-labels-idx1-ubyte').write_bytes(
      bytes([0, 0, 8, 1]) + np.array([2], '>u4').tobytes() + bytes([3, 1]))
  x, y = im.load_images(cfg(source='idx', path=str(tmp_path)), 'train')
  np.testing.assert_array_equal(x[..., 0], imgs)
  np.testing.assert_array_equal(y, [3, 1])
  with pytest.raises(ValueError, match='t10k-images-idx3-ubyte'):
    im.load_images(cfg(source='idx', path=str(tmp_path)), 'test')
  (tmp_path / 'bad').mkdir()
  (tmp_path / 'bad' / 'train-images-idx3-ubyte').write_bytes(b'hello world')
  with pytest.raises(ValueError, match='not an IDX file'):
    im.read_idx(tmp_path / 'bad' / 'train-images-idx3-ubyte')


def _png(path, size, value=0, mode='L'):
  from PIL import Image
  path.parent.mkdir(parents=True, exist_ok=True)
  h, w = size
  shape = (h, w) if mode == 'L' else (h, w, 3)
  Image.fromarray(np.full(shape, value, np.uint8), mode).save(path)


def test_folder_classes_and_splits(tmp_path):
  _png(tmp_path / 'train' / 'cat' / 'a.png', (5, 5), 10)
  _png(tmp_path / 'train' / 'cat' / 'b.png', (5, 5), 20)
  _png(tmp_path / 'train' / 'dog' / 'c.png', (5, 5), 30)
  _png(tmp_path / 'test' / 'cat' / 'd.png', (5, 5), 40)
  _png(tmp_path / 'test' / 'dog' / 'e.png', (5, 5), 50)
  x, y = im.load_images(cfg(source='folder', path=str(tmp_path)), 'train')
  assert x.shape == (3, 5, 5, 1) and x.dtype == np.uint8
  np.testing.assert_array_equal(y, [0, 0, 1])
  np.testing.assert_array_equal(x[:, 0, 0, 0], [10, 20, 30])
  xt, yt = im.load_images(cfg(source='folder', path=str(tmp_path)), 'test')
  np.testing.assert_array_equal(xt[:, 0, 0, 0], [40, 50])
  np.testing.assert_array_equal(yt, [0, 1])
  with pytest.raises(ValueError, match="no 'validation'"):
    im.load_images(cfg(source='folder', path=str(tmp_path)), 'validation')


def test_folder_flat_rgb_no_labels(tmp_path):
  _png(tmp_path / 'a.png', (4, 6), 7, mode='RGB')
  _png(tmp_path / 'b.jpg', (4, 6), 200, mode='RGB')
  x, y = im.load_images(cfg(source='folder', path=str(tmp_path)), 'train')
  assert x.shape == (2, 4, 6, 3) and y is None


def test_folder_errors_and_resize(tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(ValueError, match='empty folder'):
    im.load_images(cfg(source='folder', path=str(empty)), 'train')

  mixed = tmp_path / 'mixed'
  _png(mixed / 'a.png', (5, 5))
  _png(mixed / 'b.png', (7, 9))
  with pytest.raises(ValueError, match=r"5x5 but .*b.png' is 7x9; set "
                     'data.image_size'):
    im.load_images(cfg(source='folder', path=str(mixed)), 'train')
  x, _ = im.load_images(cfg(source='folder', path=str(mixed), image_size=6),
                        'train')
  assert x.shape == (2, 6, 6, 1)

  bad = tmp_path / 'bad'
  _png(bad / 'ok.png', (5, 5))
  (bad / 'broken.png').write_bytes(b'not a png at all')
  with pytest.raises(ValueError, match=r'broken\.png'):
    im.load_images(cfg(source='folder', path=str(bad)), 'train')


def test_unknown_source():
  with pytest.raises(ValueError, match="data.source='nope' is not a known"):
    im.load_images(cfg(source='nope'), 'train')


def test_tfds_mock_mnist_and_unknown_name():
  tfds = pytest.importorskip('tensorflow_datasets')
  with tfds.testing.mock_data(num_examples=12):
    x, y = im.load_images(cfg(source='tfds', tfds_name='mnist'), 'train')
    assert x.shape == (12, 28, 28, 1) and x.dtype == np.uint8
    assert y.shape == (12,) and y.dtype == np.int32
    assert 0 <= y.min() and y.max() <= 9
    xc, yc = im.load_images(cfg(source='tfds', tfds_name='cifar10'), 'test')
    assert xc.shape == (12, 32, 32, 3) and yc.shape == (12,)
    with pytest.raises(ValueError, match='not a known TFDS dataset'):
      im.load_images(cfg(source='tfds', tfds_name='no_such_ds_xyz'), 'train')


def test_preprocess_ranges_and_resize():
  x = np.array([0, 255, 51], np.uint8).reshape(1, 1, 3, 1)
  a = im.preprocess(x, value_range='[-1,1]')
  b = im.preprocess(x, value_range='[0,1]')
  assert a.dtype == np.float32 and b.dtype == np.float32
  assert a[0, 0, 0, 0] == -1.0 and a[0, 0, 1, 0] == 1.0
  assert b[0, 0, 0, 0] == 0.0 and b[0, 0, 1, 0] == 1.0
  np.testing.assert_allclose(b[0, 0, 2, 0], 0.2)
  with pytest.raises(ValueError, match="data.value_range='0-1'"):
    im.preprocess(x, value_range='0-1')
  big = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 1)).astype(np.uint8)
  r = im.preprocess(big, image_size=4, value_range='[-1,1]')
  assert r.shape == (3, 4, 4, 1) and r.min() >= -1 and r.max() <= 1
  const = np.full((1, 8, 8, 1), 255, np.uint8)
  np.testing.assert_allclose(im.preprocess(const, image_size=3), 1.0,
                             atol=1e-6)
  s = im.preprocess(x, value_range='[0,1]', binarize=True)
  np.testing.assert_array_equal(s[0, 0, :, 0], [0, 1, 0])


def test_check_value_range():
  x01 = np.linspace(0, 1, 10, dtype=np.float32)
  xpm = x01 * 2 - 1
  im.check_value_range(x01, '[0,1]')
  im.check_value_range(xpm, '[-1,1]')
  with pytest.raises(ValueError, match=r"expects images in \[0,1\].*"
                     r"data is in \[-1,1\].*data.value_range='\[0,1\]'"):
    im.check_value_range(xpm, '[0,1]')
  with pytest.raises(ValueError, match=r"looks like \[0,1\]"):
    im.check_value_range(x01, '[-1,1]')
  with pytest.raises(ValueError, match='max=255'):
    im.check_value_range(x01 * 255, '[0,1]')


def test_dynamic_binarisation():
  x = np.random.default_rng(0).random((64, 8, 8, 1), dtype=np.float32)
  it = im.make_image_iterator(x, None, batch_size=64, seed=3, binarize=True,
                              shard_index=0, shard_count=1)
  b1, b2 = next(it)['image'], next(it)['image']
  assert set(np.unique(b1)) <= {0.0, 1.0} and b1.dtype == np.float32
  assert abs(b1.mean() - x.mean()) < 0.03
  assert not np.array_equal(b1, b2)  # Fresh draws every batch.
  with pytest.raises(ValueError, match=r"\[0,1\]"):
    im.make_image_iterator(x * 2 - 1, None, batch_size=8, seed=0,
                           binarize=True, shard_index=0, shard_count=1)


def test_iterator_resume_exact_with_flip_and_binarize():
  rng = np.random.default_rng(1)
  x = rng.random((50, 6, 6, 1), dtype=np.float32)
  y = np.arange(50)
  kw = dict(batch_size=8, seed=7, random_flip=True, binarize=True,
            shard_index=0, shard_count=1)
  it = im.make_image_iterator(x, y, **kw)
  for _ in range(9):  # Past one epoch (6 batches).
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(5)]
  it2 = im.make_image_iterator(x, y, **kw)
  it2.set_state(state)
  for e in expected:
    got = next(it2)
    np.testing.assert_array_equal(got['image'], e['image'])
    np.testing.assert_array_equal(got['label'], e['label'])
    assert got['label'].dtype == np.int32 and got['image'].shape == (8, 6, 6, 1)


def test_flip_mirrors_images():
  x = np.arange(4, dtype=np.float32).reshape(1, 1, 4, 1).repeat(64, 0)
  it = im.make_image_iterator(x, None, batch_size=64, seed=0, random_flip=True,
                              shard_index=0, shard_count=1)
  b = next(it)['image']
  flipped = (b[:, 0, :, 0] == [3, 2, 1, 0]).all(axis=1)
  same = (b[:, 0, :, 0] == [0, 1, 2, 3]).all(axis=1)
  assert (flipped | same).all() and 10 < flipped.sum() < 54


def test_shards_disjoint():
  x = np.zeros((40, 2, 2, 1), np.float32)
  y = np.arange(40)
  seen = []
  for i in range(2):
    it = im.make_image_iterator(x, y, batch_size=4, seed=0, shard_index=i,
                                shard_count=2)
    seen.append({int(l) for _ in range(5) for l in next(it)['label']})
  assert len(seen[0]) == 20 and len(seen[1]) == 20
  assert not seen[0] & seen[1]
  with pytest.raises(ValueError, match='shard_index=2'):
    im.make_image_iterator(x, y, batch_size=4, seed=0, shard_index=2,
                           shard_count=2)


def test_load_image_data_embedded_binarised():
  import configs.image_data as image_data
  d = image_data.get_image_data_config(value_range='[0,1]', binarize=True, max_examples=64,
                                       eval_examples=32)
  data = im.load_image_data(d, batch_size=8, seed=0)
  assert data.image_shape == (8, 8, 1) and data.num_classes == 10
  assert data.eval_images.shape == (32, 8, 8, 1) and data.eval_labels.shape == (32,)
  assert set(np.unique(data.eval_images)) <= {0.0, 1.0}
  again = im.load_image_data(d, batch_size=8, seed=1)
  np.testing.assert_array_equal(data.eval_images, again.eval_images)  # Fixed eval draw.
  batch = next(data.train_iter)
  assert batch['image'].shape == (8, 8, 8, 1) and set(np.unique(batch['image'])) <= {0.0, 1.0}
  bad = image_data.get_image_data_config(value_range='[-1,1]', binarize=True)
  with pytest.raises(ValueError, match=r"value_range='\[0,1\]'"):
    im.load_image_data(bad, batch_size=8, seed=0)
