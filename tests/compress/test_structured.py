"""Structured pruning: all kept == original; pruned == original with removed rows zeroed."""


import flax.linen as nn
import jax
import numpy as np
import pytest

from genai.compress.structured import prune_structure
from genai.models.transformer import Transformer, TransformerConfig
from genai.pretrained import convert

CFGS = {
    'gpt2': TransformerConfig(vocab_size=40, num_layers=2, num_heads=4, d_model=32, max_len=16),
    'llama_gqa': TransformerConfig(vocab_size=40, num_layers=2, num_heads=6, num_kv_heads=2,
                                   d_model=48, max_len=16, arch='llama'),
}


def _setup(name):
  cfg = CFGS[name]
  tokens = jax.random.randint(jax.random.key(1), (2, 10), 0, 40)
  params = nn.unbox(Transformer(cfg).init(jax.random.key(0), tokens)['params'])
  params = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(2), x.shape), params)
  return cfg, params, tokens


@pytest.mark.slow  # long compiles; the pruned-model parity stays fast
@pytest.mark.parametrize('name', sorted(CFGS))
def test_keeping_everything_is_the_original_model(name):
  cfg, params, tokens = _setup(name)
  new_cfg, new_params = prune_structure(cfg, params)
  a = Transformer(cfg).apply({'params': params}, tokens)[0]
  b = Transformer(new_cfg).apply({'params': new_params}, tokens)[0]
  np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize('name, kwargs', [
    ('gpt2', dict(kv_heads=2, d_ff=64)),                     # MHA: whole heads go
    pytest.param('llama_gqa', dict(heads_per_group=1, d_ff=64),  # fewer query heads per group
                 marks=pytest.mark.slow),
    pytest.param('llama_gqa', dict(kv_heads=1, heads_per_group=2, d_ff=64),  # a whole KV group goes
                 marks=pytest.mark.slow),
])
def test_pruned_model_equals_the_original_with_removed_rows_zeroed(name, kwargs):
  cfg, params, tokens = _setup(name)
  new_cfg, new_params = prune_structure(cfg, params, **kwargs)
  g = kwargs.get('heads_per_group', cfg.num_heads // cfg.num_kv_heads)
  assert new_cfg.num_heads == kwargs.get('kv_heads', cfg.num_kv_heads) * g
  assert new_cfg.d_ff == 64 and new_cfg.head_dim == cfg.head_dim
  assert new_cfg.num_params() < cfg.num_params()
  # Reference: zero the output rows of the dropped heads/units in the original model.
  t = convert.from_genai(cfg, params)
  new_t = convert.from_genai(new_cfg, new_params)
  d, c = cfg.head_dim, cfg.d_model
  for i in range(cfg.num_layers):
    o = np.array(t[f'{i}.o']).reshape(cfg.num_heads, d, c)
    kept_o = new_t[f'{i}.o'].reshape(new_cfg.num_heads, d, c)
    keep = [any(np.array_equal(o[h], ko) for ko in kept_o) for h in range(cfg.num_heads)]
    o[~np.array(keep)] = 0
    t[f'{i}.o'] = o.reshape(-1, c)
    f = np.array(t[f'{i}.fc_out'])
    kept_f = [any(np.array_equal(f[u], kf) for kf in new_t[f'{i}.fc_out']) for u in range(cfg.d_ff)]
    f[~np.array(kept_f)] = 0
    t[f'{i}.fc_out'] = f
  zeroed = convert.to_genai(cfg, t)
  a = Transformer(cfg).apply({'params': zeroed}, tokens)[0]
  b = Transformer(new_cfg).apply({'params': new_params}, tokens)[0]
  np.testing.assert_allclose(a, b, atol=1e-5)


def test_bad_structure_requests():
  cfg, params, _ = _setup('llama_gqa')
  with pytest.raises(ValueError, match=r'heads_per_group=4 must be in \[1, 3\]'):
    prune_structure(cfg, params, heads_per_group=4)
  with pytest.raises(ValueError, match='d_ff=0'):
    prune_structure(cfg, params, d_ff=0)

