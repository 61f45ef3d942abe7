"""Model families: what a trained workdir holds, read back without the experiment scripts.

Each family has one module here, `genai.families.<name>`, named as the `experiment` field of
the `config.json` its training run wrote. The module owns the workdir format of its family:
how to rebuild the model from the config, restore the newest (or a given) checkpoint, and
sample. Serving, export, retraining and audits find a family by that name through `get`,
so a new family adds its own module (and its experiment script) and edits none of them.

What a family module may define (each is optional; a caller that needs one the family does
not have says so in one line):

  load_workdir(workdir, step=None) -> tuple   the family's own (config, model, params, ...)
  serving(workdir, step, max_batch) -> TextServing | ImageServing        genai.serve
  export_signatures(workdir, **options) -> (params, {name: Signature}, default name)
                                                                         genai.export
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import pkgutil
from types import ModuleType
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from genai import paths

Inputs = dict[str, jax.ShapeDtypeStruct]


@dataclasses.dataclass(frozen=True)
class Signature:
  """One exported function: `fn(params, inputs) -> outputs` on inputs of these shapes."""
  fn: Callable[[Any, dict[str, jax.Array]], dict[str, jax.Array]]
  inputs: Inputs
  tflite: bool = True  # whether tflite conversion makes sense for it


@dataclasses.dataclass
class TextServing:
  """A language model to serve: `model.apply`-able module, its params and tokenizer."""
  model: Any
  params: Any
  tokenizer: Any


@dataclasses.dataclass
class ImageServing:
  """An image generator to serve. `sample(n, seed, label, guidance, steps)` returns float
  images [n, H, W, C] in `value_range` ('[-1,1]' or '[0,1]'); n <= the max_batch asked for."""
  image_shape: tuple[int, int, int]
  num_classes: int
  value_range: str
  sample: Callable[..., np.ndarray]


def pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
  """`x` padded with zero rows to `rows` (one compiled batch shape for every request)."""
  return np.pad(x, [(0, rows - len(x))] + [(0, 0)] * (x.ndim - 1))


def to_uint8(images: jax.Array, value_range: str) -> jax.Array:
  """`genai.sample.image_files.to_uint8` in jnp ops (exportable): float images -> uint8."""
  x = (images + 1.0) / 2.0 if value_range == '[-1,1]' else images
  return jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0).astype(jnp.uint8)


def image_outputs(images: jax.Array, value_range: str) -> dict[str, jax.Array]:
  """What every exported image signature returns: float32 `images` in the workdir's value
  range and `images_uint8` (rescaled to [0,1], clipped, rounded)."""
  images = images.astype(jnp.float32)
  return {'images': images, 'images_uint8': to_uint8(images, value_range)}


def resolve_num_classes(config: Any, data_classes: int) -> int:
  """The class count of an image model: 0 unless config.model.class_conditional, else the
  data's (ValueError when the data has no labels)."""
  if not config.model.class_conditional:
    return 0
  if not data_classes:
    raise ValueError('model.class_conditional=True but the data has no labels; use labelled '
                     'data (or a folder with one subfolder per class) or set '
                     'model.class_conditional=False.')
  return int(data_classes)


def sample_labels(num_images: int, num_classes: int, label: int = -1) -> np.ndarray | None:
  """The labels to sample a class-conditional image model with: None (unconditional), all
  `label`, or the classes in turn 0, 1, ... when label < 0."""
  if not num_classes:
    if label >= 0:
      raise ValueError('--label given but the model is unconditional; train with '
                       'model.class_conditional=True.')
    return None
  if label >= num_classes:
    raise ValueError(f'--label={label} is not a class of this model (0..{num_classes - 1}).')
  if label >= 0:
    return np.full((num_images,), label, np.int32)
  return (np.arange(num_images) % num_classes).astype(np.int32)


def names() -> tuple[str, ...]:
  """Every family this installation has (the modules of this package)."""
  return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith('_')))


def family_of(workdir: str) -> str:
  """The family that wrote `workdir` (its config.json's `experiment`)."""
  path = paths.path(workdir) / 'config.json'
  if not path.is_file():
    raise ValueError(f'{workdir!r} is not a genai workdir (no config.json); pass the '
                            'folder a training run wrote (python -m experiments.<family> '
                            '--workdir ...).')
  return json.loads(path.read_text()).get('experiment') or 'lm'


def get(name: str) -> ModuleType:
  """The module of family `name`; ValueError naming the known families otherwise."""
  if name not in names():
    raise ValueError(f'unknown model family {name!r}; this genai knows {", ".join(names())}.')
  return importlib.import_module(f'{__name__}.{name}')


def capability(workdir: str, attr: str, what: str) -> tuple[str, Callable[..., Any]]:
  """(family, its function `attr`) for a workdir; ValueError when that family has none,
  e.g. capability(w, 'export_signatures', 'export')."""
  family = family_of(workdir)
  fn = getattr(get(family), attr, None)
  if fn is None:
    have = [n for n in names() if hasattr(get(n), attr)]
    raise ValueError(f'{workdir!r} was trained by experiments.{family}, which has no {what}; '
                     f'{what} supports {", ".join(have)}.')
  return family, fn
