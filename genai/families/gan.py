"""The GAN family (DCGAN): its networks, state layout, sampler and workdir format.

experiments/gan.py trains it; everything here reads a trained workdir back: `load_workdir`,
`sample`, and what serving (`serving`) and export (`export_signatures`) need.

Samples come from the EMA params. BatchNorm's running statistics track the live params, not
their average, so for the EMA generator they are recomputed ("standing statistics", as in
BigGAN): one pass over `eval.standing_stats` fixed latents in training mode. That pass and the
sample latents are fixed by the seed, so a checkpoint always gives the same images.
"""
from __future__ import annotations


import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from genai import paths
from genai import families
from genai.models.dcgan import SPECTRAL, Discriminator, Generator, base_size
from genai.sample import image_files
from genai.train import transfer
from genai.train import workdir as workdir_lib
from genai.train.optimizers import make_optimizer


def make_models(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int]
                ) -> tuple[Generator, Discriminator]:
  h, w, c = image_shape
  m = config.model
  if h != w:
    raise ValueError(f'images are {h}x{w}; the DCGAN needs square images: set '
                     'data.image_size.')
  base_size(h, m.num_upsamples)  # Raises on a side not divisible by 2**num_upsamples.
  gen = Generator(image_size=h, channels=c, width=m.g_width, num_upsamples=m.num_upsamples,
                  norm=m.g_norm, bn_momentum=m.g_bn_momentum)
  disc = Discriminator(width=m.d_width, num_downsamples=m.num_upsamples,
                       spectral_norm=m.spectral_norm)
  return gen, disc


class GanNets:
  """The two networks with their variable collections spelled out once."""

  def __init__(self, config, image_shape):
    self.config = config
    self.image_shape = tuple(image_shape)
    self.gen, self.disc = make_models(config, image_shape)
    self.bn = config.model.g_norm == 'batch'
    self.sn = config.model.spectral_norm
    self.latent_dim = config.model.latent_dim

  def latents(self, rng, n):
    return jax.random.normal(rng, (n, self.latent_dim), jnp.float32)

  def g_vars(self, params, batch_stats=None):
    return {'params': params, 'batch_stats': batch_stats} if self.bn else {'params': params}

  def g_train(self, params, batch_stats, z):
    """Training-mode G (batch statistics) -> (images, new running statistics)."""
    if not self.bn:
      return self.gen.apply(self.g_vars(params), z, train=True), None
    x, new = self.gen.apply(self.g_vars(params, batch_stats), z, train=True,
                            mutable=['batch_stats'])
    return x, new['batch_stats']

  def d(self, params, spectral, x, update_stats=False):
    """D logits; with spectral norm and update_stats, also the new power-iteration state."""
    if not self.sn:
      return self.disc.apply({'params': params}, x), None
    variables = {'params': params, SPECTRAL: spectral}
    if not update_stats:
      return self.disc.apply(variables, x, update_stats=False), spectral
    logits, new = self.disc.apply(variables, x, update_stats=True, mutable=[SPECTRAL])
    return logits, new[SPECTRAL]

  def standing_stats(self, params, rng, n):
    """BatchNorm statistics of `params` over n latents (momentum 0: exactly this batch's)."""
    gen = self.gen.clone(bn_momentum=0.0)
    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(
        lambda: self.gen.init(jax.random.key(0), self.latents(rng, 1), train=False)
    )['batch_stats'])
    _, new = gen.apply({'params': params, 'batch_stats': zeros}, self.latents(rng, n),
                       train=True, mutable=['batch_stats'])
    return new['batch_stats']

  def sample_variables(self, state, *, use_ema: bool, standing: int, seed: int):
    """G variables that samples are drawn with: EMA params (+ standing BN statistics)."""
    params = state['ema_params'] if use_ema else state['g_params']
    if not self.bn:
      return self.g_vars(params)
    if use_ema:
      stats = self.standing_stats(params, jax.random.key(seed + 2), standing)
    else:
      stats = state['g_batch_stats']
    return self.g_vars(params, stats)

  def generate(self, variables, z):
    return self.gen.apply(variables, z, train=False)


