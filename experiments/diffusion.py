"""Denoising diffusion (DDPM training; DDPM / DDIM sampling, classifier-free guidance) with a
UNet (or DiT) backbone on the shared loop. EMA weights are used for every sample.

Train (re-running the same command resumes from the newest checkpoint):
  python -m experiments.diffusion --config configs/diffusion/digits.py --workdir runs/diff
Sample N images (PNG grid + .npz) from a trained workdir:
  python -m experiments.diffusion --workdir runs/diff --sample --num_images 64 --out runs/s \
    [--sampler ddim --sample_steps 50 --eta 0 --guidance 2.0 --label 3]
"""
from __future__ import annotations

import functools
import os
import time
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
from genai.models.unet import UNet
from genai.objectives import diffusion as dfn
from genai.sample import diffusion_samplers as samplers
from genai.sample import image_files
from genai.parallel import mesh as mesh_lib
from genai.train import ema as ema_lib
from genai.train import cli
from genai.train import loop
from genai.train import workdir as workdir_lib
from genai.train.optimizers import make_optimizer

BACKBONES = ('unet', 'dit')


# =========================== Building blocks ===========================================

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


def resolve_num_classes(config: ml_collections.ConfigDict, data_classes: int) -> int:
  if not config.model.class_conditional:
    return 0
  if not data_classes:
    raise ValueError('model.class_conditional=True but the data has no labels; use labelled '
                     'data (or a folder with one subfolder per class) or set '
                     'model.class_conditional=False.')
  return int(data_classes)


@functools.partial(jax.jit, static_argnames=(
    'model', 'shape', 'num_classes', 'prediction', 'clip_range', 'sampler', 'steps', 'eta',
    'guidance'))
def _sample_batch(params, schedule, rng, labels, *, model, shape, num_classes, prediction,
                  clip_range, sampler, steps, eta, guidance):
  """One jitted reverse chain. Module-level with static settings, so every ImageSampler of
  an equal model (flax modules hash by their fields) reuses the compiled chain."""
  apply = lambda x, t, y: model.apply({'params': params}, x, t, y, train=False)
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
                  steps=int(steps) if sampler == 'ddim' else 0,
                  eta=float(eta) if sampler == 'ddim' else 0.0, guidance=float(guidance))
    out = []
    for i, start in enumerate(range(0, num_images, batch)):
      y = None
      if labels is not None:
        y = np.asarray(labels[start:start + batch], np.int32)
        y = np.pad(y, (0, batch - len(y)), mode='edge')
      out.append(np.asarray(_sample_batch(params, self.schedule, jax.random.fold_in(rng, i),
                                          y, **static)))
    return np.concatenate(out)[:num_images]


def sample_labels(num_images: int, num_classes: int, label: int = -1):
  """None (unconditional), all `label`, or classes cycled 0, 1, ..., when label < 0."""
  if not num_classes:
    if label >= 0:
      raise ValueError('--label given but the model is unconditional; train with '
                       'model.class_conditional=True (config arg `cond`).')
    return None
  if label >= num_classes:
    raise ValueError(f'--label={label} is not a class of this model (0..{num_classes - 1}).')
  if label >= 0:
    return np.full((num_images,), label, np.int32)
  return (np.arange(num_images) % num_classes).astype(np.int32)


# =========================== The task for the shared loop ==============================

def fast_key(rng: jax.Array) -> jax.Array:
  """A key of JAX's 'unsafe_rbg' implementation (XLA's RngBitGenerator) drawn from `rng`.

  Used for parameter init and dropout masks: a UNet init makes ~100 per-parameter draws,
  and with threefry keys its jitted init takes ~4x longer to compile on CPU (about 40 s vs
  10 s of CPU for a tiny UNet); dropout masks over [B, H, W, C] are cheaper to generate too.
  Deterministic given `rng` on a given backend.
  """
  return jax.random.wrap_key_data(jax.random.bits(rng, (4,), jnp.uint32), impl='unsafe_rbg')


def _state_fns(config: ml_collections.ConfigDict, model, image_shape, num_classes: int):
  tx, schedule = make_optimizer(config.optimizer, config.train.num_steps)

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


def _load_teacher(config, image_shape, num_classes: int, *, weights: bool = True):
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
  t_init, _ = _state_fns(t_config, t_model, t_info['image_shape'], t_info['num_classes'])
  return t_model, jax.eval_shape(t_init, jax.random.key(0))['ema_params']


