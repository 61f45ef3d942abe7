"""The classifier family: a trained workdir of experiments/classifier.py, read back as a
feature extractor ("domain" features for FID-domain, see genai/models/classifier.py).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from genai import paths
from genai.data import batching
from genai.data import images as images_lib
from genai.models.classifier import Classifier, make_classifier
from genai.train import workdir as workdir_lib

INFO_FILE = 'classifier_info.json'


def params_hash(params: Any) -> str:
  """sha256 over every parameter's path, shape, dtype and bytes: names the weights."""
  h = hashlib.sha256()
  for path, leaf in sorted(jax.tree_util.tree_leaves_with_path(params),
                           key=lambda kv: jax.tree_util.keystr(kv[0])):
    arr = np.ascontiguousarray(np.asarray(leaf))
    h.update(f'{jax.tree_util.keystr(path)}{arr.shape}{arr.dtype}'.encode())
    h.update(arr.tobytes())
  return h.hexdigest()


@dataclasses.dataclass
class TrainedClassifier:
  model: Classifier
  params: Any
  image_shape: tuple[int, int, int]
  value_range: str
  num_classes: int
  weights_hash: str
  workdir: str


def write_info(workdir: str, *, image_shape, value_range: str, num_classes: int) -> None:
  """What feature extraction needs besides the config: the input shape and range."""
  paths.write_json(paths.join(workdir, INFO_FILE),
                   {'image_shape': [int(s) for s in image_shape], 'value_range': value_range,
                    'num_classes': int(num_classes)})


def load_classifier(workdir: str, step: int | None = None) -> TrainedClassifier:
  """The classifier of a workdir trained by experiments/classifier.py (newest checkpoint)."""
  config = workdir_lib.load_config(workdir, 'classifier')
  info_path = paths.path(workdir) / INFO_FILE
  if not info_path.exists():
    raise FileNotFoundError(f'{info_path} not found; train the classifier first with '
                            f'python -m experiments.classifier --workdir {workdir} ...')
  info = json.loads(info_path.read_text())
  model = make_classifier(config.model, info['num_classes'])
  params, _ = workdir_lib.restore_params(
      workdir, step, train_hint='train the classifier first (python -m experiments.classifier).')
  return TrainedClassifier(model=model, params=params, image_shape=tuple(info['image_shape']),
                           value_range=info['value_range'], num_classes=info['num_classes'],
                           weights_hash=params_hash(params), workdir=paths.join(workdir))


def _to_model_range(images: np.ndarray, value_range: str | None, target: str) -> np.ndarray:
  """uint8 0..255, or floats in `value_range`, -> float32 in `target` (clipped)."""
  x = np.asarray(images)
  if x.dtype == np.uint8:
    return images_lib.preprocess(x, value_range=target)
  if not np.issubdtype(x.dtype, np.floating):
    raise ValueError(f'images must be uint8 (0..255) or floats with value_range, got '
                     f'dtype {x.dtype}.')
  if value_range not in images_lib.VALID_VALUE_RANGES:
    raise ValueError(f'float images need value_range in {images_lib.VALID_VALUE_RANGES} '
                     f'(got {value_range!r}); pass it, or give uint8 images.')
  x = x.astype(np.float32)
  lo, hi = float(x.min()), float(x.max())
  if value_range == '[0,1]' and lo < -0.25:
    raise ValueError(f"images have min {lo:g} but value_range='[0,1]'; they look like "
                     "[-1,1]: pass value_range='[-1,1]'.")
  if value_range == '[-1,1]' and lo >= 0 and hi > 0.5 and x.size > 100:
    raise ValueError(f"images lie in [{lo:g}, {hi:g}] but value_range='[-1,1]'; they look "
                     "like [0,1]: pass value_range='[0,1]'.")
  unit = (x + 1.0) / 2.0 if value_range == '[-1,1]' else x
  unit = np.clip(unit, 0.0, 1.0)
  return unit * 2.0 - 1.0 if target == '[-1,1]' else unit


def make_feature_fn(trained: TrainedClassifier, batch_size: int = 500
                    ) -> Callable[..., dict[str, np.ndarray]]:
  """fn(images, value_range=None) -> {'pool': [N, feature_dim], 'logits': [N, classes]}.

  Same contract as the Inception feature fn: uint8 [N, H, W, C] images, or floats in
  `value_range`. The images must have the shape the classifier was trained on (resize
  them otherwise); 'pool' is the penultimate (feature) layer.
  """
  apply = jax.jit(lambda p, x: trained.model.apply({'params': p}, x))
  params = jax.device_put(trained.params)
  h, w, c = trained.image_shape

  def fn(images, value_range: str | None = None) -> dict[str, np.ndarray]:
    x = np.asarray(images)
    if x.ndim == 3:
      x = x[..., None]
    if x.ndim != 4 or tuple(x.shape[1:3]) != (h, w):
      raise ValueError(f'the domain classifier ({trained.workdir}) takes [N, {h}, {w}, {c}] '
                       f'images, got shape {x.shape}; resize the images (or set the '
                       'reference image size) to match the data it was trained on.')
    if x.shape[-1] != c:
      if c == 3 and x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)  # Grayscale tiled to RGB, as for Inception.
      else:
        raise ValueError(f'the domain classifier takes {c}-channel images, got '
                         f'{x.shape[-1]} channels; convert them to {c} channel(s).')
    x = _to_model_range(x, value_range, trained.value_range)
    # One compiled shape: a chunk of batch_size (or all, when fewer), the last one padded.
    logits, feats = [], []
    for real, (chunk,) in batching.fixed_size_batches((x,), min(batch_size, len(x))):
      lg, ft = apply(params, jnp.asarray(chunk))
      logits.append(np.asarray(lg)[:real])
      feats.append(np.asarray(ft)[:real])
    return {'pool': np.concatenate(feats).astype(np.float32),
            'logits': np.concatenate(logits).astype(np.float32)}

  return fn
