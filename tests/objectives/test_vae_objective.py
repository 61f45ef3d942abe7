"""Tests for genai.objectives.vae against closed forms, scipy and Monte Carlo."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate
from scipy import special
from scipy import stats

from genai.models.vae import VAE, make_vae
from genai.objectives import vae as obj

SHAPE = (8, 8, 1)


def _model_and_params(likelihood='bernoulli', scale=0.5, seed=0):
  """A tiny VAE with numpy-drawn weights (no initialiser to compile)."""
  model = make_vae(dict(latent_dim=3, channels=(4, 4), hidden_dim=8, likelihood=likelihood),
                   SHAPE)
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *SHAPE)),
                                               jax.random.key(1)))['params']
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda a: rng.normal(0, scale, a.shape).astype(np.float32), abstract)
  return model, params


def _binary_images(n=6, seed=1):
  return (np.random.default_rng(seed).random((n, *SHAPE)) < 0.3).astype(np.float32)


# ----------------------------------------------------------------- densities.

def test_gaussian_kl_closed_form_quadrature_and_monte_carlo():
  rng = np.random.default_rng(0)
  mean = rng.normal(0, 1, (4, 3))
  logvar = rng.normal(0, 0.7, (4, 3))
  kl = np.asarray(obj.gaussian_kl(jnp.asarray(mean, jnp.float32),
                                  jnp.asarray(logvar, jnp.float32)))
  var = np.exp(logvar)
  np.testing.assert_allclose(kl, 0.5 * np.sum(var + mean**2 - 1 - logvar, -1), rtol=1e-5)
  # Quadrature of q log(q/p), one latent dimension at a time.
  sd = np.sqrt(var)
  quad = np.zeros_like(mean)
  for i, j in np.ndindex(mean.shape):
    q = stats.norm(mean[i, j], sd[i, j])
    quad[i, j] = integrate.quad(lambda z: q.pdf(z) * (q.logpdf(z) - stats.norm.logpdf(z)),
                                mean[i, j] - 12 * sd[i, j], mean[i, j] + 12 * sd[i, j])[0]
  np.testing.assert_allclose(kl, quad.sum(-1), rtol=1e-5, atol=1e-6)
  # Monte Carlo: E_q[log q(z) - log p(z)] from 200k samples, within 4 standard errors.
  z = mean + sd * rng.normal(size=(200_000, *mean.shape))
  terms = (stats.norm.logpdf(z, mean, sd) - stats.norm.logpdf(z)).sum(-1)
  se = terms.std(0) / np.sqrt(len(z))
  assert np.all(np.abs(terms.mean(0) - kl) < 4 * se), (terms.mean(0), kl, se)


def test_log_normal_densities_match_scipy():
  rng = np.random.default_rng(1)
  z, mean, logvar = (rng.normal(size=(5, 4)).astype(np.float32) for _ in range(3))
  np.testing.assert_allclose(obj.log_normal_diag(z, mean, logvar),
                             stats.norm.logpdf(z, mean, np.exp(0.5 * logvar)).sum(-1),
                             rtol=1e-5)
  np.testing.assert_allclose(obj.log_std_normal(z), stats.norm.logpdf(z).sum(-1), rtol=1e-5)


def test_bernoulli_log_prob_matches_scipy_and_is_stable():
  rng = np.random.default_rng(2)
  logits = rng.normal(0, 3, (3, 4, 5, 2)).astype(np.float32)
  x = (rng.random(logits.shape) < 0.5).astype(np.float32)
  ref = stats.bernoulli.logpmf(x, special.expit(logits.astype(np.float64))).sum((1, 2, 3))
  np.testing.assert_allclose(obj.bernoulli_log_prob(x, logits), ref, rtol=1e-5)
  # Saturated logits stay finite: log sigmoid(-40) = -40 - log1p(e^-40).
  got = obj.bernoulli_log_prob(jnp.zeros((1, 1, 1, 1)), jnp.full((1, 1, 1, 1), 40.0))
  np.testing.assert_allclose(got, [-40.0], rtol=1e-6)


def test_gaussian_log_prob_matches_scipy_with_a_scale_per_channel():
  rng = np.random.default_rng(3)
  x = rng.uniform(-1, 1, (2, 4, 4, 3)).astype(np.float32)
  mean = rng.normal(0, 0.5, x.shape).astype(np.float32)
  log_scale = np.array([-1.0, 0.0, 0.7], np.float32)
  ref = stats.norm.logpdf(x, mean, np.exp(log_scale)).sum((1, 2, 3))
  np.testing.assert_allclose(obj.gaussian_log_prob(x, mean, log_scale), ref, rtol=1e-5)


def test_bits_per_dim():
  assert obj.nats_to_bits_per_dim(784 * math.log(2.0) * 0.25, 784) == pytest.approx(0.25)


def test_gaussian_model_likelihood_uses_the_floored_learned_scale():
  model, params = _model_and_params('gaussian')
  params = {**params, 'log_scale': np.array([-0.5], np.float32)}
  x = np.random.default_rng(4).uniform(0, 1, (2, *SHAPE)).astype(np.float32)
  out = np.random.default_rng(5).normal(0.5, 0.2, x.shape).astype(np.float32)
  floor = model.cfg.min_log_scale
  log_scale = floor + np.log1p(np.exp(-0.5 - floor))
  np.testing.assert_allclose(obj.log_likelihood(model, params, x, out),
                             stats.norm.logpdf(x, out, np.exp(log_scale)).sum((1, 2, 3)),
                             rtol=1e-5)


# ------------------------------------------------------ ELBO, beta and IWAE.

def test_single_sample_elbo_and_iwae_k1_agree_with_a_hand_computation():
  model, params = _model_and_params()
  x = _binary_images()
  rng = jax.random.key(7)
  iw1 = jax.jit(lambda p, x, r: obj.iw_log_likelihood(model, p, x, r, num_samples=1))
  got = np.asarray(iw1(params, x, rng))
  # The same noise iw_log_likelihood draws for its one chunk.
  eps = np.asarray(jax.random.normal(jax.random.fold_in(rng, 0), (1, len(x), 3)))
  np.testing.assert_allclose(got, obj.log_importance_weights(model, params, x, eps)[0],
                             rtol=1e-5)
  # By hand: log p(x|z) + log p(z) - log q(z|x) with scipy densities.
  mean, logvar = (np.asarray(a, np.float64)
                  for a in model.apply({'params': params}, x, method=VAE.encode))
  sd = np.exp(0.5 * logvar)
  z = mean + sd * eps[0]
  logits = np.asarray(model.apply({'params': params}, z.astype(np.float32),
                                  method=VAE.decode), np.float64)
  ref = (stats.bernoulli.logpmf(x, special.expit(logits)).sum((1, 2, 3))
         + stats.norm.logpdf(z).sum(-1) - stats.norm.logpdf(z, mean, sd).sum(-1))
  np.testing.assert_allclose(got, ref, rtol=1e-4)


@pytest.mark.slow  # eager: one compile per op
def test_iw_estimate_combines_chunks_with_one_logsumexp():
  model, params = _model_and_params()
  x = _binary_images(n=3)
  rng = jax.random.key(11)
  got = jax.jit(lambda p, x: obj.iw_log_likelihood(model, p, x, rng, num_samples=8,
                                                   chunk=4))(params, x)
  eps = np.concatenate([np.asarray(jax.random.normal(jax.random.fold_in(rng, i), (4, 3, 3)))
                        for i in range(2)])
  lw = np.asarray(obj.log_importance_weights(model, params, x, eps), np.float64)
  np.testing.assert_allclose(got, special.logsumexp(lw, axis=0) - np.log(8), rtol=1e-5)
  nll = obj.make_iw_nll_fn(model, 8, 4)(params, x, rng)
  np.testing.assert_allclose(nll, -got, rtol=1e-6)


def test_iwae_bound_is_above_the_elbo_and_tightens_with_k():
  """On a fixed random model: E[IWAE_1] = ELBO < E[IWAE_16] < E[IWAE_128] <= log p(x)."""
  model, params = _model_and_params(scale=0.8)
  x = _binary_images(n=4)
  reps, k_max = 24, 128
  eps = jax.random.normal(jax.random.key(5), (reps, k_max, len(x), 3))
  lw = np.asarray(jax.jit(jax.vmap(
      lambda e: obj.log_importance_weights(model, params, x, e)))(eps), np.float64)

  def bound(k):  # IWAE_k from the first k weights of each repetition: mean, standard error
    vals = special.logsumexp(lw[:, :k], axis=1) - np.log(k)  # [reps, B]
    return vals.mean(0), vals.std(0) / np.sqrt(reps)

  (b1, s1), (b16, s16), (b128, s128) = bound(1), bound(16), bound(k_max)
  # The analytic-KL ELBO, averaged over its reconstruction noise, equals E[IWAE_1].
  elbo = np.mean([np.subtract(*obj.elbo_terms(model, params, x, jax.random.key(100 + i)))
                  for i in range(reps)], axis=0)
  np.testing.assert_allclose(b1, elbo, atol=4 * s1.max() + 0.05)
  assert np.all(b16 > elbo + 4 * s16), (elbo, b16, s16)
  assert np.all(b128 > b16 - 4 * np.sqrt(s16**2 + s128**2)), (b16, b128)
  assert b128.mean() > b16.mean() > b1.mean(), (b1, b16, b128)


@pytest.mark.slow  # eager: one compile per op
def test_beta_weights_only_the_kl_term():
  model, params = _model_and_params()
  batch = {'image': _binary_images()}
  rng = jax.random.key(3)
  results = {}
  for beta in (0.0, 1.0, 4.0):
    loss_fn = obj.make_loss_fn(model, beta=beta)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, rng)
    np.testing.assert_allclose(loss, aux['recon_nll'] + beta * aux['kl'], rtol=1e-6)
    np.testing.assert_allclose(aux['nelbo'], aux['recon_nll'] + aux['kl'], rtol=1e-6)
    results[beta] = (aux, grads)
  (a0, g0), (a1, _), (a4, g4) = results[0.0], results[1.0], results[4.0]
  for key in ('nelbo', 'recon_nll', 'kl'):  # Same noise: same terms, whatever beta.
    np.testing.assert_allclose(a0[key], a4[key], rtol=1e-6)
  # The KL depends on the encoder only: decoder gradients do not change with beta.
  for a, b in zip(jax.tree.leaves(g0['decoder']), jax.tree.leaves(g4['decoder'])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert not np.allclose(g0['encoder']['logvar']['kernel'], g4['encoder']['logvar']['kernel'])
  # beta = 1 is the negative ELBO of elbo_terms with the same z noise.
  log_px, kl = obj.elbo_terms(model, params, batch['image'], jax.random.split(rng)[0])
  np.testing.assert_allclose(a1['nelbo'], np.mean(kl - log_px), rtol=1e-5)


def test_objective_errors():
  model, params = _model_and_params()
  with pytest.raises(ValueError, match='beta'):
    obj.make_loss_fn(model, beta=-1.0)
  with pytest.raises(ValueError, match='multiple of eval.iw_chunk'):
    obj.iw_log_likelihood(model, params, _binary_images(), jax.random.key(0), num_samples=10,
                          chunk=4)
  with pytest.raises(ValueError, match='iw_samples'):
    obj.iw_log_likelihood(model, params, _binary_images(), jax.random.key(0), num_samples=0)
