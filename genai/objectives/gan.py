"""GAN objectives on discriminator logits, and gradient penalties.

Adversarial losses (`config.loss`), each a pair (discriminator loss, generator loss) of
real logits r = D(x) and fake logits f = D(G(z)), averaged over the batch:
  'ns'    non-saturating (Goodfellow et al. 2014): D: softplus(-r) + softplus(f),
          G: softplus(-f)  (= -log sigmoid(f)).
  'hinge' (Lim & Ye 2017; SN-GAN, BigGAN): D: relu(1 - r) + relu(1 + f), G: -f.
  'wgan'  (Arjovsky et al. 2017): D: f - r, G: -f. Use with a gradient penalty
          ('wgan_gp') or spectral norm; unconstrained it diverges.

Gradient penalties (`config.gp.kind`, added to the D loss times `config.gp.weight`):
  'wgan_gp' (Gulrajani et al. 2017): E[(||grad_x D(x_hat)||_2 - 1)^2] on x_hat = e x + (1-e) G(z),
            e ~ U[0, 1] per example. The paper's weight is 10.
  'r1'      (Mescheder et al. 2018): E[||grad_x D(x)||_2^2] on real data. The paper writes
            gamma/2 * E[...], so weight = gamma / 2.
Both differentiate sum_b D(x)_b, which is the per-example gradient only when D treats
examples independently (no BatchNorm in D; genai's Discriminator has none).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

LOSSES = ('ns', 'hinge', 'wgan')
PENALTIES = ('none', 'wgan_gp', 'r1')


def check_loss(kind: str) -> None:
  if kind not in LOSSES:
    raise ValueError(f'loss={kind!r} is not a GAN loss; use one of {LOSSES}.')


def discriminator_loss(kind: str, real_logits_B: jax.Array, fake_logits_B: jax.Array
                       ) -> jax.Array:
  check_loss(kind)
  r, f = real_logits_B, fake_logits_B
  if kind == 'ns':
    return jnp.mean(jax.nn.softplus(-r)) + jnp.mean(jax.nn.softplus(f))
  if kind == 'hinge':
    return jnp.mean(jax.nn.relu(1.0 - r)) + jnp.mean(jax.nn.relu(1.0 + f))
  return jnp.mean(f) - jnp.mean(r)


def generator_loss(kind: str, fake_logits_B: jax.Array) -> jax.Array:
  check_loss(kind)
  if kind == 'ns':
    return jnp.mean(jax.nn.softplus(-fake_logits_B))
  return -jnp.mean(fake_logits_B)


def input_grad_norms(critic: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
  """||grad_x critic(x)_b||_2 per example b, for a critic mapping [B, ...] -> [B]."""
  grads = jax.grad(lambda x: jnp.sum(critic(x)))(x)
  return jnp.sqrt(jnp.sum(jnp.square(grads.reshape(x.shape[0], -1)), axis=-1) + 1e-12)


def wgan_gp_penalty(critic: Callable[[jax.Array], jax.Array], real: jax.Array,
                    fake: jax.Array, rng: jax.Array) -> jax.Array:
  """E[(||grad D(x_hat)|| - 1)^2] on random interpolates of real and fake examples."""
  e = jax.random.uniform(rng, (real.shape[0],) + (1,) * (real.ndim - 1), real.dtype)
  x_hat = e * real + (1.0 - e) * jax.lax.stop_gradient(fake)
  return jnp.mean(jnp.square(input_grad_norms(critic, x_hat) - 1.0))


def r1_penalty(critic: Callable[[jax.Array], jax.Array], real: jax.Array) -> jax.Array:
  """E[||grad D(x)||^2] on real examples."""
  return jnp.mean(jnp.square(input_grad_norms(critic, real)))


def gradient_penalty(kind: str, critic: Callable[[jax.Array], jax.Array], real: jax.Array,
                     fake: jax.Array, rng: jax.Array) -> jax.Array:
  if kind == 'none':
    return jnp.zeros((), jnp.float32)
  if kind == 'wgan_gp':
    return wgan_gp_penalty(critic, real, fake, rng)
  if kind == 'r1':
    return r1_penalty(critic, real)
  raise ValueError(f'gp.kind={kind!r} is not a gradient penalty; use one of {PENALTIES}.')
