"""Tests for genai.models.vae: shapes, parameters, reparameterisation, config errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genai.models.vae import VAE, VAEConfig, make_vae, reparameterize

TINY = dict(latent_dim=3, channels=(4, 8), hidden_dim=16)


def _abstract(model, shape, batch=2):
  """Parameter shapes without running (or compiling) anything."""
  x = jax.ShapeDtypeStruct((batch, *shape), jnp.float32)
  return x, jax.eval_shape(lambda x: model.init(jax.random.key(0), x, jax.random.key(1)),
                           x)['params']


@pytest.mark.parametrize('shape, likelihood, extra', [
    ((8, 8, 1), 'bernoulli', {}),
    ((28, 28, 1), 'bernoulli', dict(blocks_per_level=1, norm='group', dropout=0.1)),
    ((7, 9, 3), 'gaussian', dict(norm='layer', hidden_dim=0)),  # odd sizes: 7 -> 4 -> 2
])
def test_shapes_of_encoder_decoder_and_forward(shape, likelihood, extra):
  model = make_vae({**TINY, 'likelihood': likelihood, **extra}, shape)
  x, params = _abstract(model, shape)
  apply = lambda a, **k: jax.eval_shape(lambda p, a: model.apply({'params': p}, a, **k),
                                        params, a)
  mean, logvar = apply(x, method=VAE.encode)
  assert mean.shape == logvar.shape == (2, 3)
  out = apply(jax.ShapeDtypeStruct((5, 3), jnp.float32), method=VAE.decode)
  assert out.shape == (5, *shape)
  out, mean, logvar, z = apply(x, rng=jax.random.key(2))
  assert out.shape == x.shape and z.shape == (2, 3)
  assert ('log_scale' in params) == (likelihood == 'gaussian')


def test_gaussian_log_scale_is_learned_and_floored():
  model = make_vae({**TINY, 'likelihood': 'gaussian', 'min_log_scale': -3.0}, (8, 8, 3))
  _, params = _abstract(model, (8, 8, 3))
  assert params['log_scale'].shape == (3,)
  ls = lambda raw: model.apply({'params': {'log_scale': raw}}, method=VAE.log_scale)
  np.testing.assert_allclose(ls(jnp.zeros(3)), -3.0 + np.log1p(np.exp(3.0)), rtol=1e-6)
  np.testing.assert_allclose(ls(jnp.full(3, 5.0)), 5.0, atol=1e-3)  # ~identity far above
  assert np.all(np.asarray(ls(jnp.full(3, -50.0))) >= -3.0)       # never below the floor
  with pytest.raises(ValueError, match='gaussian'):
    make_vae(TINY, (8, 8, 1)).apply({'params': {}}, method=VAE.log_scale)


def test_reparameterize_matches_the_posterior_and_given_noise():
  mean = jnp.array([[0.5, -2.0]])
  logvar = jnp.array([[np.log(4.0), np.log(0.25)]])
  eps = jnp.array([[[1.0, -1.0]], [[0.0, 2.0]]])  # [K=2, B=1, L=2]
  z = reparameterize(None, mean, logvar, eps)
  np.testing.assert_allclose(z, [[[2.5, -2.5]], [[0.5, -1.0]]], rtol=1e-6)
  big = reparameterize(jax.random.key(0), jnp.broadcast_to(mean, (20000, 2)),
                       jnp.broadcast_to(logvar, (20000, 2)))
  np.testing.assert_allclose(np.mean(big, 0), [0.5, -2.0], atol=0.05)
  np.testing.assert_allclose(np.std(big, 0), [2.0, 0.5], rtol=0.03)


def test_dropout_is_active_only_when_not_deterministic():
  model = make_vae({**TINY, 'dropout': 0.5}, (8, 8, 1))
  x, abstract = _abstract(model, (8, 8, 1))
  rng = np.random.default_rng(0)  # numpy weights: no initialiser to compile
  params = jax.tree.map(lambda a: rng.normal(0, 0.3, a.shape).astype(np.float32), abstract)
  x = rng.random(x.shape, dtype=np.float32)
  encode = jax.jit(lambda p, x, d, r: model.apply({'params': p}, x, d, method=VAE.encode,
                                                  rngs={'dropout': r}), static_argnums=2)
  det = encode(params, x, True, jax.random.key(4))[0]
  np.testing.assert_array_equal(det, encode(params, x, True, jax.random.key(5))[0])
  assert not np.allclose(encode(params, x, False, jax.random.key(4))[0], det)


@pytest.mark.parametrize('override, match', [
    (dict(likelihood='poisson'), 'model.likelihood'),
    (dict(norm='batch'), 'model.norm'),
    (dict(latent_dim=0), 'latent_dim'),
    (dict(channels=()), 'channels'),
    (dict(dropout=1.0), 'dropout'),
    (dict(num_layers=3), 'Unknown model config fields'),
])
def test_bad_model_config_errors(override, match):
  with pytest.raises(ValueError, match=match):
    make_vae({**TINY, **override}, (8, 8, 1))


def test_level_sizes():
  cfg = VAEConfig(image_shape=(28, 28, 1), channels=(8, 8, 8))
  assert cfg.level_sizes() == [(28, 28), (14, 14), (7, 7), (4, 4)]
