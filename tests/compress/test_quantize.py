"""Weight-only int8/int4: error bounds per channel/group, packing, the quantized matmul path."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genai.compress import quantize as qz
from genai.models.transformer import Transformer, TransformerConfig

RNG = np.random.default_rng(0)


def test_int8_error_is_at_most_half_a_step_per_column():
  w = RNG.normal(size=(64, 3, 8)).astype(np.float32) * RNG.uniform(0.1, 3, size=(1, 3, 8))
  qw = qz.quantize_int8(w)
  assert qw['q'].dtype == np.int8 and qw['q'].shape == (64, 24) and qw['scale'].shape == (24,)
  err = np.abs(np.asarray(qz.dequantize(qw, w.shape)) - w).reshape(64, 24)
  assert (err <= qw['scale'] / 2 + 1e-7).all()
  assert np.abs(qw['q'].astype(int)).max() == 127


@pytest.mark.parametrize('symmetric', [False, True])
def test_int4_error_is_at_most_half_a_step_per_group_and_packing_is_exact(symmetric):
  w = RNG.normal(size=(96, 10)).astype(np.float32)
  qw = qz.quantize_int4(w, group_size=32, symmetric=symmetric)
  assert qw['packed'].dtype == np.uint8 and qw['packed'].shape == (48, 10)
  assert qw['scale'].shape == (3, 10) and ('min' in qw) == (not symmetric)
  err = np.abs(np.asarray(qz.dequantize(qw, w.shape)) - w).reshape(3, 32, 10)
  assert (err <= qw['scale'][:, None] / 2 + 1e-6).all()
  q = np.asarray(qz.unpack_int4(qw['packed']))
  g = jnp.asarray(w).reshape(3, 32, 10)  # XLA's float32 division, as the quantizer uses
  if symmetric:
    expect = jnp.clip(jnp.round(g / qw['scale'][:, None]), -8, 7) + 8
  else:
    expect = jnp.clip(jnp.round((g - qw['min'][:, None]) / qw['scale'][:, None]), 0, 15)
  np.testing.assert_array_equal(q, np.asarray(expect).reshape(96, 10))
  with pytest.raises(ValueError, match='multiple of an even group_size'):
    qz.quantize_int4(np.zeros((40, 4), np.float32), group_size=32)


@pytest.mark.parametrize('kind', ['int8', 'int4', 'int4_symmetric'])
def test_quantized_matmul_equals_the_dequantized_float_matmul(kind):
  w = RNG.normal(size=(64, 48)).astype(np.float32)
  x = jnp.asarray(RNG.normal(size=(5, 7, 64)).astype(np.float32))
  qw = (qz.quantize_int8(w) if kind == 'int8'
        else qz.quantize_int4(w, 16, symmetric=kind.endswith('symmetric')))
  y = jax.jit(qz.qmatmul)(x, qw)
  ref = x @ qz.dequantize(qw, w.shape)
  np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-4)
  assert float(jnp.abs(y - x @ w).max() / jnp.abs(x @ w).max()) < (0.02 if kind == 'int8' else 0.2)


@pytest.mark.parametrize('arch', ['gpt2', pytest.param('llama', marks=pytest.mark.slow)])
@pytest.mark.parametrize('kind', ['int8', pytest.param('int4', marks=pytest.mark.slow)])
def test_quantized_transformer_runs_on_integer_kernels(arch, kind):
  cfg = TransformerConfig(vocab_size=50, num_layers=2, num_heads=4, num_kv_heads=2 if arch == 'llama' else 4,
                          d_model=64, max_len=16, arch=arch)
  model = Transformer(cfg)
  tokens = jax.random.randint(jax.random.key(1), (2, 12), 0, 50)
  params = nn.unbox(model.init(jax.random.key(0), tokens)['params'])
  qp = qz.quantize_params(params, kind, group_size=32)
  assert set(qp['quantized']) >= {'layer_0/attn/qkv', 'layer_1/mlp/fc_out'}
  assert 'kernel' not in qp['float']['layer_0']['attn']['qkv']
  out = jax.jit(lambda q: qz.apply_quantized(model, q, tokens)[0])(qp)
  # Reference: the same model with every quantized kernel dequantized to float.
  deq = jax.tree.map(np.asarray, params)
  for path, qw in qp['quantized'].items():
    node = deq
    for k in path.split('/'):
      node = node[k]
    node['kernel'] = np.asarray(qz.dequantize(qw, qp['shapes'][path]))
  ref = model.apply({'params': deq}, tokens)[0]
  np.testing.assert_allclose(out, ref, atol=2e-4, rtol=1e-4)
  assert qz.num_bytes(qp['quantized']) < qz.num_bytes(
      {p: np.zeros(s, np.float32) for p, s in qp['shapes'].items()}) / (3.5 if kind == 'int8' else 5)


def test_unknown_kind_is_a_clear_error():
  with pytest.raises(ValueError, match="kind 'int3' is unknown"):
    qz.quantize_params({'a': {'kernel': np.zeros((4, 4))}}, 'int3')
