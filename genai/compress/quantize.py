"""Post-training weight-only quantization: int8 per channel, int4 group-wise, real storage.

  q = quantize_params(params, 'int8')          # dense kernels -> {'q': int8, 'scale': f32}
  q = quantize_params(params, 'int4', group_size=32)  # two 4-bit values per uint8 byte
  logits = apply_quantized(model, q, tokens)   # the model runs its matmuls on them

Symmetric scales. A kernel [in, *out] is treated as the matrix [in, prod(out)]:
  int8: one scale per output column (absmax / 127, LLM.int8()'s grid; QAT with
        genai/compress/qat.py trains on exactly this grid), q in [-127, 127], w ~= q * scale.
  int4: per (group of `group_size` input rows, output column) a scale and a minimum
        (asymmetric, q in [0, 15], like llama.cpp's Q4_1) or a scale only (symmetric,
        q in [-8, 7] offset by 8); nibbles packed two per byte (row 2i low, 2i+1 high).
The matmul path never materialises a float kernel: int8 uses x @ q (int8 widened inside
the dot) times the column scales; int4 computes each group's partial product and scales it
before summing. Works for any flax.linen model: genai/models/dense_hooks.py replaces the
nn.Dense / nn.DenseGeneral calls (the model code is untouched); embeddings and norms stay
float.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from genai.models.dense_hooks import dense_hooks

KINDS = ('int8', 'int4')


def _as_matrix(w):
  return w.reshape(w.shape[0], math.prod(w.shape[1:]))


def quantize_int8(w: np.ndarray) -> dict[str, np.ndarray]:
  """Per-output-column symmetric int8: {'q' int8 [in, out], 'scale' f32 [out]}.

  Computed with XLA ops (not numpy), whose float32 division rounds like qwix's fake
  quantization does; genai/compress/qat.py calibrates qwix to this same grid."""
  m = jnp.asarray(_as_matrix(np.asarray(w, np.float32)))
  scale = jnp.max(jnp.abs(m), axis=0) / 127.0  # LLM.int8()'s absmax grid, q in [-127, 127]
  scale = jnp.where(scale == 0, 1.0, scale)
  q = jnp.clip(jnp.round(m / scale), -127, 127).astype(jnp.int8)
  return {'q': np.asarray(q), 'scale': np.asarray(scale, np.float32)}


def quantize_int4(w: np.ndarray, group_size: int = 32, symmetric: bool = False
                  ) -> dict[str, np.ndarray]:
  """Group-wise int4: {'packed' uint8 [in/2, out], 'scale' f32 [in/g, out] (+ 'min')}.

  Asymmetric (default, like llama.cpp's Q4_1): w ~= q * scale + min with q in [0, 15], so
  each group's full range is used. Symmetric (qwix's int4 grid): w ~= (q - 8) * scale with
  scale = absmax / 7.5 and q - 8 in [-8, 7].
  """
  m = _as_matrix(np.asarray(w, np.float32))
  d_in, d_out = m.shape
  if d_in % group_size or group_size % 2:
    raise ValueError(f'int4 needs the input dimension ({d_in}) to be a multiple of an even '
                     f'group_size ({group_size}); pick a group_size that divides it.')
  g = jnp.asarray(m).reshape(d_in // group_size, group_size, d_out)
  out = {}
  if symmetric:
    scale = jnp.max(jnp.abs(g), axis=1) / 7.5
    scale = jnp.where(scale == 0, 1.0, scale)
    q = jnp.clip(jnp.round(g / scale[:, None]), -8, 7) + 8
  else:
    lo, hi = jnp.min(g, axis=1), jnp.max(g, axis=1)
    scale = (hi - lo) / 15.0
    scale = jnp.where(scale == 0, 1.0, scale)
    q = jnp.clip(jnp.round((g - lo[:, None]) / scale[:, None]), 0, 15)
    out['min'] = np.asarray(lo, np.float32)
  u = np.asarray(q).astype(np.uint8).reshape(d_in, d_out)
  out.update(packed=(u[0::2] | (u[1::2] << 4)).astype(np.uint8),
             scale=np.asarray(scale, np.float32))
  return out


def unpack_int4(packed: jax.Array) -> jax.Array:
  """uint8 [in/2, out] -> int8 nibbles [in, out] in [0, 15]."""
  lo = (packed & 0x0F).astype(jnp.int8)
  hi = (packed >> 4).astype(jnp.int8)
  return jnp.stack([lo, hi], axis=1).reshape(2 * packed.shape[0], packed.shape[1])


def _int4_values(qw: dict[str, Any]) -> jax.Array:
  """The integer part of an int4 kernel: q (asymmetric, [0, 15]) or q - 8 (symmetric)."""
  q = unpack_int4(qw['packed'])
  return q if 'min' in qw else q - 8


def dequantize(qw: dict[str, Any], shape: tuple[int, ...]) -> jax.Array:
  """The float32 kernel a quantized one stands for (for checks and error bounds)."""
  if 'q' in qw:
    m = qw['q'].astype(jnp.float32) * qw['scale']
  else:
    q = _int4_values(qw).astype(jnp.float32)
    groups = qw['scale'].shape[0]
    g = q.reshape(groups, -1, q.shape[1]) * qw['scale'][:, None]
    if 'min' in qw:
      g = g + qw['min'][:, None]
    m = g.reshape(q.shape)
  return m.reshape(shape)


def qmatmul(x: jax.Array, qw: dict[str, Any]) -> jax.Array:
  """x [..., in] @ quantized [in, out] -> [..., out], without a float kernel."""
  lead = x.shape[:-1]
  x2 = x.reshape(-1, x.shape[-1])
  if 'q' in qw:
    y = jax.lax.dot_general(x2, qw['q'], (((1,), (0,)), ((), ())),
                            preferred_element_type=jnp.float32) * qw['scale']
  else:
    q = _int4_values(qw)
    groups = qw['scale'].shape[0]
    xg = x2.reshape(x2.shape[0], groups, -1)                     # [N, G, g]
    qg = q.reshape(groups, -1, q.shape[1])                        # [G, g, out]
    part = jnp.einsum('ngi,gio->ngo', xg, qg, preferred_element_type=jnp.float32)
    y = jnp.einsum('ngo,go->no', part, qw['scale'])
    if 'min' in qw:  # sum_i x_i (q_i s + m) = s (x . q) + m sum_i x_i, per group
      y = y + jnp.einsum('ng,go->no', xg.sum(-1).astype(jnp.float32), qw['min'])
  return y.reshape(*lead, -1).astype(x.dtype)


def quantize_params(params: Any, kind: str = 'int8', group_size: int = 32,
                    min_size: int = 0, symmetric: bool = False) -> dict[str, Any]:
  """{'float': params without the quantized kernels, 'quantized': {module path: qw},
  'shapes': {module path: kernel shape}}. Every dense kernel (a leaf named 'kernel' with
  ndim >= 2 and at least `min_size` elements) is quantized."""
  if kind not in KINDS:
    raise ValueError(f'quantization kind {kind!r} is unknown; use one of {KINDS}.')
  params = jax.tree.map(np.asarray, nn.unbox(params))
  quantized, shapes = {}, {}

  def walk(tree, prefix):
    out = {}
    for k, v in tree.items():
      path = f'{prefix}/{k}' if prefix else k
      if isinstance(v, dict):
        out[k] = walk(v, path)
      elif k == 'kernel' and v.ndim >= 2 and v.size >= min_size:
        quantized[prefix] = (quantize_int8(v) if kind == 'int8'
                             else quantize_int4(v, group_size, symmetric))
        shapes[prefix] = tuple(v.shape)
      else:
        out[k] = v
    return out

  return {'float': walk(params, ''), 'quantized': quantized, 'shapes': shapes}


def num_bytes(tree: Any) -> int:
  return sum(int(np.asarray(x).nbytes) for x in jax.tree.leaves(tree))


def apply_quantized(model: nn.Module, qparams: dict[str, Any], *args, **kwargs):
  """`model.apply` with the quantized kernels' matmuls done by `qmatmul` (jit-able)."""

  def matmul(key, mod, x, call):
    del call  # replaced: no float kernel exists
    if isinstance(mod, nn.DenseGeneral) and mod.axis not in (-1, (-1,)):
      raise ValueError(f'{key}: quantized DenseGeneral supports axis=-1 only.')
    dtype = mod.dtype or x.dtype
    y = qmatmul(x.astype(dtype), qparams['quantized'][key])
    features = mod.features if isinstance(mod.features, tuple) else (mod.features,)
    y = y.reshape(*x.shape[:-1], *features)
    if mod.use_bias:
      y = y + mod.get_variable('params', 'bias').astype(dtype)
    return y

  hooks = {key: functools.partial(matmul, key) for key in qparams['quantized']}
  with dense_hooks(hooks):
    return model.apply({'params': qparams['float']}, *args, **kwargs)
