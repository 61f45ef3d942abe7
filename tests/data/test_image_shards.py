"""genai.data.image_shards: images prepared as PNG records decode to the exact pixels, and
streamed batches equal the in-memory path's (load_image_data) batch for batch."""
import gzip
import logging
import struct

import ml_collections
import numpy as np
import pytest

from genai.data import image_shards
from genai.data import images
from genai.data import token_shards
from conftest import SHARED

MNIST = SHARED / 'data/mnist'


def write_idx(path, array):
  array = np.asarray(array, np.uint8)
  header = struct.pack('>BBBB', 0, 0, 0x08, array.ndim) + struct.pack(
      f'>{array.ndim}I', *array.shape)
  with gzip.open(path, 'wb') as f:
    f.write(header + array.tobytes())


@pytest.fixture(scope='module')
def small_mnist(tmp_path_factory):
  """The first 300 training and 100 test images of MNIST, as IDX files."""
  d = tmp_path_factory.mktemp('mnist')
  for split, prefix, n in (('train', 'train', 300), ('test', 't10k', 100)):
    x, y = images.load_images(ml_collections.ConfigDict({'source': 'idx', 'path': str(MNIST)}),
                              split)
    write_idx(d / f'{prefix}-images-idx3-ubyte.gz', x[:n, ..., 0])
    write_idx(d / f'{prefix}-labels-idx1-ubyte.gz', y[:n])
  return d


def cfg(**kw):
  base = dict(source='prepared', path='', tfds_name='', tfds_data_dir='', train_split='train',
              eval_split='test', max_examples=0, eval_examples=0, image_size=0,
              value_range='[-1,1]', binarize=False, random_flip=False)
  base.update(kw)
  return ml_collections.ConfigDict(base)


def test_idx_images_round_trip_and_stream_like_the_in_memory_path(small_mnist, tmp_path):
  out = str(tmp_path / 'out')
  manifests = image_shards.prepare_images(out, idx=str(small_mnist), images_per_shard=128,
                                          workers=2)
  m = manifests['train']
  assert m['num_images'] == 300 and m['image_shape'] == [28, 28, 1] and m['num_classes'] == 10
  assert [s['num_records'] for s in m['shards']] == [128, 128, 44]
  assert manifests['test']['num_images'] == 100
  x, y = images.load_images(cfg(source='idx', path=str(small_mnist)), 'train')
  src = image_shards.EncodedImages(out, 'train')
  decoded = [image_shards.decode_image(b, channels=1, image_size=0, where='t')
             for b, _ in src.read(range(300))]
  np.testing.assert_array_equal(np.stack(decoded), x)  # PNG: lossless
  assert [label for _, label in src.read(range(300))] == y.tolist()

  for extra in ({}, {'random_flip': True}, {'value_range': '[0,1]', 'binarize': True}):
    # The one call for image experiments: streamed for data.source='prepared', the
    # in-memory loader for the others.
    streamed = image_shards.load_image_data(cfg(path=out, **extra), batch_size=16, seed=4)
    memory = image_shards.load_image_data(cfg(source='idx', path=str(small_mnist), **extra),
                                          batch_size=16, seed=4)
    np.testing.assert_array_equal(streamed.eval_images, memory.eval_images)
    np.testing.assert_array_equal(streamed.eval_labels, memory.eval_labels)
    assert (streamed.image_shape, streamed.num_classes, streamed.value_range) == (
        memory.image_shape, memory.num_classes, memory.value_range)
    for _ in range(25):  # across the epoch boundary (300 / 16 batches)
      a, b = next(streamed.train_iter), next(memory.train_iter)
      np.testing.assert_array_equal(a['image'], b['image'])
      np.testing.assert_array_equal(a['label'], b['label'])


