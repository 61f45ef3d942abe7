"""EMA of parameters against a hand-rolled numpy recursion."""
import jax.numpy as jnp
import numpy as np

from genai.train import ema


def test_ema_update_matches_numpy_recursion():
  rng = np.random.default_rng(0)
  params = [{'w': rng.normal(size=(3, 2)).astype(np.float32)} for _ in range(5)]
  e, ref = {'w': jnp.zeros((3, 2))}, np.zeros((3, 2))
  for p in params:
    e = ema.ema_update(e, p, 0.9)
    ref = 0.9 * ref + 0.1 * p['w']
  np.testing.assert_allclose(e['w'], ref, rtol=1e-6, atol=1e-7)


def test_ema_decay_warmup_ramp():
  assert float(ema.ema_decay(0, 0.999)) == np.float32(0.1)
  np.testing.assert_allclose(float(ema.ema_decay(90, 0.999)), 91 / 100, rtol=1e-6)
  np.testing.assert_allclose(float(ema.ema_decay(10**6, 0.999)), 0.999, rtol=1e-6)
  np.testing.assert_allclose(float(ema.ema_decay(0, 0.999, warmup=False)), 0.999, rtol=1e-6)