def build_task(config: ml_collections.ConfigDict, workdir: str) -> loop.Task:
  tc, ec = config.train, config.eval
  data = images_lib.load_image_data(config.data, batch_size=mesh_lib.local_batch_size(tc.batch_size), seed=config.seed)
  images_lib.check_value_range(data.eval_images, data.value_range)
  num_classes = resolve_num_classes(config, data.num_classes)
  image_shape = data.image_shape
  workdir_lib.save_image_info(workdir, image_shape, data.value_range, num_classes)

  model = make_backbone(config.model, image_shape, num_classes)
  sched = dfn.make_schedule(config.diffusion)
  dfn.check_prediction(config.diffusion.prediction)
  init_state, (tx, lr_schedule) = _state_fns(config, model, image_shape, num_classes)
  teacher_model, teacher_params = _load_teacher(config, image_shape, num_classes)
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
    total = []
    for i, start in enumerate(range(0, len(eval_x), eb)):
      y = None if eval_y is None else eval_y[start:start + eb]
      total.append(eval_batch(params, eval_x[start:start + eb], y,
                              jax.random.fold_in(jax.random.key(config.seed + 2), i)))
    return float(sum(jax.device_get(total))) / len(eval_x)

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
      image_files.write_samples(os.path.join(workdir, 'samples'), f'step_{step:07d}', x,
                                data.value_range, labels)
      results['samples'] = image_files.make_grid(
          image_files.to_uint8(x, data.value_range))[None]
    return results

  return loop.Task(init_state=init_state, train_step=train_step, train_iter=data.train_iter,
                   evaluate=evaluate, examples_per_step=tc.batch_size,
                   init_args=() if teacher_params is None else (teacher_params,))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Any:
  return workdir_lib.run(config, workdir, build_task)


# =========================== Sampling from a workdir ===================================

def load_workdir(workdir: str, step: int | None = None):
  """(config, model, ema_params, info) of a trained diffusion workdir (newest checkpoint)."""
  config = workdir_lib.load_config(workdir, 'diffusion')
  info = workdir_lib.load_image_info(workdir, 'diffusion')
  model = make_backbone(config.model, info['image_shape'], info['num_classes'])
  init_state, _ = _state_fns(config, model, info['image_shape'], info['num_classes'])
  _, teacher_abstract = _load_teacher(config, info['image_shape'], info['num_classes'],
                                      weights=False)
  init_args = () if teacher_abstract is None else (teacher_abstract,)
  state, _ = workdir_lib.restore_state(workdir, init_state, step, init_args)
  return config, model, state['ema_params'], info


def sample(workdir: str, *, num_images: int, out: str, sampler: str | None = None,
           steps: int | None = None, eta: float | None = None, guidance: float | None = None,
           label: int = -1, seed: int = 0, batch_size: int = 256, name: str = 'samples'
           ) -> tuple[np.ndarray, str, str]:
  """Samples `num_images` with the EMA params (defaults from the workdir's config.sample);
  writes `{out}/{name}.png` (grid) and `{out}/{name}.npz` (uint8 images, labels)."""
  config, model, params, info = load_workdir(workdir)
  labels = sample_labels(num_images, info['num_classes'], label)
  sc = config.sample
  sched = dfn.make_schedule(config.diffusion)
  gen = ImageSampler(model, sched, image_shape=info['image_shape'],
                     num_classes=info['num_classes'], prediction=config.diffusion.prediction,
                     value_range=info['value_range'], clip=sc.clip)
  if guidance is None:
    guidance = sc.guidance if info['num_classes'] else 0.0
  x = gen(params, jax.random.key(seed), num_images, labels,
          sampler=sampler or sc.sampler, steps=sc.steps if steps is None else steps,
          eta=sc.eta if eta is None else eta, guidance=guidance, batch_size=batch_size)
  png, npz = image_files.write_samples(out, name, x, info['value_range'], labels)
  return x, png, npz


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
  out = f.out or os.path.join(f.workdir, 'cli')
  t0 = time.perf_counter()
  _, png, npz = sample(f.workdir, num_images=f.num_images, out=out, sampler=f.sampler,
                       steps=f.sample_steps, eta=f.eta, guidance=f.guidance, label=f.label,
                       seed=f.seed, batch_size=f.batch_size)
  print(f'wrote {png} and {npz} ({f.num_images} images, {time.perf_counter() - t0:.1f} s)')


if __name__ == '__main__':
  define_flags()
  app.run(cli.main(train_and_evaluate, _sample_from_flags, 'configs/diffusion/digits.py'),
          flags_parser=cli.parse_flags)
