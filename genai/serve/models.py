"""What a server serves: a text model or an image generator, loaded from a source.

A source is a genai workdir of any family that can be served (the family's module in
genai/families reads it: `serving(workdir, step, max_batch)`), or a pretrained text model
spec (`smollm2`, `hf:DIR`, `gguf:FILE`, see genai/pretrained). `version_of(source)` names the
weights a workdir would load now (its newest checkpoint), which is what hot reload watches.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import numpy as np

from genai import families
from genai.models.transformer import Transformer
from genai.sample import image_files
from genai.train import workdir as workdir_lib

MAX_IMAGE_BATCH = 16  # every image request is padded to this batch: one compiled sampler


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


def is_workdir(source: str) -> bool:
  return os.path.isdir(source)


def version_of(source: str) -> str:
  """'step-N' for a workdir's newest checkpoint; the spec itself for a pretrained model."""
  if not is_workdir(source):
    return source
  step = workdir_lib.newest_step(source)
  return f'step-{step}'


def load(source: str, name: str | None = None, version: str | None = None, *,
         max_len: int = 0) -> TextModel | ImageModel:
  """The model a source holds now (a workdir's newest checkpoint); `version` names it
  (default 'step-N'), e.g. a registry's 'v3'. `max_len` > 0: a pretrained model served with
  that shorter context (its KV cache and prompt buckets sized to it; SmolLM2's 8,192 makes a
  CPU server compile for minutes and hold gigabytes of cache)."""
  name = name or os.path.basename(os.path.normpath(source))
  if not is_workdir(source):
    return _load_pretrained(source, name, max_len)
  if max_len:
    raise ValueError(f'--max_len applies to --pretrained models only; {source!r} is a '
                     'workdir, served with its own context (data.block_size)')
  workdir_lib.load_config(source)  # a folder without config.json: "...a genai workdir? Train first"
  step_version = version_of(source)
  step = int(step_version.split('-')[1])
  version = version or step_version
  family, serving = families.capability(source, 'serving', 'serving')
  served = serving(source, step, MAX_IMAGE_BATCH)
  if isinstance(served, families.TextServing):
    tok = served.tokenizer
    return TextModel(name, version, served.model, served.params, tok, getattr(tok, 'eos_id', None))
  return _image_model(served, family, name, version)


def _load_pretrained(spec: str, name: str, max_len: int = 0) -> TextModel:
  from genai.pretrained import sources  # pylint: disable=import-outside-toplevel
  if not (spec == 'smollm2' or spec.startswith(('hf:', 'gguf:'))):
    raise FileNotFoundError(f'{spec!r} is neither a workdir directory nor a pretrained spec '
                            '(smollm2, hf:DIR, gguf:FILE).')
  if max_len:
    full = sources.config_of(spec).max_len
    if not 1 < max_len <= full:
      raise ValueError(f'--max_len={max_len} must be in [2, {full}] (the context of {spec})')
  cfg, params, tok = sources.load(spec, **({'max_len': max_len} if max_len else {}))
  if tok is None:
    raise ValueError(f'{spec} has no tokenizer (tokenizer.json or vocab.json + merges.txt); '
                     'a server needs one to read prompts.')
  return TextModel(name, spec, Transformer(cfg), params, tok, getattr(tok, 'eos_id', None))


def _image_model(served: families.ImageServing, family: str, name: str, version: str
                 ) -> ImageModel:
  shape, num_classes = served.image_shape, served.num_classes

  def generate(n: int, *, seed: int = 0, label: int = -1, guidance: float | None = None,
               steps: int | None = None) -> np.ndarray:
    if not 1 <= n <= MAX_IMAGE_BATCH:
      raise ValueError(f'n={n}: ask for 1 to {MAX_IMAGE_BATCH} images per request.')
    if label >= 0 and not num_classes:
      raise ValueError('label given but this model is unconditional.')
    if label >= num_classes > 0:
      raise ValueError(f'label={label} is not a class of this model (0..{num_classes - 1}).')
    return image_files.to_uint8(served.sample(n, seed, label, guidance, steps),
                                served.value_range)

  return ImageModel(name, version, family, tuple(shape), int(num_classes), generate)
