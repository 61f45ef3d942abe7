"""Images as tokens (genai/data/image_tokens.py) against a numpy reference written pixel by
pixel, and the quantisation round trip."""
import itertools

import numpy as np
import pytest

from genai.data import image_tokens


def numpy_tokens(images, levels, patch, value_range):
  """Reference: each patch's quantised pixels as base-`levels` digits, (row, col, channel)
  order, most significant first; patches in raster order."""
  x = np.asarray(images, np.float64)
  if value_range == '[-1,1]':
    x = (x + 1) / 2
  q = np.clip(np.floor(x * (levels - 1) + 0.5), 0, levels - 1).astype(np.int64)
  b, h, w, c = q.shape
  out = np.zeros((b, (h // patch) * (w // patch)), np.int64)
  for n in range(b):
    i = 0
    for py in range(h // patch):
      for px in range(w // patch):
        token = 0
        for dy, dx, ch in itertools.product(range(patch), range(patch), range(c)):
          token = token * levels + q[n, py * patch + dy, px * patch + dx, ch]
        out[n, i] = token
        i += 1
  return out


CASES = [(2, 2, 1, '[0,1]'), (4, 1, 1, '[-1,1]'), (3, 2, 3, '[0,1]'), (256, 1, 1, '[0,1]'),
         (2, 4, 1, '[-1,1]')]


@pytest.mark.parametrize('levels, patch, channels, value_range', CASES)
def test_tokens_match_the_numpy_reference_and_round_trip(levels, patch, channels, value_range):
  rng = np.random.default_rng(levels + patch)
  shape = (3, 8, 8, channels)
  q = rng.integers(0, levels, shape)
  on_grid = q / (levels - 1)
  if value_range == '[-1,1]':
    on_grid = 2 * on_grid - 1
  tokens = np.asarray(image_tokens.to_tokens(on_grid, levels=levels, patch=patch,
                                             value_range=value_range))
  np.testing.assert_array_equal(tokens, numpy_tokens(on_grid, levels, patch, value_range))
  assert tokens.shape == (3, image_tokens.num_tokens(shape[1:], patch))
  assert tokens.min() >= 0 and tokens.max() < image_tokens.vocab_size(levels, patch, channels)
  back = np.asarray(image_tokens.from_tokens(tokens, levels=levels, patch=patch,
                                             image_shape=shape[1:], value_range=value_range))
  np.testing.assert_allclose(back, on_grid, atol=1e-6)  # images on the levels come back exact


@pytest.mark.parametrize('levels, value_range', [(2, '[0,1]'), (5, '[-1,1]'), (256, '[0,1]')])
def test_quantisation_is_the_nearest_level(levels, value_range):
  lo = -1.0 if value_range == '[-1,1]' else 0.0
  x = np.random.default_rng(0).uniform(lo - 0.2, 1.2, (4, 6, 6, 1)).astype(np.float32)
  q = np.asarray(image_tokens.quantize(x, levels, value_range))
  back = np.asarray(image_tokens.dequantize(q, levels, value_range))
  step = (1.0 - lo) / (levels - 1)
  inside = (x >= lo) & (x <= 1.0)
  assert np.all(np.abs(back - x)[inside] <= step / 2 + 1e-6)
  np.testing.assert_array_equal(back[x < lo], lo)  # out of range: clipped to the end levels
  np.testing.assert_array_equal(back[x > 1.0], 1.0)
  np.testing.assert_array_equal(q, numpy_tokens(x, levels, 1, value_range).reshape(q.shape))


def test_vocabulary_and_bad_settings():
  assert image_tokens.vocab_size(2, 2, 1) == 16 and image_tokens.num_tokens((28, 28, 1), 2) == 196
  image_tokens.check(2, 2, (28, 28, 1))
  with pytest.raises(ValueError, match='tokens.levels=1'):
    image_tokens.check(1, 1, (8, 8, 1))
  with pytest.raises(ValueError, match='tokens.patch=3 must .* divide the image size 8x8'):
    image_tokens.check(2, 3, (8, 8, 1))
  with pytest.raises(ValueError, match='more than 65,536.*fewer levels or a smaller patch'):
    image_tokens.check(256, 2, (8, 8, 1))
