"""DiT: a diffusion transformer backbone (Peebles & Xie 2023, "Scalable Diffusion Models
with Transformers"), in flax.linen.

x [B, H, W, C] -> patches of p x p pixels -> tokens [B, N, D] (+ fixed 2-D sin-cos
positions) -> `num_layers` DiT blocks with adaLN-Zero conditioning on c = emb(t) [+ emb(y)]
-> adaLN-modulated final layer -> per-token patch [p*p*out_channels] -> unpatchify to
[B, H, W, out_channels].

adaLN-Zero: each block regresses (shift, scale, gate) for attention and MLP from SiLU(c)
with a Dense initialised to zero, and the final linear is zero too, so at initialisation
every block is the identity and the model outputs exactly zero.

Shapes in names: B batch, H/W image height/width, C channels, N tokens, D model width,
K heads, E head dim, P patch vector (p*p*channels).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from genai.models.conditioning import ConditionEmbedding

Array = jax.Array

_xavier = nn.initializers.xavier_uniform()
_zeros = nn.initializers.zeros


def check_patch_size(image_hw: tuple[int, int], patch_size: int) -> tuple[int, int]:
  """The token grid (H // p, W // p); raises if p does not divide the image."""
  h, w = image_hw
  if patch_size < 1:
    raise ValueError(f'model.patch_size={patch_size} must be >= 1.')
  if h % patch_size or w % patch_size:
    divisors = [p for p in range(1, min(h, w) + 1) if h % p == 0 and w % p == 0]
    raise ValueError(
        f'image size {h}x{w} is not divisible by model.patch_size={patch_size}; use a patch '
        f'size that divides both sides ({divisors}), or resize the images with '
        f'--config.data.image_size=N (N a multiple of {patch_size}).')
  return h // patch_size, w // patch_size


def patchify(x_BHWC: Array, patch_size: int) -> Array:
  """[B, H, W, C] -> [B, (H/p)*(W/p), p*p*C]; tokens row-major, each patch (p, q, c)."""
  b, h, w, c = x_BHWC.shape
  gh, gw = check_patch_size((h, w), patch_size)
  p = patch_size
  x = x_BHWC.reshape(b, gh, p, gw, p, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)  # b, gh, gw, p, q, c
  return x.reshape(b, gh * gw, p * p * c)


def unpatchify(x_BNP: Array, grid_hw: tuple[int, int], patch_size: int) -> Array:
  """Inverse of `patchify`: [B, gh*gw, p*p*C] -> [B, gh*p, gw*p, C]."""
  b, n, pp_c = x_BNP.shape
  gh, gw = grid_hw
  p = patch_size
  if n != gh * gw or pp_c % (p * p):
    raise ValueError(f'cannot unpatchify tokens of shape {x_BNP.shape} into a {gh}x{gw} grid '
                     f'of {p}x{p} patches.')
  c = pp_c // (p * p)
  x = x_BNP.reshape(b, gh, gw, p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, gh * p, gw * p, c)


def _sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
  omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
  out = pos.reshape(-1).astype(np.float64)[:, None] * omega[None]
  return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_pos_embed_2d(dim: int, grid_hw: tuple[int, int]) -> np.ndarray:
  """Fixed 2-D sin-cos positions [gh*gw, dim] (row-major tokens), float32.

  The same table as the MAE/DiT `get_2d_sincos_pos_embed(dim, grid_size)` for a square grid
  (including its convention: the first dim/2 channels encode the column index, the last
  dim/2 the row index), extended to rectangular grids.
  """
  if dim % 4:
    raise ValueError(f'model.d_model={dim} must be divisible by 4 for 2-D sin-cos positions.')
  gh, gw = grid_hw
  cols, rows = np.meshgrid(np.arange(gw, dtype=np.float32), np.arange(gh, dtype=np.float32))
  emb = np.concatenate([_sincos_1d(dim // 2, cols), _sincos_1d(dim // 2, rows)], axis=1)
  return emb.astype(np.float32)


def _modulate(x_BND: Array, shift_BD: Array, scale_BD: Array) -> Array:
  return x_BND * (1 + scale_BD[:, None]) + shift_BD[:, None]


def _layer_norm(name: str) -> nn.LayerNorm:
  # No affine parameters: adaLN supplies scale and shift. Statistics in float32.
  return nn.LayerNorm(epsilon=1e-6, use_scale=False, use_bias=False, name=name)


class DiTBlock(nn.Module):
  """Pre-norm transformer block with adaLN-Zero (shift, scale, gate) modulation."""
  num_heads: int
  mlp_ratio: float = 4.0
  dropout: float = 0.0
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x_BND: Array, c_BD: Array, train: bool) -> Array:
    b, n, d = x_BND.shape
    dtype = jnp.dtype(self.dtype)
    k = self.num_heads
    e = d // k
    mod = nn.Dense(6 * d, kernel_init=_zeros, bias_init=_zeros, dtype=dtype,
                   name='adaln')(nn.silu(c_BD))
    shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = jnp.split(mod, 6, axis=-1)
    drop = nn.Dropout(self.dropout, deterministic=not train)

    # Attention. (jax.nn.dot_product_attention has no probability dropout, so dropout
    # acts on the attention block's output, timm's `proj_drop`.)
    h = _modulate(_layer_norm('attn_norm')(x_BND).astype(dtype), shift_a, scale_a)
    qkv = nn.Dense(3 * d, kernel_init=_xavier, bias_init=_zeros, dtype=dtype,
                   name='qkv')(h).reshape(b, n, 3, k, e)
    y = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])
    y = nn.Dense(d, kernel_init=_xavier, bias_init=_zeros, dtype=dtype,
                 name='attn_out')(y.reshape(b, n, d))
    x_BND = x_BND + gate_a[:, None] * drop(y)

    # MLP (GELU, tanh approximation), dropout after the activation and the output.
    h = _modulate(_layer_norm('mlp_norm')(x_BND).astype(dtype), shift_m, scale_m)
    h = nn.gelu(nn.Dense(int(d * self.mlp_ratio), kernel_init=_xavier, bias_init=_zeros,
                         dtype=dtype, name='fc_in')(h), approximate=True)
    y = nn.Dense(d, kernel_init=_xavier, bias_init=_zeros, dtype=dtype,
                 name='fc_out')(drop(h))
    return x_BND + gate_m[:, None] * drop(y)


class DiT(nn.Module):
  """Diffusion transformer: (x [B, H, W, C], t [B], y [B] | None) -> [B, H, W, out_channels].

  t: float timestep indices; y: int labels in [0, num_classes] (num_classes = "no label"),
  or None when num_classes == 0. `out_channels` = 0 means the input's channel count.
  """
  patch_size: int = 2
  d_model: int = 128
  num_layers: int = 4
  num_heads: int = 4
  mlp_ratio: float = 4.0
  out_channels: int = 0
  num_classes: int = 0
  dropout: float = 0.0
  dtype: str = 'float32'           # compute dtype; parameters stay float32

  @nn.compact
  def __call__(self, x_BHWC: Array, t_B: Array, y_B: Array | None = None, *,
               train: bool = False) -> Array:
    if x_BHWC.ndim != 4:
      raise ValueError(f'DiT expects images [B, H, W, C]; got shape {x_BHWC.shape}.')
    if self.d_model % self.num_heads:
      raise ValueError(f'model.d_model={self.d_model} must be divisible by '
                       f'model.num_heads={self.num_heads}.')
    dtype = jnp.dtype(self.dtype)
    _, h, w, c = x_BHWC.shape
    p = self.patch_size
    grid = check_patch_size((h, w), p)
    out_c = self.out_channels or c

    # Patch embedding: one Dense over flattened patches (= a p x p stride-p conv; xavier
    # init on the flattened kernel, as in DiT).
    tokens = patchify(x_BHWC.astype(dtype), p)
    x_BND = nn.Dense(self.d_model, kernel_init=_xavier, bias_init=_zeros, dtype=dtype,
                     name='patch_embed')(tokens)
    x_BND = x_BND + jnp.asarray(sincos_pos_embed_2d(self.d_model, grid), dtype)[None]

    c_BD = ConditionEmbedding(self.d_model, num_classes=self.num_classes,
                              name='cond')(t_B, y_B).astype(dtype)
    for i in range(self.num_layers):
      x_BND = DiTBlock(self.num_heads, self.mlp_ratio, self.dropout, self.dtype,
                       name=f'block_{i}')(x_BND, c_BD, train)

    shift, scale = jnp.split(nn.Dense(2 * self.d_model, kernel_init=_zeros, bias_init=_zeros,
                                      dtype=dtype, name='final_adaln')(nn.silu(c_BD)), 2,
                             axis=-1)
    x_BND = _modulate(_layer_norm('final_norm')(x_BND).astype(dtype), shift, scale)
    out = nn.Dense(p * p * out_c, kernel_init=_zeros, bias_init=_zeros, dtype=dtype,
                   name='final')(x_BND)
    return unpatchify(out, grid, p).astype(jnp.float32)
