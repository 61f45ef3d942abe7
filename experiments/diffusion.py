"""Denoising diffusion (DDPM training; DDPM / DDIM sampling, classifier-free guidance) with a
UNet (or DiT) backbone on the shared loop. EMA weights are used for every sample.

Train (re-running the same command resumes from the newest checkpoint):
  python -m experiments.diffusion --config configs/diffusion/digits.py --workdir runs/diff
Sample N images (PNG grid + .npz) from a trained workdir:
  python -m experiments.diffusion --workdir runs/diff --sample --num_images 64 --out runs/s \
    [--sampler ddim --sample_steps 50 --eta 0 --guidance 2.0 --label 3]
"""
from __future__ import annotations

import time
from typing import Any

from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import optax

from genai import paths
from genai.data import image_shards
from genai.data import images as images_lib
from genai.evaluation import sample_evaluator
from genai.families import resolve_num_classes
# The family's reading side, re-exported: experiments.diffusion.sample / load_workdir /
# make_backbone / ImageSampler / sample_labels are what scripts and notebooks call.
from genai.families.diffusion import (BACKBONES, ImageSampler, fast_key, load_teacher,  # pylint: disable=unused-import
                                      load_workdir, make_backbone, sample, sample_labels,
                                      state_fns)
from genai.objectives import diffusion as dfn
from genai.sample import diffusion_samplers as samplers
from genai.sample import image_files
from genai.parallel import cpu_devices
from genai.parallel import in_flight
from genai.parallel import mesh as mesh_lib
from genai.parallel import sharding
from genai.train import ema as ema_lib
from genai.train import cli
from genai.train import loop
from genai.train import transfer
from genai.train import workdir as workdir_lib

# =========================== The task for the shared loop ==============================

def _loss_fn(model, sched, config, num_classes, *, train: bool, teacher_model=None):
  dc = config.diffusion
  alpha = float((config.get('distill') or {}).get('alpha', 0.0)) if teacher_model else 0.0

  def loss_fn(params, x0, y, rng, t_B=None, noise=None, teacher_params=None):
    def apply(x, t, yy, r):
      return model.apply({'params': params}, x, t, yy, train=train,
                         rngs={'dropout': fast_key(r)} if train else {})

    teacher_fn = None
    if teacher_params is not None:
      teacher_fn = lambda x, t, yy, r: teacher_model.apply({'params': teacher_params}, x, t, yy,
                                                           train=False)
    return dfn.diffusion_loss(apply, sched, x0, y, rng, prediction=dc.prediction,
                              num_classes=num_classes,
                              p_uncond=float(dc.p_uncond) if train else 0.0,
                              t_B=t_B, noise=noise, teacher_fn=teacher_fn,
                              distill_alpha=alpha)

  return loss_fn


