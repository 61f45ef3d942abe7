"""Writing generated images: a PNG grid and an .npz of the raw samples."""
from __future__ import annotations

import math

import jax
import numpy as np

from genai import paths
from genai.data.images import VALID_VALUE_RANGES


def to_uint8(images: np.ndarray, value_range: str) -> np.ndarray:
  """Float images in `value_range` ('[-1,1]' or '[0,1]') -> uint8 0..255 (clipped)."""
  if value_range not in VALID_VALUE_RANGES:
    raise ValueError(f'value_range={value_range!r}; use one of {VALID_VALUE_RANGES}.')
  x = np.asarray(images, np.float32)
  if value_range == '[-1,1]':
    x = (x + 1.0) / 2.0
  return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def make_grid(images_uint8: np.ndarray, ncols: int | None = None, pad: int = 2) -> np.ndarray:
  """[N, H, W, C] uint8 -> one [rows*(H+pad)+pad, cols*(W+pad)+pad, C] grid image."""
  x = np.asarray(images_uint8)
  if x.ndim != 4:
    raise ValueError(f'images must be [N, H, W, C], got shape {x.shape}.')
  n, h, w, c = x.shape
  ncols = ncols or int(math.ceil(math.sqrt(n)))
  nrows = int(math.ceil(n / ncols))
  grid = np.zeros((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), x.dtype)
  for i in range(n):
    r, col = divmod(i, ncols)
    y0, x0 = pad + r * (h + pad), pad + col * (w + pad)
    grid[y0:y0 + h, x0:x0 + w] = x[i]
  return grid


def write_png(path: str, image_uint8: np.ndarray) -> None:
  from PIL import Image  # pylint: disable=import-outside-toplevel
  x = np.asarray(image_uint8)
  with paths.path(path).open('wb') as f:
    Image.fromarray(x[..., 0] if x.shape[-1] == 1 else x).save(f, format='PNG')


def write_samples(directory: str, name: str, images: np.ndarray, value_range: str,
                  labels: np.ndarray | None = None) -> tuple[str, str]:
  """Writes `{name}.png` (a grid) and `{name}.npz` (uint8 'images' [N,H,W,C], and 'labels'
  when given) under `directory` (any path of `genai.paths`); returns both paths. Only
  process 0 writes: the other processes computed the same samples."""
  png, npz = paths.join(directory, f'{name}.png'), paths.join(directory, f'{name}.npz')
  if jax.process_index() != 0:
    return png, npz
  paths.path(directory).mkdir(parents=True, exist_ok=True)
  u8 = to_uint8(images, value_range)
  write_png(png, make_grid(u8))
  arrays = {'images': u8}
  if labels is not None:
    arrays['labels'] = np.asarray(labels)
  with paths.path(npz).open('wb') as f:
    np.savez_compressed(f, **arrays)
  return png, npz
