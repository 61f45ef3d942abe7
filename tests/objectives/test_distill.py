"""KD loss against a hand computation."""
import jax.numpy as jnp
import numpy as np
import pytest

from genai.objectives.distill import kd_loss


def test_kd_loss_matches_a_hand_computed_value():
  s = np.array([[1.0, 2.0, 0.5]])
  t = np.array([[2.0, 0.0, 1.0]])
  T, alpha = 2.0, 0.3
  ps = np.exp(s / T) / np.exp(s / T).sum()
  pt = np.exp(t / T) / np.exp(t / T).sum()
  kl = (pt * np.log(pt / ps)).sum()
  ce = -np.log(np.exp(s[0, 2]) / np.exp(s).sum())
  want = alpha * T * T * kl + (1 - alpha) * ce
  loss, aux = kd_loss(jnp.asarray(s), jnp.asarray(t), jnp.array([2]), temperature=T, alpha=alpha)
  np.testing.assert_allclose(float(loss), want, rtol=1e-6)
  np.testing.assert_allclose(float(aux['kl']), kl, rtol=1e-6)
  # Student == teacher: no KL; alpha=1: only the soft term.
  loss, aux = kd_loss(jnp.asarray(t), jnp.asarray(t), jnp.array([0]), alpha=1.0)
  assert abs(float(loss)) < 1e-6


def test_kd_loss_mask_and_errors():
  s = jnp.zeros((2, 3, 5)).at[0, 0, 1].set(3.0)
  t = jnp.zeros((2, 3, 5))
  y = jnp.zeros((2, 3), jnp.int32)
  m = jnp.zeros((2, 3)).at[1].set(1.0)  # row 0 (where the student differs) masked out
  loss, _ = kd_loss(s, t, y, mask=m, alpha=0.5)
  np.testing.assert_allclose(float(loss), 0.5 * np.log(5.0), rtol=1e-6)
  with pytest.raises(ValueError, match='distill.alpha=2'):
    kd_loss(s, t, y, alpha=2)
