"""benchmarks/torch_reference_conv.py: the PyTorch ports of the diffusion UNet
(configs/diffusion/mnist.py) and the DCGAN (configs/gan/mnist.py) are genai's models: same
parameter count, and with genai's (randomised) parameters copied in, the same outputs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')

from benchmarks import torch_reference_conv as ref  # pylint: disable=wrong-import-position
from configs.diffusion import mnist as diffusion_mnist  # pylint: disable=wrong-import-position
from configs.gan import mnist as gan_mnist  # pylint: disable=wrong-import-position
from genai.families import diffusion as diffusion_family  # pylint: disable=wrong-import-position
from genai.families import gan as gan_family  # pylint: disable=wrong-import-position

SHAPE = (28, 28, 1)


def _random_params(shapes, seed):
  """Random values of genai's parameter shapes (jax.eval_shape of the init: nothing to
  compile): kernels ~ N(0, 1/fan_in), vectors ~ N(0, 0.2^2) (+1 for norm scales), so no
  wrong copy or layout can hide behind a zero-initialised output conv or unit scales."""
  rng = np.random.default_rng(seed)

  def draw(path, s):
    if len(s.shape) >= 2:
      return (rng.normal(0, 1, s.shape) / np.sqrt(np.prod(s.shape[:-1]))).astype(np.float32)
    base = 1.0 if getattr(path[-1], 'key', '') in ('scale', 'var') else 0.0
    return (base + rng.normal(0, 0.2, s.shape)).astype(np.float32)
  return jax.tree_util.tree_map_with_path(draw, shapes)


def _nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def test_unet_port_matches_genai():
  config = diffusion_mnist.get_config()
  model = diffusion_family.make_backbone(config.model, SHAPE, 0)
  x = np.random.default_rng(0).uniform(-1, 1, (3,) + SHAPE).astype(np.float32)
  t = np.array([0.0, 417.0, 999.0], np.float32)
  params = _random_params(jax.eval_shape(model.init, jax.random.key(0), x[:1], t[:1])['params'],
                          1)
  want = np.asarray(jax.jit(model.apply)({'params': params}, x, t))

  u = config.model.unet
  port = ref.UNet(image_size=28, channels=1, features=u.features,
                  channel_mults=u.channel_mults, num_res_blocks=u.num_res_blocks,
                  attention_levels=u.attention_levels, num_heads=u.num_heads,
                  num_groups=u.num_groups, cond_features=u.cond_features,
                  patch_size=u.patch_size)
  n_jax = sum(p.size for p in jax.tree.leaves(params))
  assert ref.param_count(port) == n_jax
  assert round(n_jax / 1e6, 3) == 0.681   # the backbone benchmarks/diffusion_step_speed times
  ref.load_unet(port, params)
  with torch.no_grad():
    got = port(_nchw(x), torch.from_numpy(t)).numpy().transpose(0, 2, 3, 1)
  assert np.abs(want).max() > 1.0  # not a trivial output
  np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=1e-4)


def test_dcgan_ports_match_genai():
  config = gan_mnist.get_config()
  nets = gan_family.GanNets(config, SHAPE)
  z = np.random.default_rng(4).normal(size=(5, config.model.latent_dim)).astype(np.float32)
  g_vars = jax.eval_shape(lambda k, z: nets.gen.init(k, z, train=False), jax.random.key(0), z[:1])
  d_vars = jax.eval_shape(nets.disc.init, jax.random.key(0), np.zeros((1,) + SHAPE, np.float32))
  g_params, d_params = _random_params(g_vars['params'], 1), _random_params(d_vars['params'], 2)
  stats = _random_params(g_vars['batch_stats'], 3)

  @jax.jit
  def genai_outputs(g_params, d_params, stats, z):
    # Training mode (batch statistics, what a train step runs) and eval mode (running ones).
    fake_train, _ = nets.g_train(g_params, stats, z)
    fake_eval = nets.generate(nets.g_vars(g_params, stats), z)
    return fake_train, fake_eval, nets.d(d_params, None, fake_train)[0]
  fake_train, fake_eval, logits = genai_outputs(g_params, d_params, stats, z)
  m = config.model
  gen = ref.Generator(image_size=28, channels=1, width=m.g_width, num_upsamples=m.num_upsamples,
                      latent_dim=m.latent_dim, bn_momentum=m.g_bn_momentum)
  disc = ref.Discriminator(image_size=28, channels=1, width=m.d_width,
                           num_downsamples=m.num_upsamples)
  assert ref.param_count(gen) == sum(p.size for p in jax.tree.leaves(g_params))
  assert ref.param_count(disc) == sum(p.size for p in jax.tree.leaves(d_params))
  ref.load_gan(gen, disc, g_params, d_params, stats)
  with torch.no_grad():
    gen.eval()  # first: a training-mode call moves torch's running statistics
    got_eval = gen(torch.from_numpy(z))
    gen.train()
    got_train = gen(torch.from_numpy(z))
    got_logits = disc(got_train)
  np.testing.assert_allclose(got_train.numpy().transpose(0, 2, 3, 1), fake_train, atol=1e-4)
  np.testing.assert_allclose(got_eval.numpy().transpose(0, 2, 3, 1), fake_eval, atol=1e-4)
  assert np.ptp(np.asarray(logits)) > 0.05 and np.std(np.asarray(fake_eval)) > 0.1  # not trivial
  np.testing.assert_allclose(got_logits.numpy(), logits, atol=1e-4, rtol=1e-4)


def test_same_padding_is_xlas():
  # The UNet's stride-2 conv at 14x14 pads (0, 1), at 7x7 (1, 1); a 4x4 stride-2 conv (1, 1).
  assert ref.same_pads(14, 3, 2) == (0, 1)
  assert ref.same_pads(7, 3, 2) == (1, 1)
  assert ref.same_pads(28, 4, 2) == (1, 1)
  assert ref.same_pads(14, 3, 1) == (1, 1)
