"""Decoding: top-k/top-p filtering against numpy, cached greedy decoding against a naive loop."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genai.models.transformer import Transformer, TransformerConfig
from genai.sample.decode import filter_logits, generate, sample_token


def _np_filter(logits, top_k, top_p):
  out = logits.copy()
  for row in out:
    if top_k:
      kth = np.sort(row)[::-1][top_k - 1]
      row[row < kth] = -np.inf
    order = np.argsort(-row)
    probs = np.exp(row[order] - row[order].max())
    probs /= probs.sum()
    before = np.cumsum(probs) - probs
    drop = order[before >= top_p]
    row[drop] = -np.inf
  return out


@pytest.mark.parametrize('top_k, top_p', [(0, 1.0), (3, 1.0), (0, 0.5), (5, 0.8), (1, 1.0)])
def test_filter_logits_matches_numpy(top_k, top_p):
  logits = np.random.default_rng(0).normal(size=(4, 10)).astype(np.float32) * 2
  got = np.asarray(filter_logits(jnp.asarray(logits), top_k, top_p))
  want = _np_filter(logits, top_k, top_p)
  np.testing.assert_array_equal(np.isfinite(want), got > -1e30)
  np.testing.assert_allclose(got[np.isfinite(want)], want[np.isfinite(want)])


def test_sampling_respects_top_k_and_temperature_zero_is_greedy():
  logits = jnp.array([[0.0, 1.0, 5.0, 2.0, 4.9]])
  samples = jax.vmap(lambda k: sample_token(logits, k, 1.0, top_k=2))(
      jax.random.split(jax.random.key(0), 200))
  assert set(np.unique(samples)) == {2, 4}
  assert int(sample_token(logits, jax.random.key(0), 0.0)[0]) == 2


def _model(max_len=32, arch='gpt2'):
  cfg = TransformerConfig(vocab_size=23, num_layers=2, num_heads=2, d_model=16, max_len=max_len,
                          arch=arch)
  model = Transformer(cfg)
  params = model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))['params']
  return model, params


def _naive_greedy(model, params, prompt, n, window):
  seq = np.asarray(prompt)
  for _ in range(n):
    ctx = seq[:, -window:]
    logits, _ = model.apply({'params': params}, jnp.asarray(ctx))
    seq = np.concatenate([seq, np.asarray(jnp.argmax(logits[:, -1], -1))[:, None]], 1)
  return seq


@pytest.mark.slow  # an eager reference loop, one compile per length
@pytest.mark.parametrize('arch', ['gpt2', 'llama'])
def test_cached_greedy_generation_equals_naive_loop(arch):
  model, params = _model(arch=arch)
  prompt = np.array([[1, 2, 3], [4, 5, 6]])
  got = generate(model, params, prompt, num_tokens=12, rng=jax.random.key(0), temperature=0.0)
  np.testing.assert_array_equal(got, _naive_greedy(model, params, prompt, 12, 32))


@pytest.mark.slow  # an eager reference loop, one compile per length
def test_generation_longer_than_context_continues_in_chunks():
  model, params = _model(max_len=8)
  prompt = np.array([[1, 2, 3]])
  got = generate(model, params, prompt, num_tokens=20, rng=jax.random.key(0), temperature=0.0)
  assert got.shape == (1, 23)
  # The first chunk fits the context exactly, so it equals naive decoding.
  np.testing.assert_array_equal(got[:, :8], _naive_greedy(model, params, prompt, 5, 8))


def test_seed_fixes_samples_and_rows_differ():
  model, params = _model()
  prompt = np.ones((4, 2), np.int32)
  a = generate(model, params, prompt, num_tokens=10, rng=jax.random.key(3), temperature=1.0)
  b = generate(model, params, prompt, num_tokens=10, rng=jax.random.key(3), temperature=1.0)
  np.testing.assert_array_equal(a, b)
  assert len({tuple(r) for r in a}) > 1


@pytest.mark.parametrize('kwargs, match', [
    (dict(top_p=0.0), 'top_p'), (dict(temperature=-1.0), 'temperature'),
    (dict(top_k=100), 'top_k'), (dict(num_tokens=0), 'num_tokens')])
def test_bad_sampling_arguments(kwargs, match):
  model, params = _model()
  args = dict(num_tokens=3, rng=jax.random.key(0))
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    generate(model, params, np.ones((1, 2), np.int32), **args)
