"""VAE objectives: the (beta-)ELBO, its pieces, and the importance-weighted NLL estimate.

Notation: x [B, H, W, C]; q(z|x) = N(mean, diag(exp(logvar))); p(z) = N(0, I); p(x|z) is
  - 'bernoulli': prod_i Bernoulli(x_i; sigmoid(logit_i)), for binary x (a probability mass,
    so -log p is a code length: nats, or bits/dim after dividing by D ln 2);
  - 'gaussian': prod_i N(x_i; mean_i, sigma_c^2) with one learned sigma per channel, a
    *density* over continuous pixel values. Its -log p can be negative and depends on the
    data's scale ([0,1] vs [-1,1] shifts it by D ln 2); it is not comparable to discrete
    likelihoods (e.g. 8-bit bits/dim) without a dequantisation correction.
ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)), estimated with one reparameterised z and the
closed-form KL. Training minimises -E_q[log p(x|z)] + beta * KL (beta = 1: the ELBO).
All per-example quantities are sums over pixels (or latents), in nats.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from genai.models.vae import VAE, reparameterize

LOG_2PI = math.log(2.0 * math.pi)


# ----------------------------------------------------------------- densities.

def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mean, exp(logvar)) || N(0, 1)) summed over the last axis (closed form)."""
  return 0.5 * jnp.sum(jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar, axis=-1)


