"""DCGAN on the shared loop: D and G updated in one jitted step, each with its own optimizer.

Train (re-running the same command resumes from the newest checkpoint):
  python -m experiments.gan --config configs/gan/digits.py --workdir runs/gan_digits
Sample N images (PNG grid + .npz) from a trained workdir's EMA generator:
  python -m experiments.gan --workdir runs/gan_digits --sample --num_images 64 --out samples/

One train step: `train.n_critic` discriminator updates, each on its own slice of real
data (the loader draws n_critic * batch_size images per step) and fresh latents, then one
generator update; then the EMA of the generator's params. State: G params and BatchNorm
statistics, D params and SpectralNorm vectors (when used), both optimizer states, EMA params
and the step: all checkpointed, so a resumed run is bit-identical.

Samples come from the EMA params. BatchNorm's running statistics track the live params, not
their average, so for the EMA generator they are recomputed ("standing statistics", as in
BigGAN): one pass over `eval.standing_stats` fixed latents in training mode. That pass and the
sample latents are fixed by the seed, so a checkpoint always gives the same images.
"""
from __future__ import annotations

import os
from typing import Any

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from genai.data import images as images_lib
from genai.evaluation import sample_evaluator
from genai.models.dcgan import SPECTRAL, Discriminator, Generator, base_size
from genai.objectives import gan as gan_loss
from genai.sample import image_files
from genai.parallel import mesh as mesh_lib
from genai.parallel import per_device
from genai.train import cli
from genai.train import loop
from genai.train import workdir as workdir_lib
from genai.train.ema import ema_decay, ema_update
from genai.train.optimizers import make_optimizer



# =========================== Building blocks ===========================================

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


def check_config(config: ml_collections.ConfigDict) -> None:
  gan_loss.check_loss(config.loss)
  if config.gp.kind not in gan_loss.PENALTIES:
    raise ValueError(f'gp.kind={config.gp.kind!r}; use one of {gan_loss.PENALTIES}.')
  if config.gp.kind != 'none' and config.gp.weight <= 0:
    raise ValueError(f'gp.kind={config.gp.kind!r} needs gp.weight > 0 (wgan_gp: 10).')
  if config.train.n_critic < 1:
    raise ValueError(f'train.n_critic={config.train.n_critic} must be >= 1.')
  if config.data.get('value_range', '[-1,1]') != '[-1,1]':
    raise ValueError("the generator ends in tanh, so data.value_range must be '[-1,1]'.")


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


def _state_fns(config: ml_collections.ConfigDict, nets: GanNets):
  """init_state(rng) -> state dict, and the two (optimizer, schedule) pairs."""
  steps = config.train.num_steps
  tx_g, sched_g = make_optimizer(config.optimizer_g, steps)
  tx_d, sched_d = make_optimizer(config.optimizer_d, steps * config.train.n_critic)

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


def make_train_step(config: ml_collections.ConfigDict, nets: GanNets, optimizers):
  (tx_g, sched_g), (tx_d, sched_d) = optimizers
  k = config.train.n_critic
  kind, gp_kind, gp_weight = config.loss, config.gp.kind, float(config.gp.weight)

  def d_update(g_params, g_stats, carry, xs):
    d_params, d_opt, spectral = carry
    real, rng = xs
    b = real.shape[0]  # this device's rows under train.per_device, else the global batch
    rng_z, rng_gp = jax.random.split(rng)
    fake, _ = nets.g_train(g_params, g_stats, nets.latents(rng_z, b))

    def loss_fn(dp):
      logits, new_spectral = nets.d(dp, spectral, jnp.concatenate([real, fake]),
                                    update_stats=True)
      r, f = logits[:b], logits[b:]
      adv = gan_loss.discriminator_loss(kind, r, f)
      # The critic of the penalty uses the same normalised weights as the forward pass.
      gp = gan_loss.gradient_penalty(gp_kind, lambda x: nets.d(dp, spectral, x)[0],
                                     real, fake, rng_gp)
      return adv + gp_weight * gp, (gp, jnp.mean(r), jnp.mean(f), new_spectral)

    (loss, (gp, r, f, spectral)), grads = jax.value_and_grad(loss_fn, has_aux=True)(d_params)
    grads = per_device.pmean(grads)  # identity unless train.per_device
    updates, d_opt = tx_d.update(grads, d_opt, d_params)
    d_params = optax.apply_updates(d_params, updates)
    metrics = {'d_loss': loss, 'gp': gp, 'd_real': r, 'd_fake': f,
               'd_grad_norm': optax.tree.norm(grads)}
    return (d_params, d_opt, spectral), metrics

  def train_step(state, batch, rng):
    b = batch['image'].shape[0] // k
    # Strided: critic step j takes rows j, j+k, ...; with the batch split over devices in
    # contiguous blocks, every device holds its share of every critic step's batch.
    real = batch['image'].reshape((b, k) + nets.image_shape).swapaxes(0, 1)
    rng_d, rng_g = jax.random.split(rng)
    g_params, g_stats = state['g_params'], state.get('g_batch_stats')
    (d_params, d_opt, spectral), dm = jax.lax.scan(
        lambda c, xs: d_update(g_params, g_stats, c, xs),
        (state['d_params'], state['d_opt'], state.get('d_spectral')),
        (real, jax.random.split(rng_d, k)))
    metrics = jax.tree.map(jnp.mean, dm)

    def g_loss_fn(gp):
      fake, new_stats = nets.g_train(gp, g_stats, nets.latents(rng_g, b))
      logits, _ = nets.d(d_params, spectral, fake)
      return gan_loss.generator_loss(kind, logits), new_stats

    (g_loss, new_stats), grads = jax.value_and_grad(g_loss_fn, has_aux=True)(g_params)
    # Per-device mode: pmap-style averaging of gradients and of BN running statistics
    # (each device normalised with its own batch statistics).
    grads, new_stats = per_device.pmean((grads, new_stats))
    updates, g_opt = tx_g.update(grads, state['g_opt'], g_params)
    g_params = optax.apply_updates(g_params, updates)
    step = state['step']
    decay = ema_decay(step, config.ema.decay, config.ema.warmup)
    new_state = {'g_params': g_params, 'd_params': d_params, 'g_opt': g_opt, 'd_opt': d_opt,
                 'ema_params': ema_update(state['ema_params'], g_params, decay),
                 'step': step + 1}
    if nets.bn:
      new_state['g_batch_stats'] = new_stats
    if nets.sn:
      new_state['d_spectral'] = spectral
    metrics.update({'g_loss': g_loss, 'g_grad_norm': optax.tree.norm(grads),
                    'loss': metrics['d_loss'] + g_loss, 'ema_decay': decay,
                    'lr_g': sched_g(step), 'lr_d': sched_d(step * k)})
    return new_state, metrics

  return train_step


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


