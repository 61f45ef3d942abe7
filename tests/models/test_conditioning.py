"""Timestep/label conditioning shared by the diffusion backbones."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genai.models.conditioning import ConditionEmbedding, timestep_embedding


def test_timestep_embedding_matches_numpy():
  t = np.array([0.0, 1.0, 17.5, 999.0], np.float32)
  dim, half = 8, 4
  freqs = np.exp(-np.log(10000.0) * np.arange(half) / half)
  ref = np.concatenate([np.cos(t[:, None] * freqs), np.sin(t[:, None] * freqs)], axis=1)
  np.testing.assert_allclose(timestep_embedding(jnp.asarray(t), dim), ref, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match='even'):
    timestep_embedding(jnp.asarray(t), 7)


def test_condition_embedding_labels():
  t = jnp.arange(3.0)
  m = ConditionEmbedding(16, num_classes=10)
  params = m.init(jax.random.key(0), t, jnp.array([0, 1, 10]))
  a = m.apply(params, t, jnp.array([0, 1, 10]))
  b = m.apply(params, t, jnp.array([10, 1, 10]))
  assert a.shape == (3, 16)
  assert not np.allclose(a[0], b[0]) and np.allclose(a[1:], b[1:])
  with pytest.raises(ValueError, match='pass labels'):
    m.apply(params, t)
  u = ConditionEmbedding(16)
  up = u.init(jax.random.key(0), t)
  with pytest.raises(ValueError, match='num_classes > 0'):
    u.apply(up, t, jnp.array([0, 1, 2]))
