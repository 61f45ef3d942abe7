"""QAT with qwix: the fake-quantized forward is the integer model genai stores afterwards,
gradients pass straight through, and the LM trains with it."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from genai.compress import qat
from genai.compress import quantize as qz
from genai.models.transformer import Transformer, TransformerConfig


@pytest.mark.slow  # eager: one compile per op; the jitted tiny case below is the fast one
@pytest.mark.parametrize('kind', ['int8', 'int4'])
def test_qat_forward_matches_the_stored_integer_model(kind):
  cfg = TransformerConfig(vocab_size=50, num_layers=2, num_heads=4, d_model=64, max_len=16)
  model = Transformer(cfg)
  tokens = jax.random.randint(jax.random.key(1), (2, 12), 0, 50)
  params = nn.unbox(model.init(jax.random.key(0), tokens)['params'])
  fake = qat.wrap(model, kind, tile_size=32).apply({'params': params}, tokens)[0]
  qp = qz.quantize_params({k: v for k, v in params.items()}, kind, group_size=32, symmetric=True)
  # genai keeps the embedding (and the tied head) float; so does the QAT rule.
  real = qz.apply_quantized(model, qp, tokens)[0]
  ref = model.apply({'params': params}, tokens)[0]
  quant_err = float(jnp.abs(real - ref).max())
  assert quant_err > 1e-4
  assert float(jnp.abs(fake - real).max()) < 1e-5  # the same grid: qwix == genai storage
  g = jax.grad(lambda p: jnp.sum(qat.wrap(model, kind, 32).apply({'params': p}, tokens)[0] ** 2))(params)
  assert float(jnp.abs(g['layer_0']['mlp']['fc_in']['kernel']).max()) > 0
  with pytest.raises(ValueError, match="model.qat='int3'"):
    qat.wrap(model, 'int3')


def test_tiny_jitted_qat_forward_matches_the_stored_integer_model():
  """The test above at a smaller size, jitted (the fast tier's test of genai/compress/qat.py)."""
  cfg = TransformerConfig(vocab_size=50, num_layers=1, num_heads=2, d_model=32, max_len=16)
  model = Transformer(cfg)
  tokens = jax.random.randint(jax.random.key(1), (2, 12), 0, 50)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), tokens)['params'])
  fake = jax.jit(lambda p: qat.wrap(model, 'int4', tile_size=32).apply({'params': p}, tokens)[0])(
      params)
  qp = qz.quantize_params(dict(params), 'int4', group_size=32, symmetric=True)
  real = jax.jit(lambda q: qz.apply_quantized(model, q, tokens)[0])(qp)
  ref = jax.jit(lambda p: model.apply({'params': p}, tokens)[0])(params)
  assert float(jnp.abs(real - ref).max()) > 1e-4
  assert float(jnp.abs(fake - real).max()) < 1e-5  # the same grid: qwix == genai storage
  g = jax.jit(jax.grad(lambda p: jnp.sum(
      qat.wrap(model, 'int4', 32).apply({'params': p}, tokens)[0] ** 2)))(params)
  assert float(jnp.abs(g['layer_0']['mlp']['fc_in']['kernel']).max()) > 0
  with pytest.raises(ValueError, match="model.qat='int3'"):
    qat.wrap(model, 'int3')
