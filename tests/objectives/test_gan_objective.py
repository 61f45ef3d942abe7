"""GAN losses against hand-computed numbers; gradient penalties on closed-form critics."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genai.objectives import gan

R = np.array([1.0, -2.0], np.float32)   # real logits
F = np.array([0.5, -1.0], np.float32)   # fake logits


def softplus(x):
  return math.log1p(math.exp(x))


@pytest.mark.parametrize('kind, d_ref, g_ref', [
    # D: mean softplus(-r) + mean softplus(f); G: mean softplus(-f).
    ('ns', (softplus(-1.0) + softplus(2.0)) / 2 + (softplus(0.5) + softplus(-1.0)) / 2,
     (softplus(-0.5) + softplus(1.0)) / 2),
    # D: mean relu(1 - r) = (0 + 3) / 2, mean relu(1 + f) = (1.5 + 0) / 2; G: -mean f.
    ('hinge', 1.5 + 0.75, 0.25),
    # D: mean f - mean r = -0.25 - (-0.5); G: -mean f.
    ('wgan', 0.25, 0.25),
])
def test_losses_against_hand_computed_values(kind, d_ref, g_ref):
  np.testing.assert_allclose(gan.discriminator_loss(kind, R, F), d_ref, rtol=1e-6)
  np.testing.assert_allclose(gan.generator_loss(kind, F), g_ref, rtol=1e-6)


def test_ns_loss_is_binary_cross_entropy():
  # -log sigmoid(r) - log(1 - sigmoid(f)), the form in Goodfellow et al.
  sig = lambda x: 1 / (1 + np.exp(-x.astype(np.float64)))
  bce = np.mean(-np.log(sig(R))) + np.mean(-np.log(1 - sig(F)))
  np.testing.assert_allclose(gan.discriminator_loss('ns', R, F), bce, rtol=1e-6)


def _linear_critic():
  w = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4, 1)).astype(np.float32))
  return w, lambda x: jnp.sum(x * w, axis=(1, 2, 3)) + 0.7  # D(x) = w.x + b


def test_gradient_penalties_on_a_linear_critic():
  w, critic = _linear_critic()
  norm = float(np.linalg.norm(np.asarray(w)))
  real = jax.random.normal(jax.random.key(0), (5, 3, 4, 1))
  fake = jax.random.normal(jax.random.key(1), (5, 3, 4, 1))
  np.testing.assert_allclose(gan.input_grad_norms(critic, real), np.full(5, norm), rtol=1e-6)
  # The gradient of a linear critic is w everywhere: the penalty is (||w|| - 1)^2 exactly,
  # whatever the interpolation weights.
  for seed in range(3):
    np.testing.assert_allclose(
        gan.gradient_penalty('wgan_gp', critic, real, fake, jax.random.key(seed)),
        (norm - 1.0) ** 2, rtol=1e-5)
  np.testing.assert_allclose(gan.gradient_penalty('r1', critic, real, fake, None), norm**2,
                             rtol=1e-5)
  assert float(gan.gradient_penalty('none', critic, real, fake, None)) == 0.0


def test_wgan_gp_evaluates_on_interpolates():
  # D(x) = ||x||^2 / 2 has gradient x, so the penalty is mean((||x_hat|| - 1)^2) with
  # x_hat = e * real + (1 - e) * fake, e ~ U[0, 1] per example (the same draw as here).
  critic = lambda x: 0.5 * jnp.sum(jnp.square(x), axis=(1, 2, 3))
  real = jax.random.normal(jax.random.key(0), (6, 2, 2, 1))
  fake = jax.random.normal(jax.random.key(1), (6, 2, 2, 1))
  rng = jax.random.key(3)
  e = np.asarray(jax.random.uniform(rng, (6, 1, 1, 1)))
  x_hat = e * np.asarray(real) + (1 - e) * np.asarray(fake)
  ref = np.mean((np.linalg.norm(x_hat.reshape(6, -1), axis=1) - 1.0) ** 2)
  np.testing.assert_allclose(gan.wgan_gp_penalty(critic, real, fake, rng), ref, rtol=1e-5)
  # R1 on real data: mean ||x||^2.
  np.testing.assert_allclose(gan.r1_penalty(critic, real),
                             np.mean(np.sum(np.asarray(real) ** 2, axis=(1, 2, 3))),
                             rtol=1e-5)


def test_unknown_names_are_clear_errors():
  with pytest.raises(ValueError, match="loss='lsgan'"):
    gan.discriminator_loss('lsgan', R, F)
  with pytest.raises(ValueError, match='gp.kind'):
    gan.gradient_penalty('dragan', lambda x: x, R, F, None)
