"""A DDPM / ADM-style UNet denoiser in flax.linen.

x [B, H, W, C], t [B] (float timestep indices), y [B] (labels, or None) -> [B, H, W, out].
c = ConditionEmbedding(t, y) is added (through a per-block Dense) inside every residual
block. Levels: level i has features * channel_mults[i] channels and `num_res_blocks`
residual blocks; between levels a stride-2 conv halves the resolution (28 -> 14 -> 7; odd
sizes round up) and the decoder upsamples (nearest 2x, cropped to the stored skip's size) and
concatenates skips. Self-attention runs after the blocks of the levels listed in
`attention_levels` and in the middle. The output conv is zero-initialised, so an untrained
model predicts 0.

`patch_size` p > 1 wraps the network in space-to-depth / depth-to-space: [B, H, W, C] is
folded into [B, H/p, W/p, p*p*C] before `conv_in` and the output unfolded back, as in
pixel-shuffle super-resolution. The convolutions then run at 1/p^2 of the pixels (about
p^2 times fewer FLOPs for the same widths), which is what makes a UNet trainable in minutes
on a CPU (28x28 MNIST with p=2 runs its levels at 14 and 7).

Every convolution is `nn.Conv` with genai/models/conv_grads.py's gradients, which XLA:CPU
runs on its fast kernel inside a rolled scan of train steps too (the same parameters and
the same sums as plain `nn.Conv`).
"""
from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from genai.models import conv_grads
from genai.models import group_norm
from genai.models.conditioning import ConditionEmbedding


Conv = functools.partial(nn.Conv, conv_general_dilated=conv_grads.conv_general_dilated)


def _groups(channels: int, num_groups: int) -> int:
  """The largest group count <= num_groups that divides `channels`."""
  g = min(num_groups, channels)
  while channels % g:
    g -= 1
  return g


class GroupNorm(nn.Module):
  """Group normalisation (Wu & He 2018) with per-channel scale and bias: nn.GroupNorm's
  parameters and values, computed by genai/models/group_norm.py (per-channel sums and a
  two-pass hand-written backward, which XLA:CPU runs far faster than autodiff's inside the
  rolled train step: docs/image_models.md, issue 25).
  """
  num_groups: int = 8
  epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x_BHWC):
    c = x_BHWC.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (c,))
    bias = self.param('bias', nn.initializers.zeros, (c,))
    return group_norm.group_norm(x_BHWC, scale, bias, _groups(c, self.num_groups), self.epsilon)


def space_to_depth(x_BHWC, p: int):
  """[B, H, W, C] -> [B, H/p, W/p, p*p*C]; channel order (row in patch, col in patch, C)."""
  b, h, w, c = x_BHWC.shape
  x = x_BHWC.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // p, w // p, p * p * c)


def depth_to_space(x_BHWC, p: int):
  """The inverse of space_to_depth: [B, H, W, p*p*C] -> [B, H*p, W*p, C]."""
  b, h, w, cpp = x_BHWC.shape
  c = cpp // (p * p)
  x = x_BHWC.reshape(b, h, w, p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * p, w * p, c)


def upsample2x(x_BHWC, height: int, width: int):
  """Nearest-neighbour 2x upsampling cropped to (height, width): repeats, not a gather, so
  the backward pass is a cheap sum instead of a scatter."""
  x = jnp.repeat(jnp.repeat(x_BHWC, 2, axis=1), 2, axis=2)
  return x[:, :height, :width]


class ResBlock(nn.Module):
  """GroupNorm-SiLU-Conv, + Dense(c), GroupNorm-SiLU-Dropout-Conv, + (1x1 conv) skip."""
  features: int
  dropout: float = 0.0
  num_groups: int = 8

  @nn.compact
  def __call__(self, x_BHWC, c_BD, train: bool):
    h = GroupNorm(self.num_groups)(x_BHWC)
    h = Conv(self.features, (3, 3))(nn.silu(h))
    h = h + nn.Dense(self.features, name='cond')(nn.silu(c_BD))[:, None, None, :]
    h = GroupNorm(self.num_groups)(h)
    h = nn.Dropout(self.dropout, deterministic=not train)(nn.silu(h))
    h = Conv(self.features, (3, 3), kernel_init=nn.initializers.zeros, name='conv_out')(h)
    skip = x_BHWC
    if x_BHWC.shape[-1] != self.features:
      skip = Conv(self.features, (1, 1), name='skip')(x_BHWC)
    return skip + h


