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

The networks, the state layout and sampling from a workdir live in genai/families/gan.py
(what serving and export read); this file adds training.
"""
from __future__ import annotations

from typing import Any

from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from genai import paths
from genai.data import image_shards
from genai.evaluation import sample_evaluator
# The family's reading side, re-exported: experiments.gan.sample / load_workdir /
# generate_images are what scripts and notebooks call.
from genai.families.gan import (GanNets, generate_images, load_workdir, make_sampler,  # pylint: disable=unused-import
                                sample, state_fns)
from genai.objectives import gan as gan_loss
from genai.sample import image_files
from genai.parallel import mesh as mesh_lib
from genai.parallel import per_device
from genai.train import cli
from genai.train import loop
from genai.train import transfer
from genai.train import workdir as workdir_lib
from genai.train.ema import ema_decay, ema_update


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
    carry = (state['d_params'], state['d_opt'], state.get('d_spectral'))
    if k == 1:
      # A 1-trip scan stays a while loop, and XLA:CPU runs convolutions inside a while loop
      # ~10x slower than straight-line code (see genai/train/loop.py): call it directly.
      carry, dm = d_update(g_params, g_stats, carry, (real[0], jax.random.split(rng_d, 1)[0]))
      dm = jax.tree.map(lambda m: m[None], dm)
    else:
      carry, dm = jax.lax.scan(lambda c, xs: d_update(g_params, g_stats, c, xs), carry,
                               (real, jax.random.split(rng_d, k)), unroll=True)
    d_params, d_opt, spectral = carry
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


# =========================== The task for the shared loop ==============================

def build_task(config: ml_collections.ConfigDict, workdir: str) -> loop.Task:
  check_config(config)
  tc = config.train
  data = image_shards.load_image_data(config.data, batch_size=mesh_lib.local_batch_size(tc.batch_size * tc.n_critic),
                                    seed=config.seed)
  nets = GanNets(config, data.image_shape)
  workdir_lib.save_image_info(workdir, data.image_shape, data.value_range)
  init_state, tx_g, tx_d = state_fns(config, nets)
  init_state, init_args = transfer.init_from(config, 'gan', init_state, workdir=workdir)
  train_step = make_train_step(config, nets, (tx_g, tx_d))

  ec = config.eval
  variables_fn, generate = make_sampler(nets, use_ema=ec.use_ema, standing=ec.standing_stats,
                                        seed=config.seed)
  z_eval = nets.latents(jax.random.key(config.seed + 1), ec.num_samples)
  real_eval = data.eval_images[:ec.num_real]
  d_logits = jax.jit(lambda s, x: nets.d(s['d_params'], s.get('d_spectral'), x)[0])
  sample_dir = paths.join(workdir, 'samples')
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
                   per_device=bool(tc.get('per_device', False)), init_args=init_args)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Any:
  return workdir_lib.run(config, workdir, build_task)


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
  cli.run(cli.main(train_and_evaluate, _sample_from_flags, 'configs/gan/digits.py'))
