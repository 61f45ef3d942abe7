"""Images as token sequences for autoregressive image models (experiments/image_gpt.py).

Each pixel value is quantised to one of `levels` evenly spaced grey levels (k / (levels - 1)
of the value range, k = 0..levels-1; levels = 2 is binary), and each non-overlapping
`patch` x `patch` block of quantised pixels (all channels) becomes one token: the block's
levels read as the digits of a base-`levels` number, most significant first, in (row,
column, channel) order. Blocks are read in raster order. So a token is the joint value of
its pixels, and the probability of the token sequence is exactly the probability of the
quantised image: bits per dimension need no correction for the grouping.

  levels=2, patch=2 on 28x28 MNIST: 196 tokens from a vocabulary of 2**4 = 16.
  levels=256, patch=1: ImageGPT's pixel tokens (784 of 256 for MNIST).

The functions take numpy or jax arrays and run inside jit (jnp ops).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from genai.data.images import VALID_VALUE_RANGES

# Vocabularies above this are refused: the output layer is a dense [d_model, vocab] matmul.
MAX_VOCAB = 65536


def vocab_size(levels: int, patch: int, channels: int) -> int:
  """Distinct tokens: levels ** (patch * patch * channels)."""
  return int(levels) ** (int(patch) ** 2 * int(channels))


def check(levels: int, patch: int, image_shape: Sequence[int]) -> None:
  """ValueError naming the field when `levels`/`patch` cannot tokenise `image_shape`."""
  h, w, c = image_shape
  if not 2 <= levels <= 256:
    raise ValueError(f'tokens.levels={levels} must be in [2, 256] (2 = binary pixels).')
  if patch < 1 or h % patch or w % patch:
    raise ValueError(f'tokens.patch={patch} must be >= 1 and divide the image size {h}x{w}.')
  v = vocab_size(levels, patch, c)
  if v > MAX_VOCAB:
    raise ValueError(f'tokens.levels={levels} with tokens.patch={patch} on {c}-channel images '
                     f'gives {v:,} tokens (more than {MAX_VOCAB:,}); use fewer levels or a '
                     'smaller patch.')


def num_tokens(image_shape: Sequence[int], patch: int) -> int:
  h, w, _ = image_shape
  return (h // patch) * (w // patch)


def _to_unit(x, value_range: str):
  if value_range not in VALID_VALUE_RANGES:
    raise ValueError(f'value_range={value_range!r}; use one of {VALID_VALUE_RANGES}.')
  return (x + 1.0) / 2.0 if value_range == '[-1,1]' else x


def quantize(images, levels: int, value_range: str) -> jax.Array:
  """float images -> int32 levels in [0, levels - 1] (nearest level; out-of-range clipped)."""
  x = _to_unit(jnp.asarray(images, jnp.float32), value_range)
  return jnp.clip(jnp.round(x * (levels - 1)), 0, levels - 1).astype(jnp.int32)


def dequantize(q, levels: int, value_range: str) -> jax.Array:
  """int levels -> float images in `value_range` (level k -> k / (levels - 1) of the range)."""
  x = jnp.asarray(q, jnp.float32) / (levels - 1)
  return 2.0 * x - 1.0 if value_range == '[-1,1]' else x


def _place_values(levels: int, k: int) -> jax.Array:
  return jnp.asarray([levels ** (k - 1 - j) for j in range(k)], jnp.int32)


def to_tokens(images, *, levels: int, patch: int, value_range: str) -> jax.Array:
  """float images [B, H, W, C] -> int32 tokens [B, (H / patch) * (W / patch)]."""
  q = quantize(images, levels, value_range)
  b, h, w, c = q.shape
  blocks = q.reshape(b, h // patch, patch, w // patch, patch, c).transpose(0, 1, 3, 2, 4, 5)
  blocks = blocks.reshape(b, (h // patch) * (w // patch), patch * patch * c)
  return jnp.sum(blocks * _place_values(levels, patch * patch * c), axis=-1)


def from_tokens(tokens, *, levels: int, patch: int, image_shape: Sequence[int],
                value_range: str) -> jax.Array:
  """int tokens [B, N] -> float images [B, H, W, C] in `value_range` (inverse of to_tokens
  on images whose pixels sit on the levels)."""
  h, w, c = image_shape
  k = patch * patch * c
  t = jnp.asarray(tokens, jnp.int32)
  b = t.shape[0]
  digits = (t[..., None] // _place_values(levels, k)) % levels
  q = digits.reshape(b, h // patch, w // patch, patch, patch, c).transpose(0, 1, 3, 2, 4, 5)
  return dequantize(q.reshape(b, h, w, c), levels, value_range)