class AttentionBlock(nn.Module):
  """Multi-head self-attention over the H*W positions, pre-GroupNorm, residual."""
  num_heads: int = 4
  num_groups: int = 8

  @nn.compact
  def __call__(self, x_BHWC):
    b, h, w, c = x_BHWC.shape
    if c % self.num_heads:
      raise ValueError(f'attention width {c} is not divisible by model.unet.num_heads='
                       f'{self.num_heads}; pick a head count that divides the channels.')
    k, d = self.num_heads, c // self.num_heads
    y = GroupNorm(self.num_groups)(x_BHWC).reshape(b, h * w, c)
    qkv = nn.Dense(3 * c, name='qkv')(y).reshape(b, h * w, 3, k, d)
    # Heads folded into the batch: [B*K, N, D] matmuls run ~3x faster on CPU than the
    # 4-D einsums of nn.MultiHeadDotProductAttention.
    q, kk, v = (qkv[:, :, i].transpose(0, 2, 1, 3).reshape(b * k, h * w, d) for i in range(3))
    att = jax.nn.softmax(jnp.einsum('bqd,bkd->bqk', q, kk) / jnp.sqrt(jnp.float32(d)), -1)
    o = jnp.einsum('bqk,bkd->bqd', att, v).reshape(b, k, h * w, d).transpose(0, 2, 1, 3)
    o = nn.Dense(c, kernel_init=nn.initializers.zeros, name='out')(o.reshape(b, h * w, c))
    return x_BHWC + o.reshape(b, h, w, c)


class UNet(nn.Module):
  """See the module docstring. `num_classes` > 0: class-conditional, y in [0, num_classes]
  (num_classes = "no label" for classifier-free guidance)."""
  out_channels: int
  features: int = 32
  channel_mults: Sequence[int] = (1, 2)
  num_res_blocks: int = 1
  attention_levels: Sequence[int] = (1,)
  num_heads: int = 4
  num_groups: int = 8
  num_classes: int = 0
  dropout: float = 0.0
  cond_features: int = 0      # 0 = 4 * features
  patch_size: int = 1         # > 1: space-to-depth stem / depth-to-space output

  @nn.compact
  def __call__(self, x_BHWC, t_B, y_B=None, train: bool = False):
    if x_BHWC.ndim != 4:
      raise ValueError(f'UNet input must be [B, H, W, C], got shape {x_BHWC.shape}.')
    if not self.channel_mults:
      raise ValueError('model.unet.channel_mults is empty; give at least one level.')
    bad = [i for i in self.attention_levels if not 0 <= i < len(self.channel_mults)]
    if bad:
      raise ValueError(f'model.unet.attention_levels {bad} are not levels of '
                       f'channel_mults={tuple(self.channel_mults)}.')
    p = int(self.patch_size)
    if p < 1 or x_BHWC.shape[1] % p or x_BHWC.shape[2] % p:
      raise ValueError(f'image size {x_BHWC.shape[1]}x{x_BHWC.shape[2]} is not divisible by '
                       f'model.unet.patch_size={self.patch_size}; use a patch size (>= 1) '
                       'that divides both sides.')
    if p > 1:
      x_BHWC = space_to_depth(x_BHWC, p)
    c = ConditionEmbedding(self.cond_features or 4 * self.features,
                           num_classes=self.num_classes, name='cond_embed')(t_B, y_B)
    block = lambda f, name: ResBlock(f, self.dropout, self.num_groups, name=name)
    attn = lambda name: AttentionBlock(self.num_heads, self.num_groups, name=name)

    h = Conv(self.features, (3, 3), name='conv_in')(x_BHWC)
    skips = [h]
    levels = len(self.channel_mults)
    for i, mult in enumerate(self.channel_mults):
      for j in range(self.num_res_blocks):
        h = block(self.features * mult, f'down{i}_res{j}')(h, c, train)
        if i in self.attention_levels:
          h = attn(f'down{i}_attn{j}')(h)
        skips.append(h)
      if i < levels - 1:
        h = Conv(h.shape[-1], (3, 3), strides=(2, 2), name=f'down{i}_downsample')(h)
        skips.append(h)

    mid = self.features * self.channel_mults[-1]
    h = block(mid, 'mid_res0')(h, c, train)
    h = attn('mid_attn')(h)
    h = block(mid, 'mid_res1')(h, c, train)

    for i in reversed(range(levels)):
      for j in range(self.num_res_blocks + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = block(self.features * self.channel_mults[i], f'up{i}_res{j}')(h, c, train)
        if i in self.attention_levels:
          h = attn(f'up{i}_attn{j}')(h)
      if i > 0:
        target = skips[-1].shape
        h = upsample2x(h, target[1], target[2])
        h = Conv(h.shape[-1], (3, 3), name=f'up{i}_upsample')(h)
    assert not skips

    h = nn.silu(GroupNorm(self.num_groups)(h))
    out = Conv(self.out_channels * p * p, (3, 3), kernel_init=nn.initializers.zeros,
                  name='conv_out')(h)
    return depth_to_space(out, p) if p > 1 else out
