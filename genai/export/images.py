"""Serving signatures of the image generators: GAN, VAE and diffusion samplers.

Every signature returns both `images` float32 [B, H, W, C] in the workdir's value range
('[-1,1]' or '[0,1]') and `images_uint8` uint8 [B, H, W, C] (genai.sample.image_files.to_uint8
in JAX ops: rescaled to [0,1], clipped, rounded). B is fixed at export. Randomness is an
input, never drawn inside, so TF, TFLite and JAX outputs compare exactly:

  GAN 'sample'      : z [B, Z] float32 (N(0, I) latents) -> images. The generator's
                      variables are the EMA params with standing BatchNorm statistics when
                      the config samples that way (experiments.gan.make_sampler), frozen at
                      export.
  VAE 'sample'      : z [B, Z] float32 -> decoder mean E[x|z] (Bernoulli: probabilities);
                      the encoder's params are left out of the export.
  diffusion 'sample': noise [B, H, W, C] float32 (x_T ~ N(0, I)), and for class-conditional
                      models labels [B] int32 (num_classes = the null label) and
                      guidance [] float32 (classifier-free scale w; 0 = plain conditional)
                      -> x_0 after a fixed `steps`-step deterministic DDIM chain (eta = 0,
                      x0 clipped to the value range as config.sample.clip says).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genai.export.saved_model import Signature
from genai.objectives import diffusion as dfn
from genai.sample import diffusion_samplers as samplers


def to_uint8(images: jax.Array, value_range: str) -> jax.Array:
  """`genai.sample.image_files.to_uint8` in jnp: float images -> uint8 0..255."""
  x = (images + 1.0) / 2.0 if value_range == '[-1,1]' else images
  return jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0).astype(jnp.uint8)


def _outputs(images: jax.Array, value_range: str) -> dict[str, jax.Array]:
  images = images.astype(jnp.float32)
  return {'images': images, 'images_uint8': to_uint8(images, value_range)}


def gan_signatures(nets: Any, value_range: str, *, batch_size: int) -> dict[str, Signature]:
  """'sample': params = the generator's sampling variables (nets.sample_variables)."""
  def fn(variables, inputs):
    return _outputs(nets.generate(variables, inputs['z']), value_range)
  z = jax.ShapeDtypeStruct((batch_size, nets.latent_dim), jnp.float32)
  return {'sample': Signature(fn, {'z': z})}


def vae_signatures(model: Any, value_range: str, *, batch_size: int) -> dict[str, Signature]:
  """'sample': params = `decoder_params(the VAE's params)`."""
  from genai.objectives.vae import decoder_mean  # pylint: disable=import-outside-toplevel

  def fn(params, inputs):
    return _outputs(decoder_mean(model, params, inputs['z']), value_range)
  z = jax.ShapeDtypeStruct((batch_size, model.cfg.latent_dim), jnp.float32)
  return {'sample': Signature(fn, {'z': z})}


def decoder_params(params: Any) -> Any:
  """The VAE params that decoding reads: all but the encoder's (which need not be shipped)."""
  return {k: v for k, v in params.items() if k != 'encoder'}


def ddim_from_noise(model_fn: samplers.ModelFn, s: dfn.Schedule, x_T: jax.Array, *,
                    num_steps: int, prediction: str = 'eps',
                    clip_range: tuple[float, float] | None = (-1.0, 1.0)) -> jax.Array:
  """Deterministic DDIM (eta = 0) from a given x_T: the chain of
  genai.sample.diffusion_samplers.ddim_sample without its noise draws (with eta = 0 they
  are multiplied by zero), so ddim_sample(..., rng, eta=0) equals this on its own x_T."""
  dfn.check_prediction(prediction)
  taus = samplers.ddim_timesteps(s.num_timesteps, num_steps)
  prevs = np.append(-1, taus[:-1])
  b = x_T.shape[0]

  def step(x, tp):
    t, t_prev = tp
    t_B = jnp.full((b,), t, jnp.int32)
    out = model_fn(x, t_B.astype(jnp.float32))
    x0, eps = dfn.x0_eps_from_output(s, prediction, x, t_B, out)
    if clip_range is not None:
      x0 = jnp.clip(x0, clip_range[0], clip_range[1])
      eps = dfn.eps_from_x0(s, x, t_B, x0)
    abar_prev = jnp.where(t_prev >= 0, s.alphas_cumprod[jnp.maximum(t_prev, 0)], 1.0)
    return jnp.sqrt(abar_prev) * x0 + jnp.sqrt(jnp.maximum(1.0 - abar_prev, 0.0)) * eps, None

  x, _ = jax.lax.scan(step, x_T, (jnp.asarray(taus[::-1]), jnp.asarray(prevs[::-1])))
  return x


def diffusion_signatures(model: Any, schedule: dfn.Schedule, *, image_shape, num_classes: int,
                         prediction: str, value_range: str, clip: bool, steps: int,
                         batch_size: int) -> dict[str, Signature]:
  """'sample': params = the backbone's (EMA) params; the schedule is baked in as constants."""
  samplers.ddim_timesteps(schedule.num_timesteps, steps)  # raises on a bad step count
  clip_range = {'[-1,1]': (-1.0, 1.0), '[0,1]': (0.0, 1.0)}[value_range] if clip else None

  def fn(params, inputs):
    model_fn = samplers.guided_model_fn(
        lambda x, t, y: model.apply({'params': params}, x, t, y, train=False),
        inputs.get('labels'), num_classes=num_classes, guidance=inputs.get('guidance'))
    x = ddim_from_noise(model_fn, schedule, inputs['noise'], num_steps=steps,
                        prediction=prediction, clip_range=clip_range)
    return _outputs(x, value_range)

  inputs = {'noise': jax.ShapeDtypeStruct((batch_size,) + tuple(image_shape), jnp.float32)}
  if num_classes:
    inputs['labels'] = jax.ShapeDtypeStruct((batch_size,), jnp.int32)
    inputs['guidance'] = jax.ShapeDtypeStruct((), jnp.float32)
  return {'sample': Signature(fn, inputs)}