def state_fns(config: ml_collections.ConfigDict, nets: GanNets):
  """init_state(rng) -> state dict, and the two (optimizer, schedule) pairs."""
  steps = config.train.num_steps
  tx_g, sched_g = make_optimizer(config.optimizer_g, steps)
  tx_d, sched_d = make_optimizer(config.optimizer_d, steps * config.train.n_critic)
  # train.freeze sees 'generator/<path>' and 'discriminator/<path>'.
  tx_g = transfer.optimizer(config, tx_g, 'generator/')
  tx_d = transfer.optimizer(config, tx_d, 'discriminator/')

  def init_state(rng):
    rng_g, rng_d = jax.random.split(rng)
    g_vars = nets.gen.init(rng_g, nets.latents(rng_g, 1), train=False)
    d_vars = nets.disc.init(rng_d, jnp.zeros((1,) + nets.image_shape, jnp.float32))
    g_params, d_params = g_vars['params'], d_vars['params']
    state = {'g_params': g_params, 'd_params': d_params,
             'g_opt': tx_g.init(g_params), 'd_opt': tx_d.init(d_params),
             'ema_params': g_params, 'step': jnp.zeros((), jnp.int32)}
    if nets.bn:
      state['g_batch_stats'] = g_vars['batch_stats']
    if nets.sn:
      state['d_spectral'] = d_vars[SPECTRAL]
    return state

  return init_state, (tx_g, sched_g), (tx_d, sched_d)


def make_sampler(nets: GanNets, *, use_ema: bool = True, standing: int = 1024, seed: int = 0):
  """(jitted state -> G variables for sampling, jitted (variables, z) -> images)."""
  variables_fn = jax.jit(lambda s: nets.sample_variables(s, use_ema=use_ema,
                                                         standing=standing, seed=seed))
  return variables_fn, jax.jit(nets.generate)


def generate_images(nets: GanNets, state, num_images: int, *, seed: int, use_ema: bool = True,
                    standing: int = 1024, batch_size: int = 500) -> np.ndarray:
  """num_images float32 [N, H, W, C] samples in [-1, 1] from latents fixed by `seed`."""
  variables_fn, generate = make_sampler(nets, use_ema=use_ema, standing=standing, seed=seed)
  variables = variables_fn(state)
  z = nets.latents(jax.random.key(seed), num_images)
  out = [generate(variables, z[i:i + batch_size]) for i in range(0, num_images, batch_size)]
  return np.concatenate(jax.device_get(out))


def load_workdir(workdir: str, step: int | None = None):
  """(config, nets, state, value_range) of a trained GAN workdir (newest checkpoint)."""
  config = workdir_lib.load_config(workdir, 'gan')
  meta = workdir_lib.load_image_info(workdir, 'gan')
  nets = GanNets(config, tuple(meta['image_shape']))
  init_state, _, _ = state_fns(config, nets)
  state, _ = workdir_lib.restore_state(workdir, init_state, step)
  return config, nets, state, meta['value_range']


def sample(workdir: str, num_images: int, *, out: str = '', seed: int = 0,
           name: str = 'samples') -> tuple[str, str]:
  """Writes `name`.png (grid) and `name`.npz (uint8 images) of EMA samples; returns paths."""
  if num_images < 1:
    raise ValueError(f'--num_images={num_images} must be >= 1.')
  config, nets, state, value_range = load_workdir(workdir)
  images = generate_images(nets, state, num_images, seed=seed, use_ema=config.eval.use_ema,
                           standing=config.eval.standing_stats)
  return image_files.write_samples(out or paths.join(workdir, 'samples'), name, images,
                                   value_range)




def serving(workdir: str, step: int | None, max_batch: int) -> families.ImageServing:
  """The EMA generator of `workdir`, sampling up to `max_batch` images per call (one
  compiled shape: requests are padded to it)."""
  config, nets, state, value_range = load_workdir(workdir, step)
  variables_fn, gen = make_sampler(nets, use_ema=config.eval.use_ema,
                                   standing=config.eval.standing_stats, seed=config.seed)
  variables = variables_fn(state)

  def sample_fn(n, seed, label, guidance, steps):
    del label, guidance, steps
    z = np.asarray(nets.latents(jax.random.key(seed), n))
    return np.asarray(gen(variables, families.pad_rows(z, max_batch)))[:n]

  return families.ImageServing(tuple(nets.image_shape), 0, value_range, sample_fn)


def signatures(nets: GanNets, value_range: str, *, batch_size: int
               ) -> dict[str, families.Signature]:
  """'sample': z [B, Z] float32 (N(0, I) latents) -> images; params = the generator's
  sampling variables (`make_sampler`'s first function of the state)."""
  def fn(variables, inputs):
    return families.image_outputs(nets.generate(variables, inputs['z']), value_range)

  z = jax.ShapeDtypeStruct((batch_size, nets.latent_dim), jnp.float32)
  return {'sample': families.Signature(fn, {'z': z})}


def export_signatures(workdir: str, *, batch_size: int = 1, **unused):
  """The EMA generator of `workdir` as 'sample', its variables (EMA params with standing
  BatchNorm statistics when the config samples that way) frozen at export."""
  del unused
  config, nets, state, value_range = load_workdir(workdir)
  variables_fn, _ = make_sampler(nets, use_ema=config.eval.use_ema,
                                 standing=config.eval.standing_stats, seed=config.seed)
  return variables_fn(state), signatures(nets, value_range, batch_size=batch_size), 'sample'
