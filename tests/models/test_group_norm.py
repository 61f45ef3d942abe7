"""genai/models/group_norm.py against flax's nn.GroupNorm: values, every gradient, dtypes,
forward mode under conv_grads.plain_autodiff(), and a rolled scan."""
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import pytest

from genai.models import conv_grads
from genai.models.group_norm import group_norm


def _case(shape=(3, 5, 6, 24), groups=4, seed=0):
  k = jax.random.split(jax.random.key(seed), 4)
  x = jax.random.normal(k[0], shape) * 2 + 1
  c = shape[-1]
  scale = 1 + 0.3 * jax.random.normal(k[1], (c,))
  bias = 0.5 * jax.random.normal(k[2], (c,))
  ct = jax.random.normal(k[3], shape)
  ref = nn.GroupNorm(num_groups=groups, epsilon=1e-6)
  ref_fn = lambda x, s, b: ref.apply({'params': {'scale': s, 'bias': b}}, x)
  ours_fn = lambda x, s, b: group_norm(x, s, b, groups, 1e-6)
  return (x, scale, bias), ct, ours_fn, ref_fn


@pytest.mark.parametrize('shape,groups', [((3, 5, 6, 24), 4), ((2, 7, 7, 64), 8),
                                          ((2, 4, 4, 6), 6), ((1, 3, 3, 8), 1)])
def test_values_and_gradients_match_flax(shape, groups):
  args, ct, ours, ref = _case(shape, groups)
  np.testing.assert_allclose(ours(*args), ref(*args), rtol=1e-5, atol=1e-5)
  loss = lambda f: (lambda *a: jnp.sum(f(*a) * ct))
  got = jax.grad(loss(ours), argnums=(0, 1, 2))(*args)
  want = jax.grad(loss(ref), argnums=(0, 1, 2))(*args)
  for name, a, b in zip(('x', 'scale', 'bias'), got, want):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()),
                               err_msg=name)


def test_constant_group_is_finite():
  # Zero variance: epsilon keeps the output and the gradient finite.
  x = jnp.ones((2, 3, 3, 8))
  y, g = jax.value_and_grad(lambda x: jnp.sum(group_norm(x, jnp.ones(8), jnp.zeros(8), 2)
                                             ** 2))(x)
  assert np.isfinite(y) and np.all(np.isfinite(g))


def test_dtype_is_kept_and_math_is_float32():
  args, _, ours, ref = _case()
  x16 = args[0].astype(jnp.bfloat16)
  y = ours(x16, *args[1:])
  assert y.dtype == jnp.bfloat16
  np.testing.assert_allclose(y.astype(jnp.float32), ref(x16.astype(jnp.float32), *args[1:]),
                             atol=0.05)
  g = jax.grad(lambda x: jnp.sum(ours(x, *args[1:]).astype(jnp.float32)))(x16)
  assert g.dtype == jnp.bfloat16


def test_forward_mode_needs_plain_autodiff():
  args, _, ours, ref = _case()
  tangent = jnp.ones_like(args[0])
  with pytest.raises(TypeError, match='forward-mode'):
    jax.jvp(lambda x: ours(x, *args[1:]), (args[0],), (tangent,))
  with conv_grads.plain_autodiff():
    got = jax.jvp(lambda x: ours(x, *args[1:]), (args[0],), (tangent,))
  want = jax.jvp(lambda x: ref(x, *args[1:]), (args[0],), (tangent,))
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_rolled_scan_of_updates_matches_flax():
  (x, scale, bias), ct, ours, ref = _case()

  def train(f):
    def body(params, _):
      g = jax.grad(lambda p: jnp.sum(f(x, *p) * ct))(params)
      return jax.tree.map(lambda p, g: p - 1e-2 * g, params, g), None
    return jax.jit(lambda p: lax.scan(body, p, None, length=4)[0])((scale, bias))

  for a, b in zip(train(ours), train(ref)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
