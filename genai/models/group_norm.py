"""Group normalisation (Wu & He 2018) as one function with a hand-written gradient.

  y = group_norm(x_BHWC, scale_C, bias_C, num_groups, epsilon)

Statistics per (image, group) come from per-channel spatial sums of x and x^2; the
output is x * a[b, c] + s[b, c], the per-(image, channel) coefficients a, s computed once
as [B, C] arrays (a small dot spreads each group's value over its channels). The backward
pass is the textbook one, written as two passes over the activations: one reduction
(per-channel sums of dy and dy * x) and one elementwise pass
dx = dy * a[b, c] + x * p[b, c] + q[b, c].

Autodiff of the same forward (a repeat of [B, G] values to [B, C]) gave XLA:CPU loop
fusions that recompute a dozen [B, G] coefficient products for every element, through a
[B, G, C/G] -> [B, C] reshape it does not vectorise (4-5 ns an element), and duplicate the
chain into the weight gradient's transposed copy of dy. In the diffusion UNet's rolled
train step GroupNorm then cost ~6 ms of ~70, against ~2.3 ms for PyTorch's fused kernels
(docs/image_models.md, benchmarks/conv_step_speed.py).

The same values and gradients as flax's nn.GroupNorm (tests/models/test_group_norm.py).
Like genai/models/conv_grads.py it is a custom VJP, so forward-mode autodiff (jax.jvp,
jax.jacfwd) needs `with conv_grads.plain_autodiff():`, which gives plain autodiff here too.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from genai.models import conv_grads


def _group_sum(v_BC, groups: int):
  """[B, C] per-channel values -> [B, G] sums over each group's channels."""
  b, c = v_BC.shape
  return v_BC.reshape(b, groups, c // groups).sum(-1)


def _stats(x, groups: int, epsilon: float):
  """mean and 1/std per (image, group) of x [B, H, W, C], from per-channel sums."""
  _, h, w, c = x.shape
  n = h * w * (c // groups)
  s1 = _group_sum(jnp.sum(x, axis=(1, 2)), groups)
  s2 = _group_sum(jnp.sum(jnp.square(x), axis=(1, 2)), groups)
  mean = s1 / n
  inv = lax.rsqrt(jnp.maximum(s2 / n - jnp.square(mean), 0.0) + epsilon)
  return mean, inv                                                     # [B, G] each


def _expand(v_BG, c: int, factor_C=None):
  """[B, G] -> [B, 1, 1, C]: each group's value on its channels (times factor_C), as a
  small dot with a 0/1 matrix. A dot's result is a materialised array that XLA does not
  fuse into the elementwise loop using it; a broadcast would be recomputed per element of
  that loop, through a [B, G, C/G] -> [B, C] reshape XLA:CPU does not vectorise."""
  b, g = v_BG.shape
  e = jnp.repeat(jnp.eye(g, dtype=v_BG.dtype), c // g, axis=1)           # [G, C]
  if factor_C is not None:
    e = e * factor_C
  return jnp.dot(v_BG, e, precision=lax.Precision.HIGHEST).reshape(b, 1, 1, c)


def _forward(x, scale, bias, groups, epsilon):
  mean, inv = _stats(x, groups, epsilon)
  c = x.shape[-1]
  a = _expand(inv, c, scale)                                           # [B, 1, 1, C]
  s = _expand(-mean * inv, c, scale) + bias
  return x * a + s, (mean, inv, a)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _group_norm(x, scale, bias, groups, epsilon):
  return _forward(x, scale, bias, groups, epsilon)[0]


def _group_norm_fwd(x, scale, bias, groups, epsilon):
  y, (mean, inv, a) = _forward(x, scale, bias, groups, epsilon)
  return y, (x, scale, mean, inv, a)


def _group_norm_bwd(groups, epsilon, res, dy):
  del epsilon
  x, scale, mean, inv, a = res
  _, h, w, c = x.shape
  n = h * w * (c // groups)
  s_dy = jnp.sum(dy, axis=(1, 2))                                      # [B, C]
  s_dyx = jnp.sum(dy * x, axis=(1, 2))                                 # [B, C]
  mean_c = jnp.repeat(mean, c // groups, axis=-1)                      # [B, C]
  inv_c = jnp.repeat(inv, c // groups, axis=-1)
  s_dyxhat = inv_c * (s_dyx - mean_c * s_dy)                           # sum dy * xhat
  d_scale = jnp.sum(s_dyxhat, axis=0)
  d_bias = jnp.sum(s_dy, axis=0)
  # With dxhat = dy * scale: dx = inv * (dxhat - D1 / n - xhat * D2 / n), where D1, D2 are
  # the group sums of dxhat and dxhat * xhat.
  d1 = _group_sum(scale * s_dy, groups)                                # [B, G]
  d2 = _group_sum(scale * s_dyxhat, groups)
  p = -jnp.square(inv) * d2 / n                                        # coefficient of x
  q = -inv * d1 / n - mean * p                                         # constant term
  p, q = _expand(p, c), _expand(q, c)
  dx = dy * a + x * p + q
  return dx, d_scale, d_bias


_group_norm.defvjp(_group_norm_fwd, _group_norm_bwd)


def group_norm(x_BHWC, scale_C, bias_C, num_groups: int, epsilon: float = 1e-6):
  """Group-normalised x_BHWC (computed in float32, returned in x's dtype)."""
  x = x_BHWC.astype(jnp.float32)
  scale, bias = scale_C.astype(jnp.float32), bias_C.astype(jnp.float32)
  if conv_grads.plain_autodiff_enabled():
    y = _forward(x, scale, bias, num_groups, epsilon)[0]
  else:
    y = _group_norm(x, scale, bias, num_groups, epsilon)
  return y.astype(x_BHWC.dtype)
