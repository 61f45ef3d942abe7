"""genai/models/conv_grads.py: the same convolution and gradients as lax's autodiff, and
gradients XLA:CPU keeps in its canonical (fast-kernel) form inside a rolled scan."""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from genai.models import conv_grads

NHWC = ('NHWC', 'HWIO', 'NHWC')


def _pair(shape, k, stride, padding, out=5, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
  w = jnp.asarray(rng.standard_normal((*k, shape[-1], out)), jnp.float32)
  ref = lambda x, w: lax.conv_general_dilated(x, w, stride, padding, dimension_numbers=NHWC)
  new = lambda x, w: conv_grads.conv_general_dilated(x, w, stride, padding,
                                                     dimension_numbers=NHWC)
  return x, w, ref, new


@pytest.mark.parametrize('shape,k,stride,padding', [
    ((3, 14, 14, 8), (3, 3), (1, 1), 'SAME'),
    ((3, 14, 14, 8), (3, 3), (2, 2), 'SAME'),
    ((3, 7, 7, 8), (3, 3), (2, 2), 'SAME'),      # odd size, stride 2
    ((3, 14, 14, 8), (1, 1), (1, 1), 'SAME'),
    ((3, 14, 14, 8), (4, 4), (2, 2), 'SAME'),    # DCGAN's discriminator
    ((3, 9, 9, 8), (3, 3), (1, 1), 'VALID'),
    ((3, 9, 11, 8), (3, 2), (2, 1), ((2, 0), (1, 1))),
])
def test_forward_and_gradients_match_autodiff(shape, k, stride, padding):
  x, w, ref, new = _pair(shape, k, stride, padding)
  y = ref(x, w)
  np.testing.assert_allclose(new(x, w), y, rtol=1e-6, atol=1e-6)
  dy = jnp.asarray(np.random.default_rng(1).standard_normal(y.shape), jnp.float32)
  for got, want in zip(jax.vjp(new, x, w)[1](dy), jax.vjp(ref, x, w)[1](dy)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(jnp.abs(want).max()))
  jaxpr = str(jax.make_jaxpr(lambda x, w: jax.vjp(new, x, w)[1](dy))(x, w))
  assert 'custom_vjp' in jaxpr


def test_other_forms_take_autodiff_unchanged():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 4, 9, 9)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((6, 2, 3, 3)), jnp.float32)
  for kw in ({'dimension_numbers': None},                                   # NCHW / OIHW
             {'dimension_numbers': None, 'feature_group_count': 2},
             {'dimension_numbers': None, 'rhs_dilation': (2, 2)}):
    ww = w if kw.get('feature_group_count') == 2 else jnp.concatenate([w, w], axis=1)
    f = lambda x, w: conv_grads.conv_general_dilated(x, w, (1, 1), 'SAME', **kw)
    g = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), 'SAME', **kw)
    np.testing.assert_array_equal(f(x, ww), g(x, ww))
    assert 'custom_vjp' not in str(jax.make_jaxpr(jax.grad(lambda x: f(x, ww).sum()))(x))


def test_nn_conv_keeps_its_parameters():
  x = jnp.ones((2, 8, 8, 3))
  plain = nn.Conv(4, (3, 3))
  ours = nn.Conv(4, (3, 3), conv_general_dilated=conv_grads.conv_general_dilated)
  p = plain.init(jax.random.key(0), x)
  q = ours.init(jax.random.key(0), x)
  assert jax.tree.structure(p) == jax.tree.structure(q)
  np.testing.assert_array_equal(plain.apply(p, x), ours.apply(p, x))


def _conv_labels(fn, *args) -> set[str]:
  text = jax.jit(fn).lower(*args).compile().as_text()
  return {re.search(r'dim_labels=([^,\s]+)', line).group(1)
          for line in text.splitlines() if ' convolution(' in line}


def test_rolled_scan_keeps_gradients_canonical():
  """Inside a while loop XLA:CPU does not rewrite autodiff's gradient convolutions into the
  form its Eigen/YNNPACK kernels take; these are already in it (one label for all)."""
  x, w, _, new = _pair((4, 14, 14, 8), (3, 3), (1, 1), 'SAME', out=8)
  w2 = w * 0.5

  def steps(w, x):
    def body(carry, _):
      w, w2 = carry
      loss = lambda w, w2: jnp.sum(new(jax.nn.relu(new(x, w)), w2) ** 2)
      gw, gw2 = jax.grad(loss, argnums=(0, 1))(w, w2)
      return (w - 1e-3 * gw, w2 - 1e-3 * gw2), None
    return lax.scan(body, (w, w2), None, length=3)[0]

  assert _conv_labels(steps, w, x) == {'b01f_01io->b01f'}


def test_forward_mode_under_plain_autodiff():
  x, w, ref, new = _pair((2, 8, 8, 4), (3, 3), (1, 1), 'SAME')
  with pytest.raises(TypeError, match='forward-mode'):
    jax.jvp(lambda x: new(x, w), (x,), (x,))
  with conv_grads.plain_autodiff():
    got = jax.jvp(lambda x: new(x, w), (x,), (x,))
  want = jax.jvp(lambda x: ref(x, w), (x,), (x,))
  for a, b in zip(got, want):
    np.testing.assert_array_equal(a, b)
  assert 'custom_vjp' in str(jax.make_jaxpr(jax.grad(lambda x: new(x, w).sum()))(x))
