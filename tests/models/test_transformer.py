"""Transformer LM: numpy reference forward pass, KV-cache parity, config errors."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from genai.models.transformer import Transformer, TransformerConfig, init_cache


# ---- An independent numpy implementation of both shapes (written from the papers). ----

def _layernorm(x, p, eps):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  y = (x - mu) / np.sqrt(var + eps) * p['scale']
  return y + p['bias'] if 'bias' in p else y


def _rmsnorm(x, p, eps):
  return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps) * p['scale']


def _dense(x, p):
  y = x @ p['kernel']
  return y + p['bias'] if 'bias' in p else y


def _rope_np(x, theta):  # x [T, H, D], positions 0..T-1
  t, _, d = x.shape
  inv = 1.0 / theta ** (np.arange(0, d, 2) / d)
  ang = np.arange(t)[:, None] * inv[None]
  cos, sin = np.cos(ang)[:, None], np.sin(ang)[:, None]
  x1, x2 = x[..., :d // 2], x[..., d // 2:]
  return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def reference_forward(cfg, params, tokens):
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  norm = _layernorm if cfg.norm == 'layernorm' else _rmsnorm
  h, k, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  outs = []
  for seq in np.asarray(tokens):
    t = len(seq)
    x = p['embed']['embedding'][seq]
    if cfg.positions == 'learned':
      x = x + p['pos_embed']['embedding'][:t]
    for i in range(cfg.num_layers):
      lp = p[f'layer_{i}']
      a = norm(x, lp['attn_norm'], cfg.norm_eps)
      # Fused kernel [C, K, G + 2, D]: per KV head, its G query heads, its key, its value.
      qkv = np.einsum('tc,ckjd->tkjd', a, lp['attn']['qkv']['kernel'])
      qkv = qkv + lp['attn']['qkv'].get('bias', 0)
      g = h // k
      q = qkv[:, :, :g].reshape(t, h, d)
      kk, v = qkv[:, :, g], qkv[:, :, g + 1]
      if cfg.positions == 'rope':
        q, kk = _rope_np(q, cfg.rope_theta), _rope_np(kk, cfg.rope_theta)
      heads = []
      for head in range(h):
        kv_head = head // (h // k)  # query heads share KV heads in consecutive groups
        s = q[:, head] @ kk[:, kv_head].T / np.sqrt(d)
        s = np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)
        w = np.exp(s - s.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        heads.append(w @ v[:, kv_head])
      x = x + _dense(np.concatenate(heads, -1), lp['attn']['out'])
      m = norm(x, lp['mlp_norm'], cfg.norm_eps)
      if cfg.mlp == 'swiglu':
        gu = np.einsum('tc,cjf->tjf', m, lp['mlp']['fc_in']['kernel'])
        gu = gu + lp['mlp']['fc_in'].get('bias', 0)
        gate, up = gu[:, 0], gu[:, 1]
        hid = gate / (1 + np.exp(-gate)) * up
      elif cfg.mlp == 'gelu_erf':
        u = _dense(m, lp['mlp']['fc_in'])
        hid = 0.5 * u * (1 + scipy.special.erf(u / np.sqrt(2)))
      else:
        u = _dense(m, lp['mlp']['fc_in'])
        hid = 0.5 * u * (1 + np.tanh(np.sqrt(2 / np.pi) * (u + 0.044715 * u ** 3)))
      x = x + _dense(hid, lp['mlp']['fc_out'])
    x = norm(x, p['final_norm'], cfg.norm_eps)
    head = p['embed']['embedding'].T if cfg.tie_embeddings else p['lm_head']['kernel']
    outs.append(x @ head)
  return np.stack(outs)


CONFIGS = {
    'gpt2': TransformerConfig(vocab_size=37, num_layers=2, num_heads=4, d_model=32, max_len=24),
    'gpt2_gelu_erf': TransformerConfig(vocab_size=37, num_layers=1, num_heads=4, d_model=32,
                                       max_len=24, mlp='gelu_erf'),
    'llama_gqa': TransformerConfig(vocab_size=37, num_layers=2, num_heads=4, num_kv_heads=2,
                                   d_model=32, max_len=24, arch='llama'),
    'llama_tied_mqa': TransformerConfig(vocab_size=37, num_layers=1, num_heads=4, num_kv_heads=1,
                                        d_model=32, max_len=24, arch='llama', tie_embeddings=True),
}


def _init(cfg, seed=0, t=12, b=2):
  model = Transformer(cfg)
  tokens = jax.random.randint(jax.random.key(seed + 1), (b, t), 0, cfg.vocab_size)
  params = nn.unbox(model.init(jax.random.key(seed), tokens)['params'])
  # Random norms/biases so the reference checks them too (init is ones/zeros).
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed + 2), len(leaves))
  leaves = [l + 0.1 * jax.random.normal(k_, l.shape) for l, k_ in zip(leaves, keys)]
  return model, jax.tree.unflatten(tree, leaves), tokens


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_forward_matches_numpy_reference(name):
  cfg = CONFIGS[name]
  model, params, tokens = _init(cfg)
  logits, cache = model.apply({'params': params}, tokens)
  assert logits.shape == (2, 12, cfg.vocab_size) and logits.dtype == jnp.float32
  assert cache is None
  np.testing.assert_allclose(logits, reference_forward(cfg, params, tokens), atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize('name', [n if n in ('gpt2', 'llama_gqa') else  # the rest: slow tier
                                  pytest.param(n, marks=pytest.mark.slow) for n in sorted(CONFIGS)])
def test_kv_cache_decoding_equals_full_forward(name):
  cfg = CONFIGS[name]
  model, params, tokens = _init(cfg, t=14)
  full, _ = model.apply({'params': params}, tokens)
  cache = init_cache(cfg, batch_size=2, cache_len=20)
  pos = jnp.broadcast_to(jnp.arange(5), (2, 5))
  chunks = []
  logits, cache = model.apply({'params': params}, tokens[:, :5], positions_BT=pos, cache=cache)
  chunks.append(logits)
  for i in range(5, 14):  # then one token at a time
    logits, cache = model.apply({'params': params}, tokens[:, i:i + 1],
                                positions_BT=jnp.full((2, 1), i), cache=cache)
    chunks.append(logits)
  np.testing.assert_allclose(jnp.concatenate(chunks, 1), full, atol=1e-5, rtol=1e-5)
  assert len(cache['k']) == cfg.num_layers  # one [B, K, S, D] buffer per layer
  assert cache['k'][0].shape == (2, cfg.num_kv_heads, 20, cfg.head_dim)


@pytest.mark.slow  # long compiles; forward and KV-cache parity stay fast
def test_cache_rows_can_sit_at_different_positions():
  """Continuous batching: each row decodes at its own position."""
  cfg = CONFIGS['llama_gqa']
  model, params, tokens = _init(cfg, t=8)
  full, _ = model.apply({'params': params}, tokens)
  cache = init_cache(cfg, batch_size=2, cache_len=8)
  # Row 0 prefilled with 5 tokens, row 1 with 3 (its other slots hold garbage, masked).
  pos = jnp.array([[0, 1, 2, 3, 4], [0, 1, 2, 6, 7]])
  _, cache = model.apply({'params': params}, tokens[:, :5], positions_BT=pos, cache=cache)
  # Next: row 0 at position 5, row 1 at position 3.
  nxt = jnp.stack([tokens[0, 5], tokens[1, 3]])[:, None]
  logits, _ = model.apply({'params': params}, nxt, positions_BT=jnp.array([[5], [3]]), cache=cache)
  np.testing.assert_allclose(logits[0, 0], full[0, 5], atol=1e-5)
  # Row 1's stale slots 6, 7 are beyond position 3 and masked out.
  np.testing.assert_allclose(logits[1, 0], full[1, 3], atol=1e-5)


@pytest.mark.slow  # long compiles; forward and KV-cache parity stay fast
def test_dropout_is_active_only_in_training():
  cfg = TransformerConfig(vocab_size=11, num_layers=1, num_heads=2, d_model=16, max_len=8,
                          dropout=0.5)
  model = Transformer(cfg)
  tokens = jnp.zeros((2, 8), jnp.int32)
  params = model.init(jax.random.key(0), tokens)['params']
  a, _ = model.apply({'params': params}, tokens)
  b, _ = model.apply({'params': params}, tokens)
  c, _ = model.apply({'params': params}, tokens, deterministic=False,
                     rngs={'dropout': jax.random.key(1)})
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_param_count_formula_matches_init():
  for cfg in CONFIGS.values():
    _, params, _ = _init(cfg)
    n = sum(x.size for x in jax.tree.leaves(params))
    norms = sum(x.size for path, x in jax.tree_util.tree_leaves_with_path(params)
                if 'norm' in jax.tree_util.keystr(path) or 'bias' in jax.tree_util.keystr(path))
    assert cfg.num_params() == n - norms


@pytest.mark.parametrize('kwargs, match', [
    (dict(arch='gpt3'), 'model.arch'),
    (dict(d_model=30, num_heads=4), 'divisible by model.num_heads'),
    (dict(num_heads=4, num_kv_heads=3), 'num_kv_heads'),
    (dict(norm='batchnorm'), 'model.norm'),
])
def test_bad_config_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    TransformerConfig(vocab_size=10, **kwargs)


def test_unknown_config_key_error():
  with pytest.raises(ValueError, match=r"Unknown model config keys \['n_layer'\]"):
    TransformerConfig.from_dict({'vocab_size': 10, 'n_layer': 3})


def test_gelu_erf_is_the_exact_gelu_not_the_tanh_one():
  cfg = CONFIGS['gpt2_gelu_erf']
  model, params, tokens = _init(cfg)
  logits = np.asarray(model.apply({'params': params}, tokens)[0])
  err_exact = np.abs(logits - reference_forward(cfg, params, tokens)).max()
  err_tanh = np.abs(logits - reference_forward(dataclasses.replace(cfg, mlp='gelu'), params,
                                               tokens)).max()
  assert err_exact < 1e-5 < err_tanh  # measured: 7e-7 and 3e-4


def _stack_layers(params, num_layers):
  """Unrolled params {layer_i: ...} -> scan_layers params {layers: stacked}."""
  out = {k: v for k, v in params.items() if not k.startswith('layer_')}
  out['layers'] = jax.tree.map(lambda *xs: jnp.stack(xs),
                               *[params[f'layer_{i}'] for i in range(num_layers)])
  return out


@pytest.mark.slow  # long compiles; forward and KV-cache parity stay fast
@pytest.mark.parametrize('name', ['gpt2', 'llama_gqa'])
def test_scan_layers_and_remat_equal_the_unrolled_model(name):
  cfg = CONFIGS[name]
  model, params, tokens = _init(cfg)
  variants = [dataclasses.replace(cfg, scan_layers=True),
              dataclasses.replace(cfg, remat='full'),
              dataclasses.replace(cfg, scan_layers=True, remat='dots')]

  def loss(m, p):
    return jnp.mean(m.apply({'params': p}, tokens)[0] ** 2)

  ref_loss, ref_grads = jax.value_and_grad(lambda p: loss(model, p))(params)
  for var in variants:
    m = Transformer(var)
    p = _stack_layers(params, cfg.num_layers) if var.scan_layers else params
    shapes = jax.tree.map(jnp.shape, nn.unbox(m.init(jax.random.key(0), tokens)['params']))
    assert shapes == jax.tree.map(jnp.shape, p)
    value, grads = jax.value_and_grad(lambda p_: loss(m, p_))(p)
    np.testing.assert_allclose(value, ref_loss, rtol=1e-5)
    want = _stack_layers(ref_grads, cfg.num_layers) if var.scan_layers else ref_grads
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4), grads, want)
  # The cache path under scan equals the unrolled one.
  m = Transformer(dataclasses.replace(cfg, scan_layers=True))
  pos = jnp.broadcast_to(jnp.arange(12), (2, 12))
  a, ca = model.apply({'params': params}, tokens, positions_BT=pos, cache=init_cache(cfg, 2, 16))
  b, cb = m.apply({'params': _stack_layers(params, cfg.num_layers)}, tokens, positions_BT=pos,
                  cache=init_cache(cfg, 2, 16))
  np.testing.assert_allclose(a, b, atol=1e-5)
  np.testing.assert_allclose(ca['k'], cb['k'], atol=1e-6)


@pytest.mark.slow  # long compiles; forward and KV-cache parity stay fast
def test_bfloat16_compute_keeps_float32_params_and_close_logits():
  cfg = CONFIGS['llama_gqa']
  model, params, tokens = _init(cfg)
  bf = Transformer(dataclasses.replace(cfg, dtype='bfloat16'))
  init = nn.unbox(bf.init(jax.random.key(0), tokens)['params'])
  assert {x.dtype for x in jax.tree.leaves(init)} == {jnp.dtype(jnp.float32)}
  a = model.apply({'params': params}, tokens)[0]
  b = bf.apply({'params': params}, tokens)[0]
  assert b.dtype == jnp.float32
  err = float(jnp.abs(a - b).max() / jnp.abs(a).max())
  assert 0 < err < 0.05  # bf16 has 8 mantissa bits


@pytest.mark.slow  # long compiles; forward and KV-cache parity stay fast
@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_every_parameter_names_its_axes(name):
  cfg = CONFIGS[name]
  tokens = jnp.zeros((1, 4), jnp.int32)
  for c in (cfg, dataclasses.replace(cfg, scan_layers=True)):
    boxed = Transformer(c).init(jax.random.key(0), tokens)['params']
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    for leaf in leaves:
      assert isinstance(leaf, nn.LogicallyPartitioned), leaf
      assert len(leaf.names) == leaf.value.ndim
      if c.scan_layers and leaf.value.ndim and leaf.names[0] == 'layers':
        assert leaf.value.shape[0] == c.num_layers
