"""Optimizers and schedules from config, gradient accumulation."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from genai.train import gradients
from genai.train.optimizers import make_optimizer, make_schedule


def _cfg(**kw):
  c = dict(name='adamw', learning_rate=1e-3, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.1,
           grad_clip_norm=1.0, schedule='cosine', warmup_steps=10, end_learning_rate=1e-4)
  c.update(kw)
  return ml_collections.ConfigDict(c)


def test_warmup_then_cosine_to_end_lr():
  s = make_schedule(_cfg(), 110)
  np.testing.assert_allclose([s(0), s(5), s(10), s(60), s(110)],
                             [0.0, 5e-4, 1e-3, 1e-4 + 0.5 * (1e-3 - 1e-4), 1e-4], rtol=1e-5)


def test_linear_and_constant_schedules():
  lin = make_schedule(_cfg(schedule='linear', warmup_steps=0), 100)
  np.testing.assert_allclose([lin(0), lin(50), lin(100)], [1e-3, 5.5e-4, 1e-4], rtol=1e-5)
  const = make_schedule(_cfg(schedule='constant', warmup_steps=0), 100)
  assert float(const(77)) == pytest.approx(1e-3)


def test_adamw_matches_optax_reference_and_skips_decay_on_vectors():
  params = {'kernel': jnp.ones((3, 2)), 'bias': jnp.ones((2,))}
  grads = {'kernel': jnp.full((3, 2), 0.1), 'bias': jnp.full((2,), 0.1)}
  tx, _ = make_optimizer(_cfg(grad_clip_norm=0.0, schedule='constant', warmup_steps=0), 10)
  updates, _ = tx.update(grads, tx.init(params), params)
  ref = optax.adamw(1e-3, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.1,
                    mask=lambda p: {'kernel': True, 'bias': False})
  want, _ = ref.update(grads, ref.init(params), params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), updates, want)
  assert not np.allclose(updates['kernel'][0, 0], updates['bias'][0])


@pytest.mark.parametrize('name', ['adam', 'adamw', 'adabelief', 'sgd'])
def test_each_optimizer_reduces_a_quadratic(name):
  cfg = _cfg(name=name, weight_decay=0.0, learning_rate=0.1, schedule='constant', warmup_steps=0)
  tx, _ = make_optimizer(cfg, 100)
  params = jnp.array([3.0, -2.0])
  state = tx.init(params)
  for _ in range(50):
    g = jax.grad(lambda p: jnp.sum(p ** 2))(params)
    u, state = tx.update(g, state, params)
    params = optax.apply_updates(params, u)
  assert float(jnp.sum(params ** 2)) < 1.0


def test_global_norm_clipping():
  tx, _ = make_optimizer(_cfg(name='sgd', weight_decay=0.0, grad_clip_norm=1.0,
                              schedule='constant', warmup_steps=0, learning_rate=1.0), 10)
  g = {'a': jnp.array([30.0, 40.0])}
  u, _ = tx.update(g, tx.init(g), g)
  np.testing.assert_allclose(u['a'], [-0.6, -0.8], rtol=1e-6)


def test_sgd_momentum_matches_optax():
  cfg = _cfg(name='sgd', momentum=0.9, weight_decay=0.0, grad_clip_norm=0.0,
             schedule='constant', warmup_steps=0, learning_rate=0.1)
  tx, ref = make_optimizer(cfg, 10)[0], optax.sgd(0.1, momentum=0.9)
  p = {'a': jnp.array([1.0, -2.0])}
  state, ref_state = tx.init(p), ref.init(p)
  for g in ({'a': jnp.array([0.5, 1.0])}, {'a': jnp.array([-1.0, 2.0])}):
    u, state = tx.update(g, state, p)
    r, ref_state = ref.update(g, ref_state, p)
    np.testing.assert_allclose(u['a'], r['a'], rtol=1e-6)


@pytest.mark.parametrize('kw, match', [
    (dict(name='lion'), 'optimizer.name'), (dict(schedule='step'), 'optimizer.schedule'),
    (dict(name='adam'), 'adamw'), (dict(warmup_steps=100), 'warmup_steps')])
def test_bad_optimizer_config(kw, match):
  with pytest.raises(ValueError, match=match):
    make_optimizer(_cfg(**kw), 50)


def test_gradient_accumulation_equals_full_batch():
  def loss_fn(w, batch, rng):
    del rng
    err = batch['x'] @ w - batch['y']
    return jnp.mean(err ** 2), {'n': jnp.float32(batch['x'].shape[0])}

  rng = np.random.default_rng(0)
  batch = {'x': jnp.asarray(rng.normal(size=(8, 3))), 'y': jnp.asarray(rng.normal(size=(8,)))}
  w = jnp.asarray(rng.normal(size=(3,)))
  (l1, _), g1 = gradients.value_and_grad(loss_fn, w, batch, jax.random.key(0), 1)
  (l4, aux4), g4 = gradients.value_and_grad(loss_fn, w, batch, jax.random.key(0), 4)
  np.testing.assert_allclose(l1, l4, rtol=1e-6)
  np.testing.assert_allclose(g1, g4, rtol=1e-6)
  assert float(aux4['n']) == 8.0
  with pytest.raises(ValueError, match='grad_accum_steps=3'):
    gradients.value_and_grad(loss_fn, w, batch, jax.random.key(0), 3)