def log_normal_diag(z: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """log N(z; mean, diag(exp(logvar))) summed over the last axis."""
  return -0.5 * jnp.sum(LOG_2PI + logvar + jnp.square(z - mean) * jnp.exp(-logvar), axis=-1)


def log_std_normal(z: jax.Array) -> jax.Array:
  """log N(z; 0, I) summed over the last axis."""
  return -0.5 * jnp.sum(LOG_2PI + jnp.square(z), axis=-1)


def _sum_pixels(v: jax.Array) -> jax.Array:
  return jnp.sum(v, axis=(-3, -2, -1))


def bernoulli_log_prob(x: jax.Array, logits: jax.Array) -> jax.Array:
  """sum_i log Bernoulli(x_i; sigmoid(logits_i)) over the last three (H, W, C) axes.

  x log s(l) + (1 - x) log s(-l), computed stably with log_sigmoid.
  """
  return _sum_pixels(x * jax.nn.log_sigmoid(logits) + (1.0 - x) * jax.nn.log_sigmoid(-logits))


def gaussian_log_prob(x: jax.Array, mean: jax.Array, log_scale: jax.Array) -> jax.Array:
  """sum_i log N(x_i; mean_i, exp(log_scale)^2) over the last three axes (a density).

  `log_scale` broadcasts against x (e.g. one value per channel, shape [C]).
  """
  log_scale = jnp.broadcast_to(log_scale, x.shape)
  return _sum_pixels(-0.5 * LOG_2PI - log_scale
                     - 0.5 * jnp.square((x - mean) * jnp.exp(-log_scale)))


def nats_to_bits_per_dim(nats: Any, num_dims: int) -> Any:
  return nats / (num_dims * math.log(2.0))


# ------------------------------------------------------------- model pieces.

def log_likelihood(model: VAE, params: Any, x: jax.Array, out: jax.Array) -> jax.Array:
  """log p(x|z) per example, from the decoder output `out` (logits or Gaussian mean)."""
  if model.cfg.likelihood == 'bernoulli':
    return bernoulli_log_prob(x, out)
  log_scale = model.apply({'params': params}, method=VAE.log_scale)
  return gaussian_log_prob(x, out, log_scale)


def decoder_mean(model: VAE, params: Any, z: jax.Array) -> jax.Array:
  """E[x|z]: Bernoulli probabilities sigmoid(logits), or the Gaussian mean."""
  out = model.apply({'params': params}, z, method=VAE.decode)
  return jax.nn.sigmoid(out) if model.cfg.likelihood == 'bernoulli' else out


def elbo_terms(model: VAE, params: Any, x: jax.Array, rng: jax.Array,
               dropout_rng: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """(log p(x|z) with one reparameterised z ~ q(z|x), KL(q(z|x) || p(z))), each [B].

  `dropout_rng=None`: deterministic (no dropout), as in evaluation.
  """
  deterministic = dropout_rng is None
  rngs = None if deterministic else {'dropout': dropout_rng}
  out, mean, logvar, _ = model.apply({'params': params}, x, rng, deterministic=deterministic,
                                     rngs=rngs)
  return log_likelihood(model, params, x, out), gaussian_kl(mean, logvar)


def make_loss_fn(model: VAE, beta: float = 1.0
                 ) -> Callable[..., tuple[jax.Array, dict[str, jax.Array]]]:
  """loss_fn(params, batch, rng, deterministic=False) -> (loss, aux).

  loss = mean over the batch of -log p(x|z) + beta * KL: the negative beta-ELBO (nats per
  image). aux holds batch means of 'nelbo' (beta = 1, whatever beta is), 'recon_nll', 'kl'.
  """
  if beta < 0:
    raise ValueError(f'objective.beta={beta} must be >= 0.')

  def loss_fn(params, batch, rng, deterministic: bool = False):
    z_rng, dropout_rng = jax.random.split(rng)
    log_px, kl = elbo_terms(model, params, batch['image'], z_rng,
                            None if deterministic else dropout_rng)
    recon_nll = -jnp.mean(log_px)
    kl = jnp.mean(kl)
    return recon_nll + beta * kl, {'nelbo': recon_nll + kl, 'recon_nll': recon_nll, 'kl': kl}

  return loss_fn


def log_importance_weights(model: VAE, params: Any, x: jax.Array, eps_KBL: jax.Array,
                           posterior: tuple[jax.Array, jax.Array] | None = None
                           ) -> jax.Array:
  """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k = mean + sigma * eps_k: [K, B].

  Deterministic (no dropout). `posterior`: precomputed (mean, logvar) of q(z|x).
  """
  if posterior is None:
    posterior = model.apply({'params': params}, x, method=VAE.encode)
  mean, logvar = posterior
  k, b, l = eps_KBL.shape
  z_KBL = reparameterize(None, mean, logvar, eps_KBL)
  out = model.apply({'params': params}, z_KBL.reshape(k * b, l), method=VAE.decode)
  x_rep = jnp.broadcast_to(x[None], (k,) + x.shape).reshape((k * b,) + x.shape[1:])
  log_px = log_likelihood(model, params, x_rep, out).reshape(k, b)
  return log_px + log_std_normal(z_KBL) - log_normal_diag(z_KBL, mean, logvar)


def iw_log_likelihood(model: VAE, params: Any, x: jax.Array, rng: jax.Array, *,
                      num_samples: int, chunk: int | None = None) -> jax.Array:
  """The importance-weighted estimate of log p(x) with k = num_samples: [B].

  log (1/k) sum_k w_k (Burda et al., the IWAE bound: a lower bound on log p(x) that
  tightens as k grows; k = 1 is the single-sample ELBO). The k samples are decoded `chunk`
  at a time (a `lax.map`, bounding memory at chunk * B decoded images), then combined with
  one logsumexp. Jit the caller (or use make_iw_nll_fn).
  """
  if num_samples < 1:
    raise ValueError(f'eval.iw_samples={num_samples} must be >= 1.')
  chunk = min(chunk or num_samples, num_samples)
  if num_samples % chunk:
    raise ValueError(f'eval.iw_samples={num_samples} must be a multiple of eval.iw_chunk='
                     f'{chunk}.')
  posterior = model.apply({'params': params}, x, method=VAE.encode)
  b, l = posterior[0].shape

  def one_chunk(i):
    eps = jax.random.normal(jax.random.fold_in(rng, i), (chunk, b, l), posterior[0].dtype)
    return log_importance_weights(model, params, x, eps, posterior)

  lw_KB = jax.lax.map(one_chunk, jnp.arange(num_samples // chunk)).reshape(num_samples, b)
  return jax.nn.logsumexp(lw_KB, axis=0) - math.log(num_samples)


def make_iw_nll_fn(model: VAE, num_samples: int, chunk: int | None = None
                   ) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
  """jit((params, x, rng) -> -log p(x) estimates [B], nats) with k = num_samples."""
  return jax.jit(lambda params, x, rng: -iw_log_likelihood(
      model, params, x, rng, num_samples=num_samples, chunk=chunk))
