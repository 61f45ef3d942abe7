"""PNG grids and .npz sample files."""
import numpy as np
from PIL import Image
import pytest

from genai.sample import image_files


def test_to_uint8_ranges():
  np.testing.assert_array_equal(image_files.to_uint8(np.array([-1.0, 0.0, 1.0, 2.0]), '[-1,1]'),
                                [0, 128, 255, 255])
  np.testing.assert_array_equal(image_files.to_uint8(np.array([0.0, 0.5, 1.0]), '[0,1]'),
                                [0, 128, 255])
  with pytest.raises(ValueError, match='value_range'):
    image_files.to_uint8(np.zeros(2), '0..1')


def test_grid_layout():
  x = np.stack([np.full((2, 3, 1), i, np.uint8) for i in range(1, 6)])
  g = image_files.make_grid(x, ncols=3, pad=1)
  assert g.shape == (2 * 3 + 1, 3 * 4 + 1, 1)
  assert g[1, 1, 0] == 1 and g[1, 5, 0] == 2 and g[4, 1, 0] == 4
  assert g[4, 9, 0] == 0  # Sixth cell stays empty.
  with pytest.raises(ValueError, match=r'\[N, H, W, C\]'):
    image_files.make_grid(x[0])


def test_write_samples_round_trip(tmp_path):
  x = np.random.default_rng(0).uniform(-1, 1, (5, 4, 4, 3)).astype(np.float32)
  png, npz = image_files.write_samples(str(tmp_path / 'out'), 'step_10', x, '[-1,1]',
                                       labels=np.arange(5))
  with Image.open(png) as im:
    assert im.size == (3 * 6 + 2, 2 * 6 + 2) and im.mode == 'RGB'
  data = np.load(npz)
  np.testing.assert_array_equal(data['images'], image_files.to_uint8(x, '[-1,1]'))
  np.testing.assert_array_equal(data['labels'], np.arange(5))
