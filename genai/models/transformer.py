"""Decoder-only transformer LM in flax.linen: GPT-2 and Llama shapes, with a KV cache.

Shapes in names: B batch, T query length, S key/cache length, C model width,
H query heads, K key/value heads, G = H // K query heads per KV head, D head dim.

`arch='gpt2'`: learned positions, LayerNorm, GELU (tanh), biases, tied embeddings.
`arch='llama'`: RoPE, RMSNorm, SwiGLU, grouped-query attention, no biases.
Every choice can also be overridden field by field (e.g. a Llama with untied head).

The KV cache is an explicit pytree passed in and returned (no mutable collections),
so one jitted function serves prefill and decode, and each batch row carries its
own positions (what continuous batching needs).

Every parameter names its axes for sharding (`nn.with_logical_partitioning`): 'embed'
(model width), 'heads'/'kv_heads'/'head_dim', 'mlp', 'vocab', 'norm', and 'layers' for the
stacked weights of `scan_layers=True`. genai/parallel/sharding.py maps them to mesh axes.
The fused q/k/v kernel is laid out [C, K, G + 2, D] (per KV head: its G query heads, then
its key and value), so splitting K over devices keeps whole attention groups together.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

_ARCH_DEFAULTS = {
    'gpt2': dict(positions='learned', norm='layernorm', mlp='gelu', use_bias=True,
                 tie_embeddings=True),
    'llama': dict(positions='rope', norm='rmsnorm', mlp='swiglu', use_bias=False,
                  tie_embeddings=False),
}


# What a rematerialised layer saves for the backward pass (everything else is recomputed).
_REMAT_POLICIES = {
    'none': None,
    'full': jax.checkpoint_policies.nothing_saveable,
    'dots': jax.checkpoint_policies.checkpoint_dots,
    'dots_no_batch': jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def _init(init, *names):
  """An initialiser that also names its parameter's axes for sharding."""
  return nn.with_logical_partitioning(init, names)


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Hyper-parameters of the LM. `None` fields take the `arch` default."""
  vocab_size: int
  num_layers: int = 4
  num_heads: int = 4
  d_model: int = 128
  num_kv_heads: int | None = None      # None: = num_heads (no GQA).
  d_ff: int | None = None              # None: 4*C (gelu) or 8/3*C rounded to 64 (swiglu).
  d_head: int | None = None            # None: C / H. Set when heads were pruned (genai/compress).
  max_len: int = 1024                  # Learned positions table size / max cache length.
  arch: str = 'gpt2'
  positions: str | None = None         # 'learned' | 'rope'
  norm: str | None = None              # 'layernorm' | 'rmsnorm'
  mlp: str | None = None               # 'gelu' (tanh, GPT-2) | 'gelu_erf' (exact, nanoGPT) | 'swiglu'
  use_bias: bool | None = None
  tie_embeddings: bool | None = None
  norm_eps: float = 1e-5
  rope_theta: float = 10000.0
  dropout: float = 0.0                 # Embedding, attention-prob and residual dropout.
  dtype: str = 'float32'               # Compute dtype; params stay float32.
  remat: str = 'none'                  # 'none' | 'full' | 'dots' | 'dots_no_batch': what a
                                       # layer keeps for backward (nn.remat policies).
  scan_layers: bool = False            # nn.scan over layers: one compiled layer, stacked params.

  def __post_init__(self):
    if self.arch not in _ARCH_DEFAULTS:
      raise ValueError(f"model.arch={self.arch!r} is unknown; use one of {sorted(_ARCH_DEFAULTS)}.")
    for k, v in _ARCH_DEFAULTS[self.arch].items():
      if getattr(self, k) is None:
        object.__setattr__(self, k, v)
    if self.num_kv_heads is None:
      object.__setattr__(self, 'num_kv_heads', self.num_heads)
    if self.d_ff is None:
      d_ff = 4 * self.d_model if self.mlp != 'swiglu' else 64 * math.ceil(8 * self.d_model / 3 / 64)
      object.__setattr__(self, 'd_ff', d_ff)
    if self.d_head is None and self.d_model % self.num_heads:
      raise ValueError(f'model.d_model={self.d_model} must be divisible by model.num_heads={self.num_heads}.')
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f'model.num_heads={self.num_heads} must be divisible by '
                       f'model.num_kv_heads={self.num_kv_heads}.')
    checks = dict(positions=('learned', 'rope'), norm=('layernorm', 'rmsnorm'),
                  mlp=('gelu', 'gelu_erf', 'swiglu'), remat=tuple(_REMAT_POLICIES))
    for k, allowed in checks.items():
      if getattr(self, k) not in allowed:
        raise ValueError(f'model.{k}={getattr(self, k)!r} is unknown; use one of {allowed}.')

  @property
  def head_dim(self) -> int:
    return self.d_head or self.d_model // self.num_heads

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> 'TransformerConfig':
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
      raise ValueError(f'Unknown model config keys {sorted(unknown)}; known keys: {sorted(names)}.')
    return cls(**d)

  def num_params(self, include_embeddings: bool = True) -> int:
    c, f, l = self.d_model, self.d_ff, self.num_layers
    qkv = c * (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
    mlp = c * f * (3 if self.mlp == 'swiglu' else 2)
    per_layer = qkv + self.num_heads * self.head_dim * c + mlp
    emb = self.vocab_size * c * (1 if self.tie_embeddings else 2)
    emb += self.max_len * c if self.positions == 'learned' else 0
    return l * per_layer + (emb if include_embeddings else 0)

  def flops_per_token(self, seq_len: int) -> int:
    """Training FLOPs per token (forward + backward = 3x forward), PaLM appendix B style."""
    n = self.num_params(include_embeddings=False) + self.vocab_size * self.d_model
    return 6 * n + 12 * self.num_layers * self.num_heads * self.head_dim * seq_len


def init_cache(config: TransformerConfig, batch_size: int, cache_len: int | None = None,
               dtype=jnp.float32) -> dict[str, Any]:
  """An empty KV cache {'k', 'v'}: per layer [B, K, S, D] (batch, KV heads, positions, head
  dim), as a tuple of L arrays, or one [L, B, K, S, D] array when layers are scanned.

  One buffer per layer lets a jitted decode loop update each in place: with one stacked
  array, every layer's write copied the whole cache. Positions sit next to head dim, so
  attention reads each (row, head) as one contiguous [S, D] matrix, with no transpose.
  """
  cache_len = cache_len or config.max_len
  shape = (batch_size, config.num_kv_heads, cache_len, config.head_dim)
  if config.scan_layers:
    return {n: jnp.zeros((config.num_layers,) + shape, dtype) for n in ('k', 'v')}
  return {n: tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
          for n in ('k', 'v')}


def _rope(x_BTHD: Array, positions_BT: Array, theta: float) -> Array:
  """Rotary embedding, HF/Llama 'rotate half' convention."""
  d = x_BTHD.shape[-1]
  inv_freq = 1.0 / (theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
  ang_BTF = positions_BT[..., None].astype(jnp.float32) * inv_freq
  cos = jnp.cos(ang_BTF)[:, :, None, :]
  sin = jnp.sin(ang_BTF)[:, :, None, :]
  x1, x2 = jnp.split(x_BTHD.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BTHD.dtype)


def _norm(cfg: TransformerConfig, name: str) -> nn.Module:
  scale = _init(nn.initializers.ones, 'norm')
  if cfg.norm == 'rmsnorm':
    return nn.RMSNorm(epsilon=cfg.norm_eps, dtype=jnp.dtype(cfg.dtype), scale_init=scale,
                      name=name)
  return nn.LayerNorm(epsilon=cfg.norm_eps, use_bias=cfg.use_bias, dtype=jnp.dtype(cfg.dtype),
                      scale_init=scale, bias_init=_init(nn.initializers.zeros, 'norm'),
                      name=name)


class Attention(nn.Module):
  config: TransformerConfig

  @nn.compact
  def __call__(self, x_BTC, positions_BT, cache_kv, deterministic, causal_arange=False):
    cfg = self.config
    h, k, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    g = h // k
    b, t, _ = x_BTC.shape
    # One fused projection for q, k and v (one larger matmul), grouped by KV head.
    qkv_BTKJD = nn.DenseGeneral(
        (k, g + 2, d), use_bias=cfg.use_bias, dtype=x_BTC.dtype, name='qkv',
        kernel_init=_init(nn.initializers.normal(0.02), 'embed', 'kv_heads', None, 'head_dim'),
        bias_init=_init(nn.initializers.zeros, 'kv_heads', None, 'head_dim'))(x_BTC)
    q_BTHD = qkv_BTKJD[:, :, :, :g].reshape(b, t, h, d)
    k_BTKD = qkv_BTKJD[:, :, :, g]
    v_BTKD = qkv_BTKJD[:, :, :, g + 1]
    if cfg.positions == 'rope':
      q_BTHD = _rope(q_BTHD, positions_BT, cfg.rope_theta)
      k_BTKD = _rope(k_BTKD, positions_BT, cfg.rope_theta)

    if cache_kv is None and causal_arange and (deterministic or cfg.dropout == 0.0):
      # Training/scoring fast path (positions 0..T-1, no attention dropout): XLA's fused
      # causal attention, ~5% faster per step on CPU than the masked einsums below.
      y_BTC = jax.nn.dot_product_attention(q_BTHD, k_BTKD, v_BTKD, is_causal=True).reshape(
          b, t, h * d)
      return self._out(y_BTC), None

    if cache_kv is None:
      keys_BKSD, values_BKSD = k_BTKD.transpose(0, 2, 1, 3), v_BTKD.transpose(0, 2, 1, 3)
      key_pos_BS, new_kv = positions_BT, None
    else:
      # Write this chunk at each row's positions; attend over the whole cache.
      ck, cv = cache_kv
      rows = jnp.arange(b)[:, None]
      # Advanced indices around a slice: the update is laid out [B, T, K, D], as k_BTKD is.
      at = (rows, slice(None), positions_BT)
      ck = ck.at[at].set(k_BTKD.astype(ck.dtype))
      cv = cv.at[at].set(v_BTKD.astype(cv.dtype))
      new_kv = (ck, cv)
      keys_BKSD, values_BKSD = ck.astype(x_BTC.dtype), cv.astype(x_BTC.dtype)
      s_len = keys_BKSD.shape[2]
      key_pos_BS = jnp.broadcast_to(jnp.arange(s_len), (b, s_len))

    # Causal mask from positions: key j is visible to query i iff pos_j <= pos_i.
    mask_BTS = key_pos_BS[:, None, :] <= positions_BT[:, :, None]
    q_BTKGD = q_BTHD.reshape(b, t, k, g, d)
    att_BKGTS = jnp.einsum('btkgd,bksd->bkgts', q_BTKGD, keys_BKSD) / jnp.sqrt(d).astype(x_BTC.dtype)
    att_BKGTS = jnp.where(mask_BTS[:, None, None], att_BKGTS, jnp.finfo(att_BKGTS.dtype).min)
    att_BKGTS = jax.nn.softmax(att_BKGTS.astype(jnp.float32), axis=-1).astype(x_BTC.dtype)
    att_BKGTS = nn.Dropout(cfg.dropout)(att_BKGTS, deterministic=deterministic)
    y_BTKGD = jnp.einsum('bkgts,bksd->btkgd', att_BKGTS, values_BKSD)
    return self._out(y_BTKGD.reshape(b, t, h * d)), new_kv

  def _out(self, y_BTC):
    cfg = self.config
    out_init = nn.initializers.normal(0.02 / math.sqrt(2 * cfg.num_layers))
    return nn.Dense(cfg.d_model, use_bias=cfg.use_bias, kernel_init=_init(out_init, 'heads', 'embed'),
                    bias_init=_init(nn.initializers.zeros, 'embed'),
                    dtype=y_BTC.dtype, name='out')(y_BTC)


class Mlp(nn.Module):
  config: TransformerConfig

  @nn.compact
  def __call__(self, x_BTC):
    cfg = self.config
    init = nn.initializers.normal(0.02)
    out_init = nn.initializers.normal(0.02 / math.sqrt(2 * cfg.num_layers))
    if cfg.mlp == 'swiglu':
      # Gate and up projections fused into one matmul, kernel [C, 2, F].
      gu_BT2F = nn.DenseGeneral(
          (2, cfg.d_ff), use_bias=cfg.use_bias, dtype=x_BTC.dtype, name='fc_in',
          kernel_init=_init(init, 'embed', None, 'mlp'),
          bias_init=_init(nn.initializers.zeros, None, 'mlp'))(x_BTC)
      h_BTF = nn.silu(gu_BT2F[:, :, 0]) * gu_BT2F[:, :, 1]
    else:
      h_BTF = nn.gelu(nn.Dense(cfg.d_ff, use_bias=cfg.use_bias, kernel_init=_init(init, 'embed', 'mlp'),
                               bias_init=_init(nn.initializers.zeros, 'mlp'),
                               dtype=x_BTC.dtype, name='fc_in')(x_BTC),
                      approximate=cfg.mlp == 'gelu')
    return nn.Dense(cfg.d_model, use_bias=cfg.use_bias, kernel_init=_init(out_init, 'mlp', 'embed'),
                    bias_init=_init(nn.initializers.zeros, 'embed'), dtype=x_BTC.dtype,
                    name='fc_out')(h_BTF)


class Block(nn.Module):
  """One pre-norm layer: (x, positions, this layer's (k, v) cache or None) -> (x, new kv)."""
  config: TransformerConfig
  deterministic: bool = True
  causal_arange: bool = False

  @nn.compact
  def __call__(self, x_BTC, positions_BT, cache_kv):
    cfg, deterministic = self.config, self.deterministic
    drop = nn.Dropout(cfg.dropout)
    y, new_kv = Attention(cfg, name='attn')(
        _norm(cfg, 'attn_norm')(x_BTC),
        positions_BT, cache_kv, deterministic, self.causal_arange)
    x_BTC = x_BTC + drop(y, deterministic=deterministic)
    y = Mlp(cfg, name='mlp')(_norm(cfg, 'mlp_norm')(x_BTC))
    x_BTC = x_BTC + drop(y, deterministic=deterministic)
    return x_BTC, new_kv


class Transformer(nn.Module):
  """tokens [B, T] -> logits [B, T, V] (float32), and the updated cache if one was given."""
  config: TransformerConfig

  @nn.compact
  def __call__(self, tokens_BT: Array, *, positions_BT: Array | None = None,
               cache: dict[str, Array] | None = None, deterministic: bool = True):
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    b, t = tokens_BT.shape
    causal_arange = positions_BT is None  # plain causal LM over positions 0..T-1
    if causal_arange:
      positions_BT = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    embed = nn.Embed(cfg.vocab_size, cfg.d_model, name='embed',
                     embedding_init=_init(nn.initializers.normal(0.02), 'vocab', 'embed'))
    x_BTC = embed(tokens_BT).astype(dtype)
    if cfg.positions == 'learned':
      pos_embed = nn.Embed(cfg.max_len, cfg.d_model, name='pos_embed',
                           embedding_init=_init(nn.initializers.normal(0.02), None, 'embed'))
      if causal_arange:
        # A slice, not a gather: its gradient is a sum over the batch rather than a
        # scatter-add (which XLA CPU runs as one slow serial fusion).
        x_BTC = x_BTC + pos_embed.embedding[None, :t].astype(dtype)
      else:
        x_BTC = x_BTC + pos_embed(positions_BT).astype(dtype)
    x_BTC = nn.Dropout(cfg.dropout)(x_BTC, deterministic=deterministic)

    block = Block
    if cfg.remat != 'none':
      block = nn.remat(Block, policy=_REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      # One traced layer applied L times: compile time independent of depth. Params and
      # the cache carry a leading 'layers' axis.
      layers = nn.scan(block, variable_axes={'params': 0}, split_rngs={'params': True, 'dropout': True},
                       in_axes=(nn.broadcast, 0), length=cfg.num_layers,
                       metadata_params={nn.PARTITION_NAME: 'layers'})
      cache_kv = None if cache is None else (jnp.stack(cache['k']), jnp.stack(cache['v']))
      x_BTC, kv = layers(cfg, deterministic, causal_arange, name='layers')(
          x_BTC, positions_BT, cache_kv)
      new_cache = None if cache is None else {'k': kv[0], 'v': kv[1]}
    else:
      new_k, new_v = [], []
      for i in range(cfg.num_layers):
        layer_kv = None if cache is None else (cache['k'][i], cache['v'][i])
        x_BTC, kv = block(cfg, deterministic, causal_arange, name=f'layer_{i}')(
            x_BTC, positions_BT, layer_kv)
        if kv is not None:
          new_k.append(kv[0])
          new_v.append(kv[1])
      new_cache = None if cache is None else {'k': tuple(new_k), 'v': tuple(new_v)}
    x_BTC = _norm(cfg, 'final_norm')(x_BTC)
    if cfg.tie_embeddings:
      logits_BTV = embed.attend(x_BTC)
    else:
      logits_BTV = nn.Dense(cfg.vocab_size, use_bias=False, dtype=dtype, name='lm_head',
                            kernel_init=_init(nn.initializers.normal(0.02), 'embed', 'vocab'))(x_BTC)
    return logits_BTV.astype(jnp.float32), new_cache
