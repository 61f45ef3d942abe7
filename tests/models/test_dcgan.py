"""DCGAN generator/discriminator: shapes, the fast transposed conv, spectral norm."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genai.models import dcgan


@pytest.mark.parametrize('size, channels, ups', [(8, 1, 2), (28, 3, 2)])
def test_shapes_and_range(size, channels, ups):
  g = dcgan.Generator(image_size=size, channels=channels, width=8, num_upsamples=ups)
  d = dcgan.Discriminator(width=8, num_downsamples=ups)
  z = jax.random.normal(jax.random.key(0), (3, 4))

  @jax.jit  # One compilation instead of one per op.
  def run(z):
    gv = g.init(jax.random.key(1), z, train=False)
    x, _ = g.apply(gv, z, train=True, mutable=['batch_stats'])
    dv = d.init(jax.random.key(2), x)
    return gv, x, g.apply(gv, z, train=False), d.apply(dv, x)

  gv, x, x_eval, logits = run(z)
  assert x.shape == x_eval.shape == (3, size, size, channels)
  assert float(jnp.max(jnp.abs(x))) <= 1.0
  assert logits.shape == (3,)
  assert set(gv) == {'params', 'batch_stats'}
  no_bn = dcgan.Generator(image_size=size, channels=channels, width=8, num_upsamples=ups,
                          norm='none')
  assert set(jax.eval_shape(lambda: no_bn.init(jax.random.key(1), z, train=False))) == {
      'params'}


def test_side_not_divisible_is_a_clear_error():
  g = dcgan.Generator(image_size=10, num_upsamples=2)
  with pytest.raises(ValueError, match='not divisible'):
    g.init(jax.random.key(0), jnp.zeros((1, 4)), train=False)


@pytest.mark.parametrize('h, w', [(7, 7), (2, 5)])
def test_conv_transpose_2x_equals_flax_conv_transpose(h, w):
  x = jax.random.normal(jax.random.key(0), (2, h, w, 5))
  fast = dcgan.ConvTranspose2x(3)
  variables = jax.eval_shape(lambda: fast.init(jax.random.key(1), x))
  variables = jax.tree.map(lambda p: jax.random.normal(jax.random.key(2), p.shape), variables)
  ref = jax.jit(nn.ConvTranspose(3, (4, 4), strides=(2, 2), padding='SAME').apply)(
      variables, x)
  out = jax.jit(fast.apply)(variables, x)
  assert out.shape == (2, 2 * h, 2 * w, 3)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_spectral_norm_bounds_the_largest_singular_value():
  d = dcgan.Discriminator(width=4, num_downsamples=2, spectral_norm=True)
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
  variables = jax.jit(d.init)(jax.random.key(1), x)
  # Scale the weights up so an unnormalised layer would have singular values >> 1.
  params = jax.tree.map(lambda p: 5.0 * p, variables['params'])

  @jax.jit
  def power_iterations(spectral):  # One power iteration per training forward pass.
    def body(_, s):
      _, new = d.apply({'params': params, dcgan.SPECTRAL: s}, x, update_stats=True,
                       mutable=[dcgan.SPECTRAL])
      return new[dcgan.SPECTRAL]
    return jax.lax.fori_loop(0, 50, body, spectral)

  spectral = power_iterations(variables[dcgan.SPECTRAL])
  flat = jax.tree_util.tree_flatten_with_path(spectral)[0]
  sigmas = {jax.tree_util.keystr(p): float(v) for p, v in flat if 'sigma' in str(p)}
  assert len(sigmas) == 3  # down0, down1, logit
  normalised = {}
  for name in ('down0', 'down1', 'logit'):
    kernel = np.asarray(params[name]['kernel'])
    matrix = kernel.reshape(-1, kernel.shape[-1])  # flax flattens conv kernels this way
    top = np.linalg.svd(matrix, compute_uv=False)[0]
    assert top > 2.0
    sigma = next(v for k, v in sigmas.items() if f'{name}/kernel/sigma' in k)
    np.testing.assert_allclose(sigma, top, rtol=1e-4)
    np.testing.assert_allclose(np.linalg.svd(matrix / sigma, compute_uv=False)[0], 1.0,
                               rtol=1e-4)
    normalised[name] = {'kernel': jnp.asarray(kernel / sigma), 'bias': params[name]['bias']}
  # The forward pass uses W / sigma: it equals a plain discriminator with those weights.
  out = jax.jit(lambda v: d.apply(v, x, update_stats=False))(
      {'params': params, dcgan.SPECTRAL: spectral})
  plain = dcgan.Discriminator(width=4, num_downsamples=2)
  np.testing.assert_allclose(out, jax.jit(plain.apply)({'params': normalised}, x), rtol=1e-3,
                             atol=1e-4)
