"""The diffusion family: backbones, state layout, samplers and workdir format.

experiments/diffusion.py trains it; everything here reads a trained workdir back:
`load_workdir`, `sample` (DDPM / DDIM, classifier-free guidance, EMA weights), and what
serving (`serving`) and export (`export_signatures`) need.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from genai import families
from genai.models.unet import UNet
from genai.objectives import diffusion as dfn
from genai.parallel import sharding
from genai.sample import diffusion_samplers as samplers
from genai.sample import image_files
from genai.train import transfer
from genai.train import workdir as workdir_lib
from genai.train.optimizers import make_optimizer

BACKBONES = ('unet', 'dit')


def _module_fields(block) -> dict[str, Any]:
  """A config block as module kwargs (lists -> tuples: flax fields must be hashable)."""
  d = block.to_dict() if hasattr(block, 'to_dict') else dict(block or {})
  return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def make_backbone(model_cfg: ml_collections.ConfigDict, image_shape, num_classes: int):
  """The denoiser for `model_cfg.backbone`: 'unet' (fields in model.unet) or 'dit' (fields
  in model.dit). Both map (x [B,H,W,C], t [B], y [B] or None) -> [B,H,W,C]."""
  name = model_cfg.get('backbone', 'unet')
  shared = dict(out_channels=int(image_shape[-1]), num_classes=int(num_classes),
                dropout=float(model_cfg.get('dropout', 0.0)))
  if name == 'unet':
    return UNet(**_module_fields(model_cfg.get('unet')), **shared)
  if name == 'dit':
    from genai.models import dit  # pylint: disable=import-outside-toplevel
    return dit.DiT(**_module_fields(model_cfg.get('dit')), **shared)
  raise ValueError(f'model.backbone={name!r} is unknown; use one of {BACKBONES}.')


def clip_range_of(value_range: str):
  return {'[-1,1]': (-1.0, 1.0), '[0,1]': (0.0, 1.0)}[value_range]


@functools.partial(jax.jit, static_argnames=(
    'model', 'shape', 'num_classes', 'prediction', 'clip_range', 'sampler', 'steps', 'eta',
    'guidance', 'split'))
def _sample_batch(params, schedule, rng, labels, *, model, shape, num_classes, prediction,
                  clip_range, sampler, steps, eta, guidance, split=None):
  """One jitted reverse chain. Module-level with static settings, so every ImageSampler of
  an equal model (flax modules hash by their fields) reuses the compiled chain. `split`: a
  batch sharding over several devices (genai/parallel/sharding.local_split) for the chains."""
  def apply(x, t, y):
    if split is not None:
      x = jax.lax.with_sharding_constraint(x, split)
    return model.apply({'params': params}, x, t, y, train=False)
  fn = samplers.guided_model_fn(apply, labels, num_classes=num_classes, guidance=guidance)
  return samplers.sample(fn, schedule, shape, rng, sampler=sampler, num_steps=steps, eta=eta,
                         prediction=prediction, clip_range=clip_range)


class ImageSampler:
  """Jitted sampling of images from a backbone's params.

  __call__(params, rng, num_images, labels=None, sampler=, steps=, eta=, guidance=,
  batch_size=) -> float32 [N, H, W, C] in the data range. Batches are padded to one size so
  the last one reuses the compiled chain; batch i uses fold_in(rng, i).
  """

  def __init__(self, model, schedule: dfn.Schedule, *, image_shape, num_classes: int,
               prediction: str, value_range: str, clip: bool = True):
    self.model, self.schedule = model, schedule
    self.image_shape, self.num_classes = tuple(int(d) for d in image_shape), int(num_classes)
    self.prediction = prediction
    self.clip_range = clip_range_of(value_range) if clip else None

  def __call__(self, params, rng, num_images: int, labels=None, *, sampler: str = 'ddim',
               steps: int = 50, eta: float = 0.0, guidance: float = 0.0,
               batch_size: int = 256) -> np.ndarray:
    if num_images < 1:
      raise ValueError(f'num_images={num_images} must be >= 1.')
    if sampler not in samplers.SAMPLERS:
      raise ValueError(f'sampler={sampler!r} is unknown; use one of {samplers.SAMPLERS}.')
    batch = min(batch_size, num_images)
    static = dict(model=self.model, shape=(batch,) + self.image_shape,
                  num_classes=self.num_classes, prediction=self.prediction,
                  clip_range=self.clip_range, sampler=sampler,
                  steps=int(steps) if sampler in ('ddim', 'dpm++') else 0,
                  eta=float(eta) if sampler == 'ddim' else 0.0, guidance=float(guidance))
    split = sharding.local_split(batch)  # every device's share of the chains
    if split is not None:
      static['split'] = split[0]
      params = jax.device_put(params, split[1])
    out = []
    for i, start in enumerate(range(0, num_images, batch)):
      y = None
      if labels is not None:
        y = np.asarray(labels[start:start + batch], np.int32)
        y = np.pad(y, (0, batch - len(y)), mode='edge')
      out.append(np.asarray(_sample_batch(params, self.schedule, jax.random.fold_in(rng, i),
                                          y, **static)))
    return np.concatenate(out)[:num_images]


sample_labels = families.sample_labels  # re-exported: experiments.diffusion.sample_labels


def fast_key(rng: jax.Array) -> jax.Array:
  """A key of JAX's 'unsafe_rbg' implementation (XLA's RngBitGenerator) drawn from `rng`.

  Used for parameter init and dropout masks: a UNet init makes ~100 per-parameter draws,
  and with threefry keys its jitted init takes ~4x longer to compile on CPU (about 40 s vs
  10 s of CPU for a tiny UNet); dropout masks over [B, H, W, C] are cheaper to generate too.
  Deterministic given `rng` on a given backend.
  """
  return jax.random.wrap_key_data(jax.random.bits(rng, (4,), jnp.uint32), impl='unsafe_rbg')


def state_fns(config: ml_collections.ConfigDict, model, image_shape, num_classes: int):
  tx, schedule = make_optimizer(config.optimizer, config.train.num_steps)
  tx = transfer.optimizer(config, tx)  # train.freeze, and LoRA's frozen base

  def init_state(rng, teacher=None):
    x = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
    y = jnp.zeros((1,), jnp.int32) if num_classes else None
    params = model.init(fast_key(rng), x, jnp.zeros((1,), jnp.float32), y)['params']
    state = {'params': params, 'ema_params': params, 'opt_state': tx.init(params),
             'step': jnp.zeros((), jnp.int32)}
    if teacher is not None:  # a frozen distillation teacher (no optimizer state)
      state['teacher'] = teacher
    return state

  return init_state, (tx, schedule)


def load_teacher(config, image_shape, num_classes: int, *, weights: bool = True):
  """(teacher backbone, its EMA params or their abstract shapes) for `distill.teacher`,
  checked to denoise the same images with the same schedule and prediction."""
  path = (config.get('distill') or {}).get('teacher') or ''
  if not path:
    return None, None
  t_config = workdir_lib.load_config(path, 'diffusion')
  t_info = workdir_lib.load_image_info(path, 'diffusion')
  if (tuple(t_info['image_shape']) != tuple(image_shape) or t_info['num_classes'] != num_classes
      or t_config.diffusion.to_dict() != config.diffusion.to_dict()):
    raise ValueError(f'distill.teacher={path!r} was trained on other images, classes or a '
                     'different diffusion block (schedule, steps, prediction); a teacher must '
                     'match the student on all three.')
  t_model = make_backbone(t_config.model, t_info['image_shape'], t_info['num_classes'])
  if weights:
    return t_model, jax.tree.map(np.asarray, load_workdir(path)[2])
  t_init, _ = state_fns(t_config, t_model, t_info['image_shape'], t_info['num_classes'])
  return t_model, jax.eval_shape(t_init, jax.random.key(0))['ema_params']


def load_workdir(workdir: str, step: int | None = None):
  """(config, model, ema_params, info) of a trained diffusion workdir (newest checkpoint)."""
  config = workdir_lib.load_config(workdir, 'diffusion')
  info = workdir_lib.load_image_info(workdir, 'diffusion')
  model = make_backbone(config.model, info['image_shape'], info['num_classes'])
  init_state, _ = state_fns(config, transfer.lora_model(config, model), info['image_shape'],
                            info['num_classes'])
  _, teacher_abstract = load_teacher(config, info['image_shape'], info['num_classes'],
                                      weights=False)
  init_args = () if teacher_abstract is None else (teacher_abstract,)
  state, _ = workdir_lib.restore_state(workdir, init_state, step, init_args)
  return config, model, transfer.merged_params(config, state['ema_params']), info


def sample(workdir: str, *, num_images: int, out: str, sampler: str | None = None,
           steps: int | None = None, eta: float | None = None, guidance: float | None = None,
           label: int = -1, seed: int = 0, batch_size: int = 256, name: str = 'samples'
           ) -> tuple[np.ndarray, str, str]:
  """Samples `num_images` with the EMA params (defaults from the workdir's config.sample);
  writes `{out}/{name}.png` (grid) and `{out}/{name}.npz` (uint8 images, labels)."""
  config, model, params, info = load_workdir(workdir)
  labels = sample_labels(num_images, info['num_classes'], label)
  sc = config.sample
  gen = _make_sampler(config, model, info)
  if guidance is None:
    guidance = sc.guidance if info['num_classes'] else 0.0
  x = gen(params, jax.random.key(seed), num_images, labels,
          sampler=sampler or sc.sampler, steps=sc.steps if steps is None else steps,
          eta=sc.eta if eta is None else eta, guidance=guidance, batch_size=batch_size)
  png, npz = image_files.write_samples(out, name, x, info['value_range'], labels)
  return x, png, npz




def _make_sampler(config, model, info) -> ImageSampler:
  return ImageSampler(model, dfn.make_schedule(config.diffusion),
                      image_shape=info['image_shape'], num_classes=info['num_classes'],
                      prediction=config.diffusion.prediction, value_range=info['value_range'],
                      clip=config.sample.clip)


def serving(workdir: str, step: int | None, max_batch: int) -> families.ImageServing:
  """Deterministic DDIM (eta 0) from the EMA params; `steps` and `guidance` default to the
  workdir's config.sample. Every request runs `max_batch` chains (one compiled shape)."""
  config, model, params, info = load_workdir(workdir, step)
  num_classes, sc = int(info['num_classes']), config.sample
  sampler = _make_sampler(config, model, info)

  def sample_fn(n, seed, label, guidance, steps):
    labels = sample_labels(n, num_classes, label)
    if labels is not None:
      labels = np.pad(labels, (0, max_batch - n), mode='edge')
    guidance = (sc.guidance if num_classes else 0.0) if guidance is None else guidance
    x = sampler(params, jax.random.key(seed), max_batch, labels, sampler='ddim',
                steps=sc.steps if steps is None else steps, eta=0.0, guidance=guidance,
                batch_size=max_batch)
    return x[:n]

  return families.ImageServing(tuple(info['image_shape']), num_classes, info['value_range'],
                               sample_fn)


def signatures(model: Any, schedule: dfn.Schedule, *, image_shape, num_classes: int,
               prediction: str, value_range: str, clip: bool, steps: int, batch_size: int
               ) -> dict[str, families.Signature]:
  """'sample': noise [B, H, W, C] float32 (x_T ~ N(0, I)), and for class-conditional models
  labels [B] int32 (num_classes = the null label) and guidance [] float32 (classifier-free
  scale w; 0 = plain conditional) -> x_0 after a fixed `steps`-step deterministic DDIM chain
  (eta = 0, x0 clipped to the value range when `clip`). params = the backbone's (EMA)
  params; the schedule is baked in as constants. Randomness is an input, never drawn
  inside, so exported and JAX outputs compare exactly."""
  samplers.ddim_timesteps(schedule.num_timesteps, steps)  # raises on a bad step count
  clip_range = clip_range_of(value_range) if clip else None

  def fn(params, inputs):
    model_fn = samplers.guided_model_fn(
        lambda x, t, y: model.apply({'params': params}, x, t, y, train=False),
        inputs.get('labels'), num_classes=num_classes, guidance=inputs.get('guidance'))
    x = samplers.ddim_chain(model_fn, schedule, inputs['noise'], num_steps=steps,
                            prediction=prediction, clip_range=clip_range)
    return families.image_outputs(x, value_range)

  inputs = {'noise': jax.ShapeDtypeStruct((batch_size,) + tuple(image_shape), jnp.float32)}
  if num_classes:
    inputs['labels'] = jax.ShapeDtypeStruct((batch_size,), jnp.int32)
    inputs['guidance'] = jax.ShapeDtypeStruct((), jnp.float32)
  return {'sample': families.Signature(fn, inputs)}


def export_signatures(workdir: str, *, batch_size: int = 1, steps: int | None = None,
                      **unused):
  """The EMA backbone of `workdir` as 'sample' (`steps` DDIM steps, default config.sample)."""
  del unused
  config, model, params, info = load_workdir(workdir)
  sigs = signatures(model, dfn.make_schedule(config.diffusion), image_shape=info['image_shape'],
                    num_classes=info['num_classes'], prediction=config.diffusion.prediction,
                    value_range=info['value_range'], clip=config.sample.clip,
                    steps=config.sample.steps if steps is None else steps,
                    batch_size=batch_size)
  return params, sigs, 'sample'
