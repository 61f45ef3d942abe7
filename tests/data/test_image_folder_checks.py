"""A folder dataset scan (genai/data/images.py): every bad file named at once (or skipped
with a count when data.skip_bad_images), images below data.min_image_size or upscaled by
more than data.max_upscale refused, a held-out split when the folder has none."""
import logging

import numpy as np
import pytest

from configs import image_data
from genai import errors
from genai.data import images as im


def _png(path, size, value=0):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.full(size, value, np.uint8), 'L').save(path)


def _cfg(path, **kw):
  return image_data.get_image_data_config(source='folder', path=str(path), **kw)


def _folder(tmp_path):
  for i in range(3):
    _png(tmp_path / f'good{i}.png', (16, 16), 10 * i)
  (tmp_path / 'broken.png').write_bytes(b'not a png')
  (tmp_path / 'empty.jpg').write_bytes(b'')
  _png(tmp_path / 'dot.png', (1, 1))          # below min_image_size=8
  _png(tmp_path / 'thumb.png', (8, 12))       # 48 / 8 = 6x upscale, over max_upscale=4
  return tmp_path


def test_every_bad_file_is_named_at_once(tmp_path):
  root = _folder(tmp_path)
  with pytest.raises(errors.DataError) as e:
    im.load_images(_cfg(root, image_size=48, min_image_size=2), 'all')
  msg = str(e.value)
  assert msg.startswith(f"4 of 7 images under '{root}' cannot be used: ")
  assert f"'{root}/broken.png' (unreadable: cannot identify image file" in msg
  assert f"'{root}/empty.jpg' (unreadable:" in msg
  assert f"'{root}/dot.png' (1x1, below data.min_image_size=2)" in msg
  assert (f"'{root}/thumb.png' (8x12: resizing it to data.image_size=48 upscales it 6x, over "
          'data.max_upscale=4)') in msg
  assert msg.endswith('; fix or delete them, or set data.skip_bad_images=True to train '
                      'without them')
  with pytest.raises(errors.DataError, match=r"'\S+/dot.png' \(1x1, below "
                     r'data.min_image_size=8\)'):  # the default minimum, no resize
    im.load_images(_cfg(root), 'all')


def test_skipping_bad_files_counts_them(tmp_path, caplog):
  root = _folder(tmp_path)
  with caplog.at_level(logging.WARNING):
    x, y = im.load_images(_cfg(root, image_size=48, skip_bad_images=True), 'all')
  assert x.shape == (3, 48, 48, 1) and y is None
  assert f"skipped 4 of 7 images under '{root}' (data.skip_bad_images=True)" in caplog.text
  assert f'bad image {root}/thumb.png: 8x12: resizing' in caplog.text


def test_a_folder_without_splits_holds_out_eval_fraction(tmp_path, caplog):
  for label in ('cat', 'dog'):
    for i in range(5):
      _png(tmp_path / label / f'{i}.png', (8, 8), 20 * i + (label == 'dog'))
  with caplog.at_level(logging.WARNING):
    train_x, train_y = im.load_images(_cfg(tmp_path, eval_fraction=0.2), 'train')
    eval_x, eval_y = im.load_images(_cfg(tmp_path, eval_fraction=0.2), 'test')
  assert len(train_x) == 8 and len(eval_x) == 2
  seen = {(int(x[0, 0, 0]), int(y)) for x, y in zip(train_x, train_y)}
  assert not seen & {(int(x[0, 0, 0]), int(y)) for x, y in zip(eval_x, eval_y)}
  assert (f"data.path='{tmp_path}' has no train/test subfolders: holding out 2 of its 10 "
          'images for evaluation (data.eval_fraction=0.2); the other 8 train.') in caplog.text
  again, _ = im.load_images(_cfg(tmp_path, eval_fraction=0.2), 'test')  # a fixed draw
  np.testing.assert_array_equal(again, eval_x)
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    both = im.load_images(_cfg(tmp_path, eval_fraction=0.0), 'test')[0]
  assert len(both) == 10 and 'evaluating on the training images' in caplog.text


def test_too_few_images_to_hold_out(tmp_path):
  _png(tmp_path / 'only.png', (8, 8))
  with pytest.raises(errors.DataError, match=r"has 1 images and no train/test subfolders: too "
                     r'few to hold out data.eval_fraction=0.1 .*set data.eval_fraction=0'):
    im.load_images(_cfg(tmp_path), 'train')


def test_load_image_data_trains_and_evaluates_on_disjoint_images(tmp_path):
  for i in range(10):
    _png(tmp_path / f'{i}.png', (8, 8), 25 * i)
  data = im.load_image_data(_cfg(tmp_path, value_range='[0,1]'), batch_size=2, seed=0)
  assert data.eval_images.shape == (1, 8, 8, 1)
  held = float(data.eval_images[0, 0, 0, 0])
  train_values = set()
  for _ in range(5):
    train_values |= {float(v) for v in next(data.train_iter)['image'][:, 0, 0, 0]}
  assert held not in train_values and len(train_values) == 9
