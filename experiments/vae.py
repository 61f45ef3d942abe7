"""Variational autoencoders (convolutional, Bernoulli or Gaussian likelihood) on the shared loop.

Train (re-running the same command resumes from the newest checkpoint):
  python -m experiments.vae --config configs/vae/digits.py --workdir runs/vae_digits
Sample from a trained workdir (a PNG grid and an .npz):
  python -m experiments.vae --workdir runs/vae_digits --sample --num_images 64 --out samples/

Every evaluation scores the whole eval split: negative ELBO (nats per image and bits/dim),
its reconstruction and KL terms, the importance-weighted NLL (k = eval.iw_samples) on the
first eval.iw_examples images, and writes prior samples and reconstructions to TensorBoard
and as PNG + .npz under <workdir>/samples/.
"""
from __future__ import annotations

import functools
from typing import Any

from absl import flags
import jax
import ml_collections
import numpy as np
import optax

from genai import paths
from genai.data import batching
from genai.data import image_shards
from genai.data import images as images_lib
from genai.evaluation import sample_evaluator
# The family's reading side, re-exported: experiments.vae.sample / load_workdir.
from genai.families.vae import load_workdir, sample, state_fns  # pylint: disable=unused-import
from genai.models.vae import VAE, make_vae
from genai.objectives import vae as objectives
from genai.sample import image_files
from genai.parallel import mesh as mesh_lib
from genai.train import cli
from genai.train import loop
from genai.train import transfer
from genai.train import workdir as workdir_lib


# =========================== Building blocks ===========================================

def check_data(model: VAE, value_range: str, eval_images: np.ndarray) -> None:
  """Refuses data the likelihood cannot score: Bernoulli needs binary pixels in [0,1]."""
  if model.cfg.likelihood == 'bernoulli':
    images_lib.check_value_range(eval_images, '[0,1]')
    if not np.all((eval_images == 0) | (eval_images == 1)):
      raise ValueError(
          'model.likelihood="bernoulli" needs binary pixels, but the eval images have '
          'grey levels, so its nats would not be a likelihood; set data.binarize=True '
          '(dynamic binarisation) or use model.likelihood="gaussian".')
  else:
    images_lib.check_value_range(eval_images, value_range)


def _grid(images_uint8: np.ndarray, ncols: int | None = None) -> np.ndarray:
  return image_files.make_grid(images_uint8, ncols=ncols)[None]