def build_task(config: ml_collections.ConfigDict, workdir: str) -> loop.Task:
  tc, ec = config.train, config.eval
  data = image_shards.load_image_data(config.data, batch_size=mesh_lib.local_batch_size(tc.batch_size), seed=config.seed)
  images_lib.check_value_range(data.eval_images, data.value_range)
  num_classes = resolve_num_classes(config, data.num_classes)
  image_shape = data.image_shape
  workdir_lib.save_image_info(workdir, image_shape, data.value_range, num_classes)

  model = transfer.lora_model(config, make_backbone(config.model, image_shape, num_classes))
  sched = dfn.make_schedule(config.diffusion)
  dfn.check_prediction(config.diffusion.prediction)
  init_state, (tx, lr_schedule) = state_fns(config, model, image_shape, num_classes)
  teacher_model, teacher_params = load_teacher(config, image_shape, num_classes)
  init_state, init_args = transfer.init_from(  # model.init_from (genai/train/transfer.py)
      config, 'diffusion', init_state, () if teacher_params is None else (teacher_params,),
      num_classes=num_classes, workdir=workdir)
  train_loss = _loss_fn(model, sched, config, num_classes, train=True,
                        teacher_model=teacher_model)
  eval_loss = _loss_fn(model, sched, config, num_classes, train=False)

  def train_step(state, batch, rng):
    y = batch.get('label') if num_classes else None
    (loss, _), grads = jax.value_and_grad(train_loss, has_aux=True)(
        state['params'], batch['image'], y, rng, teacher_params=state.get('teacher'))
    updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    decay = ema_lib.ema_decay(state['step'], config.ema.decay, config.ema.warmup)
    return ({**state, 'params': params,
             'ema_params': ema_lib.ema_update(state['ema_params'], params, decay),
             'opt_state': opt_state, 'step': state['step'] + 1},
            {'loss': loss, 'grad_norm': optax.tree.norm(grads),
             'lr': lr_schedule(state['step'])})

  # Held-out loss at fixed (t, noise) draws, so evals at different steps are comparable.
  n_eval = int(ec.num_examples) or len(data.eval_images)
  eval_x = data.eval_images[:n_eval]
  eval_y = data.eval_labels[:n_eval] if (num_classes and data.eval_labels is not None) else None
  if num_classes and eval_y is None:
    raise ValueError('class-conditional eval needs eval labels; the eval split has none.')
  eb = max(1, min(int(ec.batch_size), len(eval_x)))

  @jax.jit
  def eval_batch(params, x, y, rng):
    k_t, k_n = jax.random.split(rng)
    t = jax.random.randint(k_t, (x.shape[0],), 0, sched.num_timesteps)
    _, aux = eval_loss(params, x, y, rng, t_B=t, noise=jax.random.normal(k_n, x.shape))
    return jnp.sum(aux['per_example'])

  def held_out_loss(params):
    def one(i_start):
      i, start = i_start
      x, y = sharding.split_local_batch(
          (eval_x[start:start + eb], None if eval_y is None else eval_y[start:start + eb]))
      return eval_batch(params, x, y, jax.random.fold_in(jax.random.key(config.seed + 2), i))
    total = in_flight.fetch_windowed(one, enumerate(range(0, len(eval_x), eb)))
    return float(sum(total)) / len(eval_x)

  sampler = ImageSampler(model, sched, image_shape=image_shape, num_classes=num_classes,
                         prediction=config.diffusion.prediction, value_range=data.value_range,
                         clip=config.sample.clip)
  sc = config.sample

  def sample_fn(state, n, rng):
    return sampler(state['ema_params'], rng, n, sample_labels(n, num_classes),
                   sampler=sc.sampler, steps=sc.steps, eta=sc.eta,
                   guidance=sc.guidance if num_classes else 0.0, batch_size=n)

  # FID/KID of EMA samples (the eval-grid sampler settings) when eval.fid_samples > 0.
  fid_eval = sample_evaluator.from_config(config, sample_fn, value_range=data.value_range,
                                          key_prefix='eval/')

  def evaluate(state, step):
    results: dict[str, Any] = {'eval/loss': held_out_loss(state['ema_params']),
                               'eval/loss_raw_params': held_out_loss(state['params'])}
    if fid_eval:
      results.update(fid_eval(state, step))
    if ec.num_samples:
      labels = sample_labels(ec.num_samples, num_classes)
      t0 = time.perf_counter()
      x = sampler(state['ema_params'], jax.random.key(config.seed + 1), ec.num_samples,
                  labels, sampler=sc.sampler, steps=sc.steps, eta=sc.eta,
                  guidance=sc.guidance if num_classes else 0.0)
      results['eval/sample_seconds'] = time.perf_counter() - t0
      image_files.write_samples(paths.join(workdir, 'samples'), f'step_{step:07d}', x,
                                data.value_range, labels)
      results['samples'] = image_files.make_grid(
          image_files.to_uint8(x, data.value_range))[None]
    return results

  return loop.Task(init_state=init_state, train_step=train_step, train_iter=data.train_iter,
                   evaluate=evaluate, examples_per_step=tc.batch_size,
                   init_args=init_args,
                   # A rolled scan: the UNet's convolutions take genai/models/conv_grads.py's
                   # gradients, which XLA:CPU runs on its fast kernel inside loops too.
                   unroll_steps=False)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Any:
  return workdir_lib.run(config, workdir, build_task)


# =========================== Command line ==============================================

def define_flags() -> None:
  cli.define_flags()
  flags.DEFINE_integer('num_images', 64, 'Images to sample.')
  flags.DEFINE_string('out', None, 'Output folder for --sample (default <workdir>/cli).')
  flags.DEFINE_enum('sampler', None, list(samplers.SAMPLERS), 'Default: config.sample.')
  flags.DEFINE_integer('sample_steps', None, 'DDIM steps. Default: config.sample.steps.')
  flags.DEFINE_float('eta', None, 'DDIM eta. Default: config.sample.eta.')
  flags.DEFINE_float('guidance', None, 'Guidance scale w. Default: config.sample.guidance.')
  flags.DEFINE_integer('label', -1, 'Class to sample (conditional models); -1 cycles classes.')
  flags.DEFINE_integer('seed', 0, 'Sampling seed.')
  flags.DEFINE_integer('batch_size', 256, 'Images per sampling batch.')


def _sample_from_flags(f) -> None:
  out = f.out or paths.join(f.workdir, 'cli')
  # The host laid out for convolutional inference (genai/parallel/cpu_devices.py: split_for).
  cpu_devices.split_for([min(f.batch_size, f.num_images)])
  t0 = time.perf_counter()
  _, png, npz = sample(f.workdir, num_images=f.num_images, out=out, sampler=f.sampler,
                       steps=f.sample_steps, eta=f.eta, guidance=f.guidance, label=f.label,
                       seed=f.seed, batch_size=f.batch_size)
  print(f'wrote {png} and {npz} ({f.num_images} images, {time.perf_counter() - t0:.1f} s)')


if __name__ == '__main__':
  define_flags()
  cli.run(cli.main(train_and_evaluate, _sample_from_flags, 'configs/diffusion/digits.py'))
