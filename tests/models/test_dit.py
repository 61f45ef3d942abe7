"""The DiT backbone: shapes, adaLN-Zero init, patchify, positions, conditioning, dropout."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import REPO, load_config
from genai.models import dit


def _tiny(**kw):
  fields = dict(patch_size=2, d_model=16, num_layers=1, num_heads=2, mlp_ratio=2.0)
  fields.update(kw)
  return dit.DiT(**fields)


# These tiny models compile in about half the time without XLA's backend optimisations.
_jit = functools.partial(jax.jit, compiler_options={'xla_backend_optimization_level': 0,
                                                    'xla_llvm_disable_expensive_passes': True})


@functools.cache
def _jitted(m, train):
  """One compile per (module, train, shapes) instead of hundreds of eager op dispatches."""
  init = _jit(lambda x, t, y: m.init(jax.random.key(0), x, t, y)['params'])
  apply = _jit(lambda p, x, t, y, r: m.apply({'params': p}, x, t, y, train=train,
                                             rngs={'dropout': r}))
  return init, apply


def _init(m, x, t, y=None):
  return _jitted(m, False)[0](x, t, y)


def _apply(m, params, x, t, y=None, train=False, rng=0):
  return np.asarray(_jitted(m, train)[1](params, x, t, y, jax.random.key(rng)))


def _inputs(b=3, h=8, w=8, c=1, num_classes=0, seed=0):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(k1, (b, h, w, c))
  t = jax.random.uniform(k2, (b,), maxval=100.0)
  y = jax.random.randint(k3, (b,), 0, num_classes + 1) if num_classes else None
  return x, t, y


# --- The MAE / DiT reference (facebookresearch/DiT models.py), re-typed in numpy. ---------
def _ref_1d(embed_dim, pos):
  omega = np.arange(embed_dim // 2, dtype=np.float64)
  omega /= embed_dim / 2.
  omega = 1. / 10000**omega
  pos = pos.reshape(-1)
  out = np.einsum('m,d->md', pos, omega)
  return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def _ref_get_2d_sincos_pos_embed(embed_dim, grid_size):
  grid_h = np.arange(grid_size, dtype=np.float32)
  grid_w = np.arange(grid_size, dtype=np.float32)
  grid = np.meshgrid(grid_w, grid_h)  # here w goes first
  grid = np.stack(grid, axis=0).reshape([2, 1, grid_size, grid_size])
  emb_h = _ref_1d(embed_dim // 2, grid[0])
  emb_w = _ref_1d(embed_dim // 2, grid[1])
  return np.concatenate([emb_h, emb_w], axis=1)


@pytest.mark.parametrize('dim,grid', [(16, 4), (64, 7), (128, 14)])
def test_pos_embed_matches_dit_reference(dim, grid):
  ours = dit.sincos_pos_embed_2d(dim, (grid, grid))
  assert ours.shape == (grid * grid, dim) and ours.dtype == np.float32
  np.testing.assert_allclose(ours, _ref_get_2d_sincos_pos_embed(dim, grid), atol=1e-6)


def test_pos_embed_rectangular_grid_and_bad_dim():
  # Token (r, c) of a 3x5 grid: first half encodes the column, second half the row.
  emb = dit.sincos_pos_embed_2d(8, (3, 5))
  assert emb.shape == (15, 8)
  omega = 1.0 / 10000 ** (np.arange(2) / 2.0)
  for r in range(3):
    for c in range(5):
      ref = np.concatenate([np.sin(c * omega), np.cos(c * omega),
                            np.sin(r * omega), np.cos(r * omega)])
      np.testing.assert_allclose(emb[r * 5 + c], ref, atol=1e-6)
  with pytest.raises(ValueError, match='divisible by 4'):
    dit.sincos_pos_embed_2d(6, (2, 2))


@pytest.mark.parametrize('p,h,w,c', [(1, 4, 4, 1), (2, 8, 6, 3), (4, 28, 28, 1), (7, 28, 28, 2)])
def test_patchify_matches_numpy_and_round_trips(p, h, w, c):
  x = np.random.default_rng(0).normal(size=(2, h, w, c)).astype(np.float32)
  tokens = np.asarray(dit.patchify(jnp.asarray(x), p))
  # Reference: token (i, j) is the pixel block x[:, i*p:(i+1)*p, j*p:(j+1)*p, :] flattened.
  gh, gw = h // p, w // p
  ref = np.stack([x[:, i * p:(i + 1) * p, j * p:(j + 1) * p, :].reshape(2, -1)
                  for i in range(gh) for j in range(gw)], axis=1)
  np.testing.assert_array_equal(tokens, ref)
  np.testing.assert_array_equal(np.asarray(dit.unpatchify(jnp.asarray(tokens), (gh, gw), p)), x)


@pytest.mark.parametrize('p', [3, 5])
def test_bad_patch_size_is_a_clear_error(p):
  x, t, _ = _inputs(h=28, w=28)
  with pytest.raises(ValueError, match=rf'28x28 is not divisible by model.patch_size={p}.*'
                                       r'\[1, 2, 4, 7, 14, 28\]'):
    jax.eval_shape(_tiny(patch_size=p).init, jax.random.key(0), x, t)


# Shared by several tests so that their jitted functions compile once.
COND = _tiny(num_classes=10)
UNCOND = _tiny()


@pytest.mark.parametrize('m,h,w,c', [
    (COND, 8, 8, 1), (UNCOND, 8, 8, 1),
    (_tiny(patch_size=4, num_classes=10), 28, 28, 1), (_tiny(out_channels=6), 8, 12, 3)],
    ids=['cond-p2', 'uncond-p2', 'p4-28x28', 'rect-out6'])
def test_output_shape_and_exact_zero_at_init(m, h, w, c):
  x, t, y = _inputs(h=h, w=w, c=c, num_classes=m.num_classes)
  params = _init(m, x, t, y)
  out = _apply(m, params, x, t, y)
  assert out.shape == (3, h, w, m.out_channels or c) and out.dtype == np.float32
  # adaLN-Zero: gates and final layer start at zero, so the output is exactly 0.
  assert np.all(out == 0.0)
  # ...and the initialisation is not degenerate elsewhere.
  assert np.abs(params['block_0']['qkv']['kernel']).max() > 0
  assert np.abs(params['patch_embed']['kernel']).max() > 0
  assert params['final']['kernel'].shape == (16, m.patch_size ** 2 * (m.out_channels or c))


def _perturbed(params, seed=0, scale=0.1):
  leaves, tree = jax.tree.flatten(params)
  rng = np.random.default_rng(seed)
  return jax.tree.unflatten(tree, [l + scale * rng.normal(size=l.shape).astype(np.float32)
                                   for l in leaves])


def _cond_setup():
  x, t, y = _inputs(num_classes=10)
  return x, t, y, _perturbed(_init(COND, x, t, y))


def test_conditioning_changes_output_with_nonzero_weights():
  x, t, y, params = _cond_setup()
  base = _apply(COND, params, x, t, y)
  assert np.abs(base).mean() > 1e-3
  assert np.abs(_apply(COND, params, x, t + 10.0, y) - base).max() > 1e-3  # timestep
  y2 = y.at[0].set((y[0] + 1) % 11)
  diff = np.abs(_apply(COND, params, x, t, y2) - base).max(axis=(1, 2, 3))
  assert diff[0] > 1e-3 and np.all(diff[1:] < 1e-5)                        # label, per example
  # Tokens attend to each other: changing one pixel moves the output far away from it.
  moved = np.abs(_apply(COND, params, x.at[:, 0, 0, 0].add(1.0), t, y) - base)
  assert moved[:, 6:, 6:].max() > 1e-4


def test_conditioning_learned_by_gradient_steps():
  """Step 1 trains only the (zero) final linear; from step 2 the adaLN weights move and
  the output depends on t and y: adaLN-Zero is trainable, not stuck at zero."""
  m = COND
  x, t, y = _inputs(num_classes=10)
  target = jax.random.normal(jax.random.key(5), x.shape)
  params = _init(m, x, t, y)
  tx = optax.sgd(0.1)
  opt = tx.init(params)

  @_jit
  def step(params, opt):
    loss = lambda p: jnp.mean((m.apply({'params': p}, x, t, y) - target) ** 2)
    grads = jax.grad(loss)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt

  def cond_effect(params):
    a = _apply(m, params, x, t, y)
    b = _apply(m, params, x, t + 25.0, (y + 1) % 11)
    return float(np.abs(a - b).max())

  params, opt = step(params, opt)
  assert np.abs(params['final']['kernel']).max() > 0
  assert np.all(np.asarray(params['final_adaln']['kernel']) == 0)
  assert cond_effect(params) == 0.0
  params, opt = step(params, opt)
  assert np.abs(params['final_adaln']['kernel']).max() > 0
  assert np.abs(params['block_0']['adaln']['kernel']).max() > 0
  assert cond_effect(params) > 1e-6


def test_label_table_and_errors():
  x, t, y = _inputs(num_classes=10)
  params = _init(COND, x, t, y)
  assert params['cond']['label']['embedding'].shape == (11, 16)  # 10 classes + the null label
  with pytest.raises(ValueError, match='pass labels'):
    _apply(COND, params, x, t, None)
  uparams = _init(UNCOND, x, t)
  assert 'label' not in uparams['cond']
  with pytest.raises(ValueError, match='num_classes > 0'):
    _apply(UNCOND, uparams, x, t, y)
  with pytest.raises(ValueError, match='divisible by model.num_heads'):
    jax.eval_shape(_tiny(num_heads=3).init, jax.random.key(0), x, t)
  with pytest.raises(ValueError, match=r'images \[B, H, W, C\]'):
    jax.eval_shape(UNCOND.init, jax.random.key(0), x[..., 0], t)


def test_dropout_only_in_train_mode():
  m = _tiny(num_classes=10, dropout=0.5)
  x, t, y, params = _cond_setup()
  run = lambda train, r: _apply(m, params, x, t, y, train=train, rng=r)
  np.testing.assert_array_equal(run(False, 0), run(False, 1))
  assert np.abs(run(True, 0) - run(True, 1)).max() > 1e-3
  assert np.abs(run(True, 0) - run(False, 0)).max() > 1e-3
  np.testing.assert_array_equal(run(True, 7), run(True, 7))
  # dropout=0: train mode is deterministic.
  np.testing.assert_array_equal(_apply(COND, params, x, t, y, train=True, rng=1),
                                _apply(COND, params, x, t, y, train=True, rng=2))


def test_bfloat16_compute_keeps_float32_params_and_output():
  x, t, y, params = _cond_setup()
  out = _apply(_tiny(num_classes=10, dtype='bfloat16'), params, x, t, y)
  ref = _apply(COND, params, x, t, y)
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, ref, atol=0.1 * float(np.abs(ref).max()))


def test_dit_mnist_config_fits_28x28():
  for arg in ('', 'runlocal,cond,path=/some/mnist'):
    config = load_config(REPO / 'configs/diffusion/dit_mnist.py', arg)
    assert config.model.backbone == 'dit'
    d = config.model.dit
    assert dit.check_patch_size((28, 28), d.patch_size) == (28 // d.patch_size,) * 2
    assert d.d_model % 4 == 0 and d.d_model % d.num_heads == 0
  assert config.data.source == 'idx' and config.model.class_conditional


@pytest.mark.slow  # a training
def test_dit_digits_trains_in_runlocal_mode(tmp_path):
  from experiments import diffusion  # pylint: disable=g-import-not-at-top
  config = load_config(REPO / 'configs/diffusion/dit_digits.py')
  assert config.model.backbone == 'dit'
  state = diffusion.train_and_evaluate(config, str(tmp_path))
  assert int(state['step']) == config.train.num_steps
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state['params']))
  # The trained DiT is no longer the all-zero function.
  assert np.abs(np.asarray(state['params']['final']['kernel'])).max() > 0
