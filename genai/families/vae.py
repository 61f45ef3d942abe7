"""The VAE family: its state layout, sampler and workdir format.

experiments/vae.py trains it; everything here reads a trained workdir back: `load_workdir`,
`sample`, and what serving (`serving`) and export (`export_signatures`) need. Samples are
decoder means E[x|z], z ~ N(0, I) (Bernoulli models: pixel probabilities).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from genai import families
from genai.models.vae import VAE, make_vae
from genai.objectives import vae as objectives
from genai.train import transfer
from genai.train import workdir as workdir_lib
from genai.train.optimizers import make_optimizer


def state_fns(config: ml_collections.ConfigDict, model: VAE):
  """init_state(rng) -> {'params', 'opt_state', 'step'}, and (optimizer, lr schedule)."""
  tx, schedule = make_optimizer(config.optimizer, config.train.num_steps)
  tx = transfer.optimizer(config, tx)  # train.freeze
  shape = model.cfg.image_shape

  def init_state(rng):
    params = model.init(rng, jnp.zeros((1, *shape), jnp.float32), jax.random.key(0))['params']
    return {'params': params, 'opt_state': tx.init(params), 'step': jnp.zeros((), jnp.int32)}

  return init_state, (tx, schedule)


def load_workdir(workdir: str, step: int | None = None):
  """(config, model, params, value_range) of a trained VAE workdir (newest checkpoint)."""
  config = workdir_lib.load_config(workdir, 'vae')
  info = workdir_lib.load_image_info(workdir, 'vae')
  model = make_vae(config.model, info['image_shape'])
  init_state, _ = state_fns(config, model)
  state, _ = workdir_lib.restore_state(workdir, init_state, step)
  return config, model, state['params'], info['value_range']


def _decoder(model: VAE):
  return jax.jit(lambda p, z: objectives.decoder_mean(model, p, z))


def sample(workdir: str, num_images: int, seed: int = 0) -> tuple[np.ndarray, str]:
  """`num_images` decoder means E[x|z], z ~ N(0, I): float [N, H, W, C] and its value range.

  Bernoulli models give pixel probabilities (grey levels), the usual way to show them.
  """
  if num_images < 1:
    raise ValueError(f'--num_images={num_images} must be >= 1.')
  _, model, params, value_range = load_workdir(workdir)
  z = jax.random.normal(jax.random.key(seed), (num_images, model.cfg.latent_dim))
  return np.asarray(_decoder(model)(params, z)), value_range


def serving(workdir: str, step: int | None, max_batch: int) -> families.ImageServing:
  """Decoder means of N(0, I) latents drawn from the request's seed."""
  _, model, params, value_range = load_workdir(workdir, step)
  decode = _decoder(model)

  def sample_fn(n, seed, label, guidance, steps):
    del label, guidance, steps
    z = np.asarray(jax.random.normal(jax.random.key(seed), (n, model.cfg.latent_dim)))
    return np.asarray(decode(params, families.pad_rows(z, max_batch)))[:n]

  return families.ImageServing(tuple(model.cfg.image_shape), 0, value_range, sample_fn)


def decoder_params(params):
  """The VAE params that decoding reads: all but the encoder's (which need not be shipped)."""
  return {k: v for k, v in params.items() if k != 'encoder'}


def signatures(model: VAE, value_range: str, *, batch_size: int
               ) -> dict[str, families.Signature]:
  """'sample': z [B, Z] float32 -> decoder mean E[x|z]; params = `decoder_params(params)`."""
  def fn(params, inputs):
    return families.image_outputs(objectives.decoder_mean(model, params, inputs['z']),
                                  value_range)
  z = jax.ShapeDtypeStruct((batch_size, model.cfg.latent_dim), jnp.float32)
  return {'sample': families.Signature(fn, {'z': z})}


def export_signatures(workdir: str, *, batch_size: int = 1, **unused):
  """The decoder of `workdir`'s newest checkpoint as 'sample' (the encoder is left out)."""
  del unused
  _, model, params, value_range = load_workdir(workdir)
  return decoder_params(params), signatures(model, value_range, batch_size=batch_size), 'sample'