# =========================== The task for the shared loop ==============================

def build_task(config: ml_collections.ConfigDict, workdir: str) -> loop.Task:
  check_config(config)
  tc = config.train
  data = images_lib.load_image_data(config.data, batch_size=mesh_lib.local_batch_size(tc.batch_size * tc.n_critic),
                                    seed=config.seed)
  nets = GanNets(config, data.image_shape)
  workdir_lib.save_image_info(workdir, data.image_shape, data.value_range)
  init_state, tx_g, tx_d = _state_fns(config, nets)
  train_step = make_train_step(config, nets, (tx_g, tx_d))

  ec = config.eval
  variables_fn, generate = make_sampler(nets, use_ema=ec.use_ema, standing=ec.standing_stats,
                                        seed=config.seed)
  z_eval = nets.latents(jax.random.key(config.seed + 1), ec.num_samples)
  real_eval = data.eval_images[:ec.num_real]
  d_logits = jax.jit(lambda s, x: nets.d(s['d_params'], s.get('d_spectral'), x)[0])
  sample_dir = os.path.join(workdir, 'samples')
  # FID/KID of fresh samples (same G variables as the grid) when eval.fid_samples > 0.
  fid_eval = sample_evaluator.from_config(
      config, lambda state, n, rng: generate(variables_fn(state), nets.latents(rng, n)),
      value_range=data.value_range, key_prefix='eval/')

  def evaluate(state, step):
    images = generate(variables_fn(state), z_eval)
    results: dict[str, Any] = {}
    if fid_eval:
      results.update(fid_eval(state, step))
    if len(real_eval):
      results['eval/d_real_test'] = float(jnp.mean(d_logits(state, real_eval)))
      results['eval/d_fake_samples'] = float(jnp.mean(d_logits(state, images)))
    images = np.asarray(images)
    image_files.write_samples(sample_dir, f'step_{step:07d}', images, data.value_range)
    results['samples'] = image_files.make_grid(
        image_files.to_uint8(images, data.value_range))[None]
    return results

  return loop.Task(init_state=init_state, train_step=train_step, train_iter=data.train_iter,
                   evaluate=evaluate, examples_per_step=tc.batch_size * tc.n_critic,
                   per_device=bool(tc.get('per_device', False)))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Any:
  return workdir_lib.run(config, workdir, build_task)


# =========================== Sampling from a workdir ===================================

def load_workdir(workdir: str, step: int | None = None):
  """(config, nets, state, value_range) of a trained GAN workdir (newest checkpoint)."""
  config = workdir_lib.load_config(workdir, 'gan')
  meta = workdir_lib.load_image_info(workdir, 'gan')
  nets = GanNets(config, tuple(meta['image_shape']))
  init_state, _, _ = _state_fns(config, nets)
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
  return image_files.write_samples(out or os.path.join(workdir, 'samples'), name, images,
                                   value_range)


# =========================== Command line ==============================================

def define_flags() -> None:
  cli.define_flags()
  flags.DEFINE_integer('num_images', 64, 'Images to sample.')
  flags.DEFINE_string('out', '', 'Folder for --sample output (default <workdir>/samples).')
  flags.DEFINE_string('name', 'samples', 'File name stem of --sample output.')
  flags.DEFINE_integer('seed', 0, 'Sampling seed (latents).')


def _sample_from_flags(f) -> None:
  png, npz = sample(f.workdir, f.num_images, out=f.out, seed=f.seed, name=f.name)
  print(f'Wrote {png} and {npz}')


if __name__ == '__main__':
  define_flags()
  app.run(cli.main(train_and_evaluate, _sample_from_flags, 'configs/gan/digits.py'),
          flags_parser=cli.parse_flags)
