"""The image transformer's likelihood (genai/objectives/image_gpt.py): the per-token NLL
against numpy, the image NLL against the chain rule token by token, and bits/dim against
the closed form of a uniform model."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genai.families import image_gpt as family
from genai.objectives import image_gpt as objectives
from genai.sample import decode
from conftest import REPO, load_config


@functools.lru_cache(maxsize=None)
def _net(num_classes=3):
  """A runlocal model (1 layer, width 16) on 4x4 binary images: 4 tokens of 16."""
  config = load_config(REPO / 'configs/image_gpt/digits.py')
  net = family.make_model(config, (4, 4, 1), num_classes, '[0,1]')
  init, _ = family.state_fns(config, net)
  return net, nn.unbox(jax.jit(init)(jax.random.key(0))['params'])


def _logits_at(net):
  """jit(params, seq [B, N] padded, i) -> the logits at position i (one compile)."""
  return jax.jit(lambda p, seq, i: net.model.apply({'params': p}, seq)[0][:, i])


def numpy_nll(logits, tokens, v):
  """-log softmax(logits[:v])[token], in float64."""
  z = np.asarray(logits, np.float64)[..., :v]
  z = z - z.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  return -np.take_along_axis(logp, np.asarray(tokens)[..., None], -1)[..., 0]


def test_token_nll_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 3, (2, 5, 20)).astype(np.float32)
  tokens = rng.integers(0, 16, (2, 5))
  got = np.asarray(objectives.token_nll(jnp.asarray(logits), jnp.asarray(tokens), 16))
  np.testing.assert_allclose(got, numpy_nll(logits, tokens, 16), rtol=1e-5, atol=1e-6)


def test_image_nll_is_the_chain_rule_and_bits_per_dim_the_numpy_sum():
  net, params = _net()
  rng = np.random.default_rng(1)
  images = rng.integers(0, 2, (3, 4, 4, 1)).astype(np.float32)
  labels = np.array([0, 2, 1])
  tokens, prefix = net.tokens(images), net.prefix(labels, 3)
  nll_fn = jax.jit(lambda p, t, y: objectives.image_nll(net.model, p, t, y,
                                                        net.num_image_tokens)[0])
  nll = nll_fn(params, tokens, prefix)
  # Reference: the model run on each prefix alone, its last logits scored in numpy.
  # Reference: position i sees the prefix and tokens < i only (the rest of the row is
  # zeros), its logits scored in numpy against token i.
  seq = np.concatenate([np.asarray(prefix)[:, None], np.asarray(tokens)], 1)
  logits_at, ref = _logits_at(net), np.zeros(3)
  for i in range(net.seq_len):
    visible = np.where(np.arange(net.seq_len) <= i, seq[:, :-1], 0)
    ref += numpy_nll(logits_at(params, visible, i), seq[:, i + 1], net.num_image_tokens)
  np.testing.assert_allclose(np.asarray(nll), ref, rtol=1e-5)
  bpd = family.bits_per_dim(np.asarray(nll), net)
  np.testing.assert_allclose(bpd, ref / (16 * np.log(2)), rtol=1e-5)
  # The labels matter: the same pixels under other classes score differently.
  other = nll_fn(params, tokens, net.prefix(labels[::-1], 3))
  assert not np.allclose(np.asarray(other)[[0, 2]], np.asarray(nll)[[0, 2]])


def test_a_uniform_model_scores_one_bit_per_binary_pixel():
  net, params = _net()
  zero = jax.tree.map(jnp.zeros_like, params)  # every logit 0: uniform over 16 tokens
  images = np.random.default_rng(2).integers(0, 2, (2, 4, 4, 1)).astype(np.float32)
  batch = {'tokens': net.tokens(images), 'prefix': net.prefix([0, 1], 2)}
  loss_fn = objectives.make_loss_fn(net.model, net.num_image_tokens)

  @jax.jit
  def scores(p, b):
    return objectives.image_nll(net.model, p, b['tokens'], b['prefix'],
                                net.num_image_tokens)[0], loss_fn(p, b)[0]

  nll, loss = scores(zero, batch)
  np.testing.assert_allclose(np.asarray(nll), net.seq_len * np.log(16), rtol=1e-6)
  np.testing.assert_allclose(family.bits_per_dim(np.asarray(nll), net), 1.0, rtol=1e-6)
  assert float(loss) == pytest.approx(np.log(16), rel=1e-6)  # nats per token


def _full_forward_sample(net, params, labels, rng, temperature):
  """Reference sampler: the whole sequence re-run at every step, no cache; the decoder's
  key schedule (chunk 0, then token i's key fold_in(., i))."""
  seq = np.zeros((len(labels), net.seq_len + 1), np.int32)
  seq[:, 0] = net.prefix(labels, len(labels))
  key, logits_at = jax.random.fold_in(rng, 0), _logits_at(net)
  for i in range(net.seq_len):
    logits = logits_at(params, seq[:, :-1], i)[:, :net.num_image_tokens]
    if temperature == 0:
      nxt = np.asarray(jnp.argmax(logits, -1))
    else:
      nxt = np.asarray(jax.random.categorical(jax.random.fold_in(key, i), logits / temperature))
    seq[:, i + 1] = nxt
  return seq[:, 1:]


@pytest.mark.parametrize('temperature', [0.0, 1.0])
def test_kv_cache_sampling_equals_the_full_forward_sampler(temperature):
  net, params = _net()
  # Random-ish params give varied tokens: scale the init up so the logits are not flat.
  params = jax.tree.map(lambda p: p * 20, params)
  labels = np.array([0, 1, 2, 1])
  rng = jax.random.key(7)
  want = _full_forward_sample(net, params, labels, rng, temperature)
  got = decode.generate(net.model, params, np.asarray(net.prefix(labels, 4))[:, None],
                        num_tokens=net.seq_len, rng=rng, temperature=temperature,
                        num_choices=net.num_image_tokens)[:, 1:]
  np.testing.assert_array_equal(got, want)
  assert len(np.unique(got)) > 2  # not a degenerate all-one-token case
  images = net.sample(params, rng, labels, temperature=temperature)
  np.testing.assert_array_equal(images, np.asarray(net.images(want)))


@pytest.mark.slow  # three decoder compiles
def test_the_decoder_never_emits_the_prefix_ids():
  net, params = _net()
  # Make the class tokens the likeliest outcome everywhere (tied embeddings: their rows).
  emb = params['embed']['embedding']
  params = {**params, 'embed': {'embedding': emb.at[net.num_image_tokens:].multiply(1e3)}}
  prompt = np.asarray(net.prefix([0, 1], 2))[:, None]
  free = decode.generate(net.model, params, prompt, num_tokens=net.seq_len, rng=jax.random.key(0),
                         temperature=0.0)
  assert (free[:, 1:] >= net.num_image_tokens).any()  # what num_choices prevents
  cut = decode.generate(net.model, params, prompt, num_tokens=net.seq_len,
                        rng=jax.random.key(0), temperature=1.0,
                        num_choices=net.num_image_tokens)
  assert cut[:, 1:].max() < net.num_image_tokens
  with pytest.raises(ValueError, match='num_choices must be in'):
    decode.generate(net.model, params, prompt, num_tokens=2, rng=jax.random.key(0),
                    num_choices=net.model.config.vocab_size + 1)
