"""genai transformer params <-> a flat, framework-neutral set of named matrices.

Every checkpoint format (HF safetensors, GGUF) is translated to and from this *canonical*
form, so the genai-specific layout lives in one place. Canonical names and shapes (numpy,
matrices as [in, out], i.e. `y = x @ W`):

  embed [V, C]   pos_embed [P, C] (learned positions)   lm_head [C, V] (untied head)
  final_norm.scale [C], final_norm.bias [C]
  per layer i:
    {i}.attn_norm.scale/.bias [C]   {i}.mlp_norm.scale/.bias [C]
    {i}.q [C, H*D]  {i}.k [C, K*D]  {i}.v [C, K*D]  {i}.o [H*D, C]   (+ .bias [out])
    {i}.fc_in [C, F] (gelu)  or  {i}.gate [C, F] and {i}.up [C, F] (swiglu)
    {i}.fc_out [F, C]                                                 (+ .bias [out])
Heads are contiguous blocks of D columns; query head h uses KV head h // (H / K); RoPE
uses the rotate-half convention (HF Llama's).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from genai.models.transformer import Transformer, TransformerConfig


def expected_shapes(cfg: TransformerConfig) -> dict[str, Any]:
  """The genai param tree of `cfg` as shapes (no memory allocated)."""
  abstract = jax.eval_shape(lambda: Transformer(cfg).init(
      jax.random.key(0), jnp.zeros((1, 1), jnp.int32))['params'])
  return jax.tree.map(lambda a: a.shape, nn.unbox(abstract))


def _unstack_layers(params: dict, num_layers: int) -> dict:
  if 'layers' not in params:
    return params
  out = {k: v for k, v in params.items() if k != 'layers'}
  for i in range(num_layers):
    out[f'layer_{i}'] = jax.tree.map(lambda x, i=i: x[i], params['layers'])
  return out


def _stack_layers(params: dict, num_layers: int) -> dict:
  out = {k: v for k, v in params.items() if not k.startswith('layer_')}
  out['layers'] = jax.tree.map(lambda *xs: np.stack(xs),
                               *[params[f'layer_{i}'] for i in range(num_layers)])
  return out


def to_genai(cfg: TransformerConfig, t: dict[str, np.ndarray], source: str = 'checkpoint'
             ) -> dict:
  """Canonical tensors -> genai params (float32), checked against `cfg` tensor by tensor."""
  h, k, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  g = h // k
  used: set[str] = set()

  def get(name, shape=None):
    if name not in t:
      raise ValueError(f'{source}: tensor {name!r} is missing (needed by the config: '
                       f'arch={cfg.arch}, layers={cfg.num_layers}, bias={cfg.use_bias}).')
    x = np.asarray(t[name], np.float32)
    if shape is not None and x.shape != tuple(shape):
      raise ValueError(f'{source}: tensor {name!r} has shape {x.shape}, but the config '
                       f'needs {tuple(shape)}; the weights and the config (config.json or GGUF metadata) disagree.')
    used.add(name)
    return x

  def dense(prefix, shape, bias_shape):
    p = {'kernel': get(prefix, shape)}
    if cfg.use_bias:
      p['bias'] = get(prefix + '.bias', bias_shape)
    return p

  def norm(prefix):
    p = {'scale': get(prefix + '.scale', (cfg.d_model,))}
    if cfg.norm == 'layernorm' and cfg.use_bias:
      p['bias'] = get(prefix + '.bias', (cfg.d_model,))
    return p

  c, f = cfg.d_model, cfg.d_ff
  params: dict[str, Any] = {'embed': {'embedding': get('embed', (cfg.vocab_size, c))}}
  if cfg.positions == 'learned':
    pos = get('pos_embed')
    if pos.shape[1] != c or pos.shape[0] < cfg.max_len:
      raise ValueError(f'{source}: tensor \'pos_embed\' has shape {pos.shape}; the config '
                       f'needs ({cfg.max_len}, {c}) (lower model.max_len to at most {pos.shape[0]}).')
    params['pos_embed'] = {'embedding': pos[:cfg.max_len]}
  for i in range(cfg.num_layers):
    q = get(f'{i}.q', (c, h * d)).reshape(c, k, g, d)
    kk = get(f'{i}.k', (c, k * d)).reshape(c, k, 1, d)
    v = get(f'{i}.v', (c, k * d)).reshape(c, k, 1, d)
    qkv = {'kernel': np.concatenate([q, kk, v], axis=2)}
    if cfg.use_bias:
      qb = get(f'{i}.q.bias', (h * d,)).reshape(k, g, d)
      kb = get(f'{i}.k.bias', (k * d,)).reshape(k, 1, d)
      vb = get(f'{i}.v.bias', (k * d,)).reshape(k, 1, d)
      qkv['bias'] = np.concatenate([qb, kb, vb], axis=1)
    layer = {'attn_norm': norm(f'{i}.attn_norm'), 'mlp_norm': norm(f'{i}.mlp_norm'),
             'attn': {'qkv': qkv, 'out': dense(f'{i}.o', (h * d, c), (c,))}}
    if cfg.mlp == 'swiglu':
      fc_in = {'kernel': np.stack([get(f'{i}.gate', (c, f)), get(f'{i}.up', (c, f))], axis=1)}
      if cfg.use_bias:
        fc_in['bias'] = np.stack([get(f'{i}.gate.bias', (f,)), get(f'{i}.up.bias', (f,))])
    else:
      fc_in = dense(f'{i}.fc_in', (c, f), (f,))
    layer['mlp'] = {'fc_in': fc_in, 'fc_out': dense(f'{i}.fc_out', (f, c), (c,))}
    params[f'layer_{i}'] = layer
  params['final_norm'] = norm('final_norm')
  if not cfg.tie_embeddings:
    params['lm_head'] = {'kernel': get('lm_head', (c, cfg.vocab_size))}
  unused = sorted(set(t) - used)
  if unused:
    raise ValueError(f'{source}: tensors {unused[:5]}{"..." if len(unused) > 5 else ""} are '
                     'not used by the config; it describes a different architecture '
                     '(check num_layers, use_bias, tie_embeddings).')
  if cfg.scan_layers:
    params = _stack_layers(params, cfg.num_layers)
  want = expected_shapes(cfg)
  got = jax.tree.map(lambda x: x.shape, params)
  assert got == want, (got, want)  # a bug here, not bad input: the checks above name tensors
  return params


def from_genai(cfg: TransformerConfig, params: Any) -> dict[str, np.ndarray]:
  """genai params -> canonical float32 tensors (the inverse of `to_genai`)."""
  params = _unstack_layers(jax.tree.map(lambda x: np.asarray(x, np.float32), nn.unbox(params)),
                           cfg.num_layers)
  h, k, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  g = h // k
  c = cfg.d_model
  t = {'embed': params['embed']['embedding']}
  if cfg.positions == 'learned':
    t['pos_embed'] = params['pos_embed']['embedding']

  def put_dense(name, p):
    t[name] = p['kernel']
    if 'bias' in p:
      t[name + '.bias'] = p['bias']

  def put_norm(name, p):
    t[name + '.scale'] = p['scale']
    if 'bias' in p:
      t[name + '.bias'] = p['bias']

  for i in range(cfg.num_layers):
    lp = params[f'layer_{i}']
    w = lp['attn']['qkv']['kernel']  # [C, K, G + 2, D]
    t[f'{i}.q'] = w[:, :, :g].reshape(c, h * d)
    t[f'{i}.k'] = w[:, :, g].reshape(c, k * d)
    t[f'{i}.v'] = w[:, :, g + 1].reshape(c, k * d)
    if 'bias' in lp['attn']['qkv']:
      b = lp['attn']['qkv']['bias']
      t[f'{i}.q.bias'] = b[:, :g].reshape(h * d)
      t[f'{i}.k.bias'] = b[:, g].reshape(k * d)
      t[f'{i}.v.bias'] = b[:, g + 1].reshape(k * d)
    put_dense(f'{i}.o', lp['attn']['out'])
    put_norm(f'{i}.attn_norm', lp['attn_norm'])
    put_norm(f'{i}.mlp_norm', lp['mlp_norm'])
    fc_in = lp['mlp']['fc_in']
    if cfg.mlp == 'swiglu':
      t[f'{i}.gate'], t[f'{i}.up'] = fc_in['kernel'][:, 0], fc_in['kernel'][:, 1]
      if 'bias' in fc_in:
        t[f'{i}.gate.bias'], t[f'{i}.up.bias'] = fc_in['bias'][0], fc_in['bias'][1]
    else:
      put_dense(f'{i}.fc_in', fc_in)
    put_dense(f'{i}.fc_out', lp['mlp']['fc_out'])
  put_norm('final_norm', params['final_norm'])
  if 'lm_head' in params:
    t['lm_head'] = params['lm_head']['kernel']
  return t
