"""Pruning: masks zero what they claim and stay zero through training; N:M validity;
the cubic schedule; clear config errors."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genai.compress import pruning

RNG = np.random.default_rng(0)


def _params():
  return {'dense': {'kernel': jnp.asarray(RNG.normal(size=(16, 8)), jnp.float32),
                    'bias': jnp.ones(8)},
          'out': {'kernel': jnp.asarray(3 * RNG.normal(size=(8, 4)), jnp.float32)},
          'norm': {'scale': jnp.ones(8)}}


def test_global_magnitude_mask_keeps_the_largest_weights():
  p = _params()
  masks = pruning.magnitude_masks(p, 0.5)
  allw = np.concatenate([np.abs(np.asarray(p['dense']['kernel'])).ravel(),
                         np.abs(np.asarray(p['out']['kernel'])).ravel()])
  thresh = np.sort(allw)[len(allw) // 2]
  np.testing.assert_array_equal(masks['dense']['kernel'], np.abs(p['dense']['kernel']) >= thresh)
  assert masks['dense']['bias'].all() and masks['norm']['scale'].all()  # not targeted
  kept = sum(int(m.sum()) for m in (masks['dense']['kernel'], masks['out']['kernel']))
  assert kept == len(allw) // 2
  # The larger-scale 'out' layer keeps more of its weights under a global threshold.
  assert masks['out']['kernel'].mean() > masks['dense']['kernel'].mean()
  per_layer = pruning.magnitude_masks(p, 0.5, scope='layer')
  assert per_layer['out']['kernel'].mean() == per_layer['dense']['kernel'].mean() == 0.5


def test_nm_masks_keep_exactly_n_of_every_m_inputs():
  p = _params()
  masks = pruning.nm_masks(p, 2, 4)
  g = np.asarray(masks['dense']['kernel']).reshape(4, 4, 8)
  assert (g.sum(axis=1) == 2).all()
  w = np.abs(np.asarray(p['dense']['kernel'])).reshape(4, 4, 8)
  kept_min = np.where(g, w, np.inf).min(axis=1)
  dropped_max = np.where(g, -np.inf, w).max(axis=1)
  assert (kept_min >= dropped_max).all()
  with pytest.raises(ValueError, match='divide by m=3'):
    pruning.nm_masks(p, 1, 3)


def test_polynomial_schedule():
  s = [float(pruning.polynomial_sparsity(t, 0.8, 10, 20)) for t in (0, 10, 15, 20, 30)]
  np.testing.assert_allclose(s, [0.0, 0.0, 0.8 * (1 - 0.5 ** 3), 0.8, 0.8])
  assert float(pruning.polynomial_sparsity(5, 0.5, 5, 5)) == 0.5  # one shot


@pytest.mark.parametrize('cfg', [
    pruning.PruneConfig(sparsity=0.75, begin_step=2, end_step=8, every=2),
    pruning.PruneConfig(kind='nm', n=2, m=4, begin_step=1),
])
def test_pruned_weights_are_zero_and_stay_zero_through_training(cfg):
  params = _params()
  tx = optax.chain(optax.adamw(1e-2, weight_decay=0.1), pruning.prune(cfg))
  state = tx.init(params)

  @jax.jit
  def step(params, state, x):
    loss = lambda p: jnp.sum((jnp.tanh(x @ p['dense']['kernel'] + p['dense']['bias'])
                              @ p['out']['kernel']) ** 2)
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    return optax.apply_updates(params, updates), state

  zeros_seen = None
  for t in range(14):
    params, state = step(params, state, jnp.asarray(RNG.normal(size=(5, 16)), jnp.float32))
    mask = state[1].mask
    for key in ('dense', 'out'):
      w, m = np.asarray(params[key]['kernel']), np.asarray(mask[key]['kernel'])
      assert (w[~m] == 0).all()  # the mask's zeros are real zeros
    zero = np.asarray(params['dense']['kernel']) == 0
    if zeros_seen is not None:
      assert zero[zeros_seen].all()  # once pruned, never regrown
    zeros_seen = zero
  final = pruning.sparsity_of(params)
  assert final == pytest.approx(0.75 if cfg.kind == 'magnitude' else 0.5, abs=0.02)
  assert np.asarray(params['dense']['bias']).all()  # biases untouched


def test_bad_prune_config_errors():
  with pytest.raises(ValueError, match="prune.kind='random'"):
    pruning.PruneConfig(kind='random')
  with pytest.raises(ValueError, match='need 0 < n < m'):
    pruning.PruneConfig(kind='nm', n=4, m=4)
  with pytest.raises(ValueError, match='matches no dense kernel'):
    pruning.magnitude_masks(_params(), 0.5, targets='nothing')
