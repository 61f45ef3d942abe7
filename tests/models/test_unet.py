"""UNet denoiser: shapes for 8x8 / 28x28, conditional and unconditional, and errors.

Numerics are checked on one jitted 8x8 model (eager flax compiles op by op: minutes for a
UNet on this CPU); other shapes are traced with jax.eval_shape, which compiles nothing.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flax.linen as nn

from genai.models.unet import GroupNorm, UNet, depth_to_space, space_to_depth, upsample2x

TINY = dict(features=8, num_heads=2, num_groups=4)


def _perturbed(params):
  """Random weights everywhere (the output conv is zero-initialised)."""
  leaves, tree = jax.tree.flatten(params)
  rng = np.random.default_rng(7)
  return jax.tree.unflatten(tree, [l + 0.1 * rng.standard_normal(l.shape, np.float32)
                                   for l in leaves])


def test_conditional_8x8_zero_init_uses_labels_time_and_dropout():
  m = UNet(out_channels=1, channel_mults=(1, 2), num_classes=10, dropout=0.5, **TINY)
  x = jax.random.normal(jax.random.key(0), (3, 8, 8, 1))
  t, y = jnp.array([0.0, 10.0, 999.0]), jnp.array([0, 4, 10])  # 10 = "no label"
  # An 'unsafe_rbg' key: jitted init with threefry keys compiles ~4x slower on CPU.
  out, variables = jax.jit(m.init_with_output)(jax.random.key(1, impl='unsafe_rbg'), x, t, y)
  assert out.shape == x.shape and bool(jnp.all(out == 0))  # zero-init output conv
  p = _perturbed(variables['params'])

  @jax.jit
  def f(p, x, t, y, rng):
    return m.apply({'params': p}, x, t, y, train=True, rngs={'dropout': rng})

  k0, k1 = jax.random.key(0, impl='unsafe_rbg'), jax.random.key(1, impl='unsafe_rbg')
  a = f(p, x, t, y, k0)
  assert a.shape == x.shape and float(jnp.std(a)) > 0
  np.testing.assert_array_equal(a, f(p, x, t, y, k0))
  assert not np.allclose(a, f(p, x, t, jnp.array([10, 10, 10]), k0))  # labels are used
  assert not np.allclose(a, f(p, x, t + 100, y, k0))                  # t is used
  assert not np.allclose(a, f(p, x, t, y, k1))                        # dropout is on
  with pytest.raises(ValueError, match='class-conditional'):
    jax.eval_shape(lambda: m.apply({'params': p}, x, t, None))


def _shape(model, x_shape, labels=None):
  """Output shape and parameter count, traced without compiling."""
  x, t = jnp.zeros(x_shape), jnp.zeros(x_shape[:1])
  out, variables = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), x, t,
                                                                 labels))
  return out.shape, sum(np.prod(v.shape) for v in jax.tree.leaves(variables))


def test_28x28_two_and_three_levels_conditional_and_not():
  for mults in ((1, 2), (1, 2, 2)):  # 28 -> 14, and 28 -> 14 -> 7
    m = UNet(out_channels=1, channel_mults=mults, attention_levels=(len(mults) - 1,), **TINY)
    assert _shape(m, (2, 28, 28, 1))[0] == (2, 28, 28, 1)
    with pytest.raises(ValueError, match='unconditional'):
      _shape(m, (2, 28, 28, 1), jnp.zeros(2, jnp.int32))
    mc = UNet(out_channels=1, channel_mults=mults, num_classes=10, **TINY)
    shape, n_params = _shape(mc, (2, 28, 28, 1), jnp.zeros(2, jnp.int32))
    assert shape == (2, 28, 28, 1) and n_params > _shape(m, (2, 28, 28, 1))[1]


def test_odd_size_and_rgb_output_channels():
  m = UNet(out_channels=3, channel_mults=(1, 2), attention_levels=(), **TINY)
  assert _shape(m, (2, 7, 7, 3))[0] == (2, 7, 7, 3)  # 7 -> 4 -> back to 7


def test_space_to_depth_patch_stem():
  x = np.arange(2 * 4 * 6 * 3, dtype=np.float32).reshape(2, 4, 6, 3)
  y = np.asarray(space_to_depth(x, 2))
  assert y.shape == (2, 2, 3, 12)
  # Reference: channel vector of output cell (i, j) is the 2x2 block, row-major, C innermost.
  np.testing.assert_array_equal(y[1, 1, 2], x[1, 2:4, 4:6].reshape(-1))
  np.testing.assert_array_equal(depth_to_space(y, 2), x)
  m = UNet(out_channels=1, channel_mults=(1, 2), attention_levels=(), patch_size=2, **TINY)
  shape, n_params = _shape(m, (2, 28, 28, 1))  # convs run at 14 and 7
  assert shape == (2, 28, 28, 1)
  # Only conv_in and conv_out grow with the patch: (4 - 1) * 9 * 8 inputs, 9 * 8 * 3 + 3 outputs.
  assert n_params - _shape(UNet(out_channels=1, channel_mults=(1, 2), attention_levels=(),
                                **TINY), (2, 28, 28, 1))[1] == 3 * 9 * 8 + 9 * 8 * 3 + 3
  with pytest.raises(ValueError, match='patch_size=3'):
    _shape(UNet(out_channels=1, patch_size=3, **TINY), (1, 28, 28, 1))


def test_config_errors():
  x, t = jnp.zeros((1, 8, 8, 1)), jnp.zeros(1)
  init = lambda m, x: jax.eval_shape(m.init, jax.random.key(0), x, t)
  with pytest.raises(ValueError, match='attention_levels'):
    init(UNet(out_channels=1, channel_mults=(1, 2), attention_levels=(2,), **TINY), x)
  with pytest.raises(ValueError, match='num_heads'):
    init(UNet(out_channels=1, features=6, channel_mults=(1,), attention_levels=(),
              num_heads=4), x)
  with pytest.raises(ValueError, match=r'\[B, H, W, C\]'):
    init(UNet(out_channels=1, **TINY), jnp.zeros((8, 8, 1)))


def test_group_norm_matches_flax_and_upsample():
  x = jax.random.normal(jax.random.key(0), (3, 5, 6, 12)) * 3 + 1
  ours, ref = GroupNorm(4), nn.GroupNorm(num_groups=4, epsilon=1e-6)
  p = ours.init(jax.random.key(1), x)
  p = jax.tree.map(lambda a: a + jnp.arange(a.size).reshape(a.shape) * 0.1, p)
  np.testing.assert_allclose(ours.apply(p, x), ref.apply(p, x), rtol=1e-4, atol=1e-4)
  y = np.arange(2 * 3).reshape(1, 2, 3, 1)
  np.testing.assert_array_equal(upsample2x(y, 3, 5)[0, ..., 0],
                                [[0, 0, 1, 1, 2], [0, 0, 1, 1, 2], [3, 3, 4, 4, 5]])