def interleave_rows(originals: np.ndarray, recons: np.ndarray, cols: int) -> np.ndarray:
  """Rows of `cols` originals alternating with rows of their reconstructions (zero-padded)."""
  rows = -(-len(originals) // cols)
  pad = rows * cols - len(originals)
  a, b = (np.concatenate([np.asarray(v), np.zeros((pad, *v.shape[1:]), np.float32)])
          for v in (originals, recons))
  both = np.stack([a.reshape(rows, cols, *a.shape[1:]), b.reshape(rows, cols, *b.shape[1:])], 1)
  return both.reshape(2 * rows * cols, *a.shape[1:])


def make_evaluator(config: ml_collections.ConfigDict, model: VAE, eval_images: np.ndarray,
                   value_range: str, workdir: str):
  """evaluate(state, step) -> metrics and image grids; also writes PNGs under samples/."""
  ec = config.eval
  num_dims = int(np.prod(model.cfg.image_shape))
  n = len(eval_images)
  batches = [x for _, (x,) in batching.fixed_size_batches((eval_images,), min(ec.batch_size, n))]
  iw_n = min(ec.iw_examples or n, n)
  iw_batches = [x for _, (x,) in batching.fixed_size_batches((eval_images[:iw_n],),
                                                             min(ec.batch_size, iw_n))]
  iw_nll_fn = (objectives.make_iw_nll_fn(model, ec.iw_samples, ec.iw_chunk)
               if ec.iw_samples else None)

  @jax.jit
  def elbo_step(params, x, rng):
    log_px, kl = objectives.elbo_terms(model, params, x, rng)
    mean, _ = model.apply({'params': params}, x, method=VAE.encode)
    return -log_px, kl, mean

  @jax.jit
  def images_step(params, x, rng):
    prior = objectives.decoder_mean(
        model, params, jax.random.normal(rng, (ec.num_samples, model.cfg.latent_dim)))
    mean, _ = model.apply({'params': params}, x, method=VAE.encode)
    return prior, objectives.decoder_mean(model, params, mean)

  if ec.num_samples < 1 or ec.num_reconstructions < 1:
    raise ValueError(f'eval.num_samples={ec.num_samples} and eval.num_reconstructions='
                     f'{ec.num_reconstructions} must both be >= 1.')
  recon_inputs = eval_images[:ec.num_reconstructions]

  @functools.partial(jax.jit, static_argnums=2)
  def prior_means(params, rng, n):
    return objectives.decoder_mean(model, params,
                                   jax.random.normal(rng, (n, model.cfg.latent_dim)))

  # FID/KID of prior samples (decoder means) when eval.fid_samples > 0.
  fid_eval = sample_evaluator.from_config(
      config, lambda state, n, rng: prior_means(state['params'], rng, n),
      value_range=value_range, key_prefix='eval/')

  def evaluate(state, step):
    params = state['params']
    rng = jax.random.key(config.seed + 1)  # The same noise at every eval: comparable curves.
    outs = jax.device_get([elbo_step(params, x, jax.random.fold_in(rng, i))
                           for i, x in enumerate(batches)])
    recon_nll = np.concatenate([o[0] for o in outs])[:n]
    kl = np.concatenate([o[1] for o in outs])[:n]
    means = np.concatenate([o[2] for o in outs])[:n]
    nelbo = float(np.mean(recon_nll + kl))
    results: dict[str, Any] = {
        'eval/nelbo_nats': nelbo,
        'eval/nelbo_bits_per_dim': objectives.nats_to_bits_per_dim(nelbo, num_dims),
        'eval/recon_nll_nats': float(np.mean(recon_nll)),
        'eval/kl_nats': float(np.mean(kl)),
        # Latent dimensions whose posterior mean varies across images (Burda et al.).
        'eval/active_units': float(np.sum(np.var(means, axis=0) > 1e-2)),
    }
    if ec.iw_samples:
      iw = jax.device_get([iw_nll_fn(params, x, jax.random.fold_in(rng, 10_000 + i))
                           for i, x in enumerate(iw_batches)])
      iw_nll = float(np.mean(np.concatenate(iw)[:iw_n]))
      results['eval/iw_nll_nats'] = iw_nll
      results['eval/iw_nll_bits_per_dim'] = objectives.nats_to_bits_per_dim(iw_nll, num_dims)
    if fid_eval:
      results.update(fid_eval(state, step))
    prior, recon = jax.device_get(images_step(params, recon_inputs,
                                              jax.random.fold_in(rng, 99_999)))
    cols = min(8, len(recon_inputs))
    pairs = interleave_rows(recon_inputs, recon, cols)
    results['images/prior_samples'] = _grid(image_files.to_uint8(prior, value_range))
    results['images/reconstructions'] = _grid(image_files.to_uint8(pairs, value_range), cols)
    if jax.process_index() == 0:
      sample_dir = paths.join(workdir, 'samples')
      image_files.write_samples(sample_dir, f'prior_{step:07d}', prior, value_range)
      image_files.write_samples(sample_dir, f'reconstructions_{step:07d}', pairs, value_range)
    return results

  return evaluate


# =========================== The task for the shared loop ==============================

def build_task(config: ml_collections.ConfigDict, workdir: str) -> loop.Task:
  tc = config.train
  data = image_shards.load_image_data(config.data, batch_size=mesh_lib.local_batch_size(tc.batch_size), seed=config.seed)
  model = make_vae(config.model, data.image_shape)
  check_data(model, data.value_range, data.eval_images)
  workdir_lib.save_image_info(workdir, data.image_shape, data.value_range)

  init_state, (tx, schedule) = state_fns(config, model)
  init_state, init_args = transfer.init_from(config, 'vae', init_state, workdir=workdir)
  loss_fn = objectives.make_loss_fn(model, beta=float(config.objective.beta))

  def train_step(state, batch, rng):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state['params'], {'image': batch['image']}, rng)
    updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    metrics = {'loss': loss, **aux, 'grad_norm': optax.tree.norm(grads),
               'lr': schedule(state['step'])}
    return {'params': params, 'opt_state': opt_state, 'step': state['step'] + 1}, metrics

  evaluate = make_evaluator(config, model, data.eval_images, data.value_range, workdir)
  return loop.Task(init_state=init_state, train_step=train_step, train_iter=data.train_iter,
                   evaluate=evaluate, examples_per_step=tc.batch_size, init_args=init_args)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Any:
  return workdir_lib.run(config, workdir, build_task)


# =========================== Command line ==============================================

def define_flags() -> None:
  cli.define_flags()
  flags.DEFINE_integer('num_images', 64, 'Images to sample.')
  flags.DEFINE_string('out', None, 'Folder for samples.png/.npz (default <workdir>/samples).')
  flags.DEFINE_integer('seed', 0, 'Sampling seed.')


def _sample_from_flags(f) -> None:
  images, value_range = sample(f.workdir, f.num_images, f.seed)
  out = f.out or paths.join(f.workdir, 'samples')
  png, npz = image_files.write_samples(out, 'samples', images, value_range)
  print(f'Wrote {len(images)} samples to {png} and {npz}')


if __name__ == '__main__':
  define_flags()
  cli.run(cli.main(train_and_evaluate, _sample_from_flags, 'configs/vae/digits.py'))