def test_resize_caps_resume_and_worker_processes(small_mnist, tmp_path):
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.FLAGS.mark_as_parsed()
  out = str(tmp_path / 'out')
  image_shards.prepare_images(out, idx=str(small_mnist), workers=1)
  c = cfg(path=out, image_size=16, max_examples=100, eval_examples=40, random_flip=True)
  data = image_shards.load_streamed_image_data(c, batch_size=8, seed=0)
  assert data.image_shape == (16, 16, 1) and data.eval_images.shape == (40, 16, 16, 1)
  first = [next(data.train_iter) for _ in range(3)]
  state = data.train_iter.get_state()
  want = [next(data.train_iter) for _ in range(20)]
  assert all(b['image'].shape == (8, 16, 16, 1) for b in want)
  again = image_shards.load_streamed_image_data(c, batch_size=8, seed=0)
  again.train_iter.set_state(state)
  for a, b in zip([next(again.train_iter) for _ in range(20)], want):
    np.testing.assert_array_equal(a['image'], b['image'])
  workers = image_shards.load_streamed_image_data(c, batch_size=8, seed=0, num_workers=2)
  try:
    for a, b in zip([next(workers.train_iter) for _ in range(23)], first + want):
      np.testing.assert_array_equal(a['image'], b['image'])
  finally:
    workers.train_iter.close()


def test_folder_of_images_with_a_broken_file(tmp_path, caplog):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for split, n in (('train', 6), ('test', 2)):
    for c, size in (('cat', 20), ('dog', 24)):
      (tmp_path / 'imgs' / split / c).mkdir(parents=True)
      for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
            tmp_path / 'imgs' / split / c / f'{i}.png')
  (tmp_path / 'imgs/train/dog/broken.png').write_bytes(b'\x89PNG\r\n not really')
  out = str(tmp_path / 'out')
  with caplog.at_level(logging.WARNING):
    m = image_shards.prepare_images(out, folder=str(tmp_path / 'imgs'), workers=1)
  assert 'skipped 1 image files that do not decode' in caplog.text
  assert m['train']['num_images'] == 12 and m['train']['image_shape'] is None
  assert m['train']['skipped']['undecodable_files']['count'] == 1
  assert m['train']['shapes'] == {'20x20x3': 6, '24x24x3': 6} and m['train']['num_classes'] == 2
  with pytest.raises(ValueError, match='the images differ in size; set data.image_size'):
    image_shards.load_streamed_image_data(cfg(path=out), batch_size=4, seed=0)
  data = image_shards.load_streamed_image_data(cfg(path=out, image_size=16), batch_size=4,
                                               seed=0)
  b = next(data.train_iter)
  assert b['image'].shape == (4, 16, 16, 3) and set(b['label']) <= {0, 1}
  assert -1 <= b['image'].min() and b['image'].max() <= 1
  assert data.eval_images.shape == (4, 16, 16, 3) and data.num_classes == 2


def test_corrupt_image_shard(small_mnist, tmp_path):
  out = str(tmp_path / 'out')
  image_shards.prepare_images(out, idx=str(small_mnist), workers=1)
  m = token_shards.read_manifest(out, 'test', image_shards.FORMAT)
  path = tmp_path / 'out/test' / m['shards'][0]['file']
  data = bytearray(path.read_bytes())
  end = bytes(data).index(bytes(256))
  for i in range(end // 2, end // 2 + 8):
    data[i] ^= 0xFF
  path.write_bytes(bytes(data))
  with pytest.raises(ValueError) as e:
    image_shards.load_streamed_image_data(cfg(path=out), batch_size=8, seed=0)
  assert str(e.value).startswith(f'{path} is corrupt (') and '\n' not in str(e.value)
  with pytest.raises(ValueError, match="has format 'genai.images/1', not 'genai.tokens/1'"):
    token_shards.read_manifest(out, 'test')


def test_tfds_images_under_mock_data(tmp_path):
  tfds = pytest.importorskip('tensorflow_datasets')
  with tfds.testing.mock_data(num_examples=40):
    m = image_shards.prepare_images(str(tmp_path / 'out'), tfds='mnist', workers=1)
    src = tfds.data_source('mnist', split='train')
    first = np.asarray(src[0]['image'])
    data = image_shards.load_streamed_image_data(
        cfg(source='tfds_source', tfds_name='mnist'), batch_size=8, seed=0)
    b = next(data.train_iter)
  assert m['train']['num_images'] == 40 and m['train']['image_shape'] == [28, 28, 1]
  decoded = image_shards.EncodedImages(str(tmp_path / 'out'), 'train').read([0])[0][0]
  np.testing.assert_array_equal(
      image_shards.decode_image(decoded, channels=1, image_size=0, where='t'), first)
  assert b['image'].shape == (8, 28, 28, 1) and data.eval_images.shape[1:] == (28, 28, 1)
  assert data.num_classes == 10 and b['label'].shape == (8,)
