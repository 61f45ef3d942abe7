"""What a server serves: a text model or an image generator, loaded from a source.

A source is a genai workdir (any family: the experiment that wrote it owns its format, so
this imports `experiments.<family>`; run from the repository root or install the repo), or
a pretrained text model spec (`smollm2`, `hf:DIR`, `gguf:FILE`, see genai/pretrained).
`version_of(source)` names the weights a workdir would load now (its newest checkpoint),
which is what hot reload watches.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
from typing import Any, Callable

import jax
import numpy as np

from genai.models.transformer import Transformer
from genai.sample import image_files
from genai.train import workdir as workdir_lib

IMAGE_FAMILIES = ('gan', 'vae', 'diffusion')


@dataclasses.dataclass
class TextModel:
  name: str
  version: str
  model: Transformer
  params: Any
  tokenizer: Any
  eos_id: int | None = None


@dataclasses.dataclass
class ImageModel:
  """`generate(n, seed=, label=, guidance=, steps=)` -> uint8 [n, H, W, C]."""
  name: str
  version: str
  family: str
  image_shape: tuple[int, int, int]
  num_classes: int
  generate: Callable[..., np.ndarray]


def _experiment(family: str):
  try:
    return importlib.import_module(f'experiments.{family}')
  except ImportError as e:
    raise ImportError(f'serving a {family} workdir needs the experiments package: run from '
                      'the genai repository root (python -m genai.serve ...).') from e


def is_workdir(source: str) -> bool:
  return os.path.isdir(source)


def family_of(source: str) -> str:
  if not is_workdir(source):
    return 'lm'
  return workdir_lib.load_config(source).get('experiment', 'lm')


def version_of(source: str) -> str:
  """'step-N' for a workdir's newest checkpoint; the spec itself for a pretrained model."""
  if not is_workdir(source):
    return source
  step = workdir_lib.newest_step(source)
  return f'step-{step}'


def load(source: str, name: str | None = None, version: str | None = None
         ) -> TextModel | ImageModel:
  """The model a source holds now (a workdir's newest checkpoint); `version` names it
  (default 'step-N'), e.g. a registry's 'v3'."""
  name = name or os.path.basename(os.path.normpath(source))
  if not is_workdir(source):
    return _load_pretrained(source, name)
  family = family_of(source)
  step_version = version_of(source)
  step = int(step_version.split('-')[1])
  version = version or step_version
  if family == 'lm':
    _, model, params, tok = _experiment('lm').load_workdir(source, step)
    return TextModel(name, version, model, params, tok, getattr(tok, 'eos_id', None))
  if family in IMAGE_FAMILIES:
    return _load_images(family, source, name, version, step)
  raise ValueError(f'{source!r} was trained by experiments.{family}, which has nothing to '
                   f'serve; serve an LM or image workdir ({", ".join(IMAGE_FAMILIES)}).')


def _load_pretrained(spec: str, name: str) -> TextModel:
  from genai.pretrained import sources  # pylint: disable=import-outside-toplevel
  if not (spec == 'smollm2' or spec.startswith(('hf:', 'gguf:'))):
    raise FileNotFoundError(f'{spec!r} is neither a workdir directory nor a pretrained spec '
                            '(smollm2, hf:DIR, gguf:FILE).')
  cfg, params, tok = sources.load(spec)
  if tok is None:
    raise ValueError(f'{spec} has no tokenizer (tokenizer.json or vocab.json + merges.txt); '
                     'a server needs one to read prompts.')
  return TextModel(name, spec, Transformer(cfg), params, tok, getattr(tok, 'eos_id', None))


def _load_images(family: str, workdir: str, name: str, version: str, step: int) -> ImageModel:
  exp = _experiment(family)
  max_batch = 16  # every request is padded to this batch: one compiled sampler

  def pad(z):
    return np.pad(z, [(0, max_batch - len(z))] + [(0, 0)] * (z.ndim - 1))

  if family == 'gan':
    config, nets, state, value_range = exp.load_workdir(workdir, step)
    variables_fn, gen = exp.make_sampler(nets, use_ema=config.eval.use_ema,
                                         standing=config.eval.standing_stats, seed=config.seed)
    variables = variables_fn(state)
    shape, num_classes = tuple(nets.image_shape), 0

    def sample(n, seed, label, guidance, steps):
      del label, guidance, steps
      return np.asarray(gen(variables, pad(np.asarray(nets.latents(jax.random.key(seed), n)))))[:n]
  elif family == 'vae':
    from genai.objectives import vae as vae_obj  # pylint: disable=import-outside-toplevel
    config, model, params, value_range = exp.load_workdir(workdir, step)
    info = workdir_lib.load_image_info(workdir, 'vae')
    shape, num_classes = tuple(info['image_shape']), 0
    decode = jax.jit(lambda p, z: vae_obj.decoder_mean(model, p, z))

    def sample(n, seed, label, guidance, steps):
      del label, guidance, steps
      z = jax.random.normal(jax.random.key(seed), (n, model.cfg.latent_dim))
      return np.asarray(decode(params, pad(np.asarray(z))))[:n]
  else:
    from genai.objectives import diffusion as dfn  # pylint: disable=import-outside-toplevel
    config, model, params, info = exp.load_workdir(workdir, step)
    shape, num_classes, value_range = tuple(info['image_shape']), info['num_classes'], info['value_range']
    sampler = exp.ImageSampler(model, dfn.make_schedule(config.diffusion), image_shape=shape,
                               num_classes=num_classes, prediction=config.diffusion.prediction,
                               value_range=value_range, clip=config.sample.clip)
    sc = config.sample

    def sample(n, seed, label, guidance, steps):
      labels = exp.sample_labels(n, num_classes, label)
      if labels is not None:
        labels = np.pad(labels, (0, max_batch - n), mode='edge')
      guidance = (sc.guidance if num_classes else 0.0) if guidance is None else guidance
      x = sampler(params, jax.random.key(seed), max_batch, labels, sampler='ddim',
                  steps=sc.steps if steps is None else steps, eta=0.0, guidance=guidance,
                  batch_size=max_batch)
      return x[:n]

  def generate(n: int, *, seed: int = 0, label: int = -1, guidance: float | None = None,
               steps: int | None = None) -> np.ndarray:
    if not 1 <= n <= max_batch:
      raise ValueError(f'n={n}: ask for 1 to {max_batch} images per request.')
    if label >= 0 and not num_classes:
      raise ValueError('label given but this model is unconditional.')
    if label >= num_classes > 0:
      raise ValueError(f'label={label} is not a class of this model (0..{num_classes - 1}).')
    return image_files.to_uint8(sample(n, seed, label, guidance, steps), value_range)

  return ImageModel(name, version, family, shape, int(num_classes), generate)
