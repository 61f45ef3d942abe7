"""LoRA adapters: zero at init, equal to merged weights, only targeted layers, clear errors."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genai.models import lora as lora_lib
from genai.models.transformer import Transformer, TransformerConfig

CFG = TransformerConfig(vocab_size=31, num_layers=2, num_heads=4, num_kv_heads=2, d_model=32,
                        max_len=16, arch='llama')


def _setup(targets=r'attn/(qkv|out)$|mlp/fc_in$'):
  model = Transformer(CFG)
  tokens = jax.random.randint(jax.random.key(1), (2, 10), 0, 31)
  params = nn.unbox(model.init(jax.random.key(0), tokens)['params'])
  cfg = lora_lib.LoraConfig(rank=4, alpha=8.0, targets=targets)
  adapters = lora_lib.init(params, cfg, jax.random.key(2))
  return model, tokens, params, cfg, adapters


def test_targets_and_shapes():
  _, _, params, cfg, ad = _setup()
  assert sorted(ad) == [f'layer_{i}/{m}' for i in range(2)
                        for m in ('attn/out', 'attn/qkv', 'mlp/fc_in')]
  # qkv kernel [C, K, G+2, D] = [32, 2, 4, 8]: A [32, r], B [r, 64]
  assert ad['layer_0/attn/qkv']['a'].shape == (32, 4)
  assert ad['layer_0/attn/qkv']['b'].shape == (4, 2 * 4 * 8)
  assert lora_lib.num_params(ad) == sum(a['a'].size + a['b'].size for a in ad.values())


def test_fresh_adapters_leave_the_model_unchanged_and_equal_merged_weights_after():
  model, tokens, params, cfg, ad = _setup()
  base = model.apply({'params': params}, tokens)[0]
  with lora_lib.adapters(ad, cfg):
    same = model.apply({'params': params}, tokens)[0]
  np.testing.assert_array_equal(same, base)  # B = 0
  ad = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(3), x.shape), ad)
  with lora_lib.adapters(ad, cfg):
    adapted = jax.jit(lambda p, a: model.apply({'params': p}, tokens)[0])(params, ad)
  merged = model.apply({'params': lora_lib.merge(params, ad, cfg)}, tokens)[0]
  np.testing.assert_allclose(adapted, merged, atol=2e-5)
  assert np.abs(np.asarray(adapted) - np.asarray(base)).max() > 1e-3


def test_merge_is_w_plus_scaled_ab():
  _, _, params, cfg, ad = _setup()
  ad = jax.tree.map(lambda x: x + 1.0, ad)
  merged = lora_lib.merge(params, ad, cfg)
  w = np.asarray(params['layer_1']['attn']['out']['kernel'])
  a, b = np.asarray(ad['layer_1/attn/out']['a']), np.asarray(ad['layer_1/attn/out']['b'])
  np.testing.assert_allclose(merged["layer_1"]["attn"]["out"]["kernel"], w + 2.0 * a @ b, rtol=1e-5)
  np.testing.assert_array_equal(merged['layer_1']['mlp']['fc_out']['kernel'],
                                params['layer_1']['mlp']['fc_out']['kernel'])  # not targeted


def test_gradients_reach_only_the_adapters_and_dropout_is_train_only():
  model, tokens, params, cfg, ad = _setup()
  cfg = lora_lib.LoraConfig(rank=4, alpha=8.0, dropout=0.5, targets=cfg.targets)
  ad = jax.tree.map(lambda x: x + 0.1, ad)

  def out(a, deterministic, rng=None):
    with lora_lib.adapters(a, cfg, rng, deterministic):
      return model.apply({'params': params}, tokens)[0]

  g = jax.grad(lambda a: jnp.sum(out(a, True) ** 2))(ad)
  assert all(float(jnp.abs(x).max()) > 0 for x in jax.tree.leaves(g))
  np.testing.assert_array_equal(out(ad, True), out(ad, True))
  assert not np.allclose(out(ad, False, jax.random.key(0)), out(ad, True))


def test_bad_lora_config_errors():
  _, _, params, _, _ = _setup()
  with pytest.raises(ValueError, match="matches no dense layer; module paths look like"):
    lora_lib.init(params, lora_lib.LoraConfig(targets='nope'), jax.random.key(0))
  with pytest.raises(ValueError, match='lora.rank=0'):
    lora_lib.init(params, lora_lib.LoraConfig(rank=0), jax.random.key(0))


def test_wrapped_model_takes_base_and_adapters_as_its_params():
  model, tokens, params, cfg, ad = _setup()
  ad = jax.tree.map(lambda x: x + 0.05, ad)
  wrapped = lora_lib.wrap(model, cfg)
  assert wrapped.config is model.config
  # Plain params: the model alone; LoraParams: the adapters added, as under `adapters`.
  np.testing.assert_array_equal(wrapped.apply({'params': params}, tokens)[0],
                                model.apply({'params': params}, tokens)[0])
  with lora_lib.adapters(ad, cfg):
    want = model.apply({'params': params}, tokens)[0]
  pair = lora_lib.LoraParams(params, ad)
  np.testing.assert_array_equal(wrapped.apply({'params': pair}, tokens)[0], want)
  # Gradients w.r.t. the adapters through the wrapper equal those under the context.
  loss = lambda a: jnp.sum(wrapped.apply({'params': lora_lib.LoraParams(params, a)},
                                         tokens)[0] ** 2)

  def loss_ctx(a):
    with lora_lib.adapters(a, cfg):
      return jnp.sum(model.apply({'params': params}, tokens)[0] ** 2)

  jax.tree.map(np.testing.assert_array_equal, jax.grad(loss)(ad), jax.grad(loss_ctx)(ad))


def test_adapter_file_round_trip(tmp_path):
  from genai.pretrained import adapters as adapters_io  # pylint: disable=g-import-not-at-top
  _, _, _, cfg, ad = _setup()
  ad = jax.tree.map(lambda x: x + 0.5, ad)
  path = str(tmp_path / 'adapter.safetensors')
  adapters_io.save(ad, cfg, path)
  back, back_cfg = adapters_io.load(path)
  assert back_cfg == lora_lib.LoraConfig(rank=4, alpha=8.0, targets=cfg.targets)
  jax.tree.map(np.testing.assert_array_equal, back, jax.tree.map(np.asarray, ad))
