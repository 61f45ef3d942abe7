"""A small conv classifier whose penultimate layer is the "domain" feature extractor.

InceptionV3 features (ImageNet, 299x299 colour) describe 28x28 grayscale digits poorly, so
for small grayscale datasets genai also reports FID-domain: the same Frechet distance on the
features of this classifier trained on the dataset itself (experiments/classifier.py, with
the shared loop). Its numbers are only comparable to FID-domain figures computed with the
same classifier workdir, never to Inception FID; every report labels them `*_domain` and
names the extractor 'domain:<workdir>'.

  Classifier: [conv3x3-relu, conv3x3-relu, avgpool2] per width, flatten,
              dense(feature_dim)-relu (the features), dense(num_classes) (the logits).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from genai.data import images as images_lib

INFO_FILE = 'classifier_info.json'


def _matrix_init(key, shape, dtype=jnp.float32):
  """lecun_normal (flax's default) drawn as the [fan_in, fan_out] matrix, then reshaped.

  The same distribution as lecun_normal on `shape` (equal fan-in/fan-out), but XLA:CPU
  compiles threefry for a 2-D draw in ~1 s where a [3, 3, 8, 16] draw took ~16 s (jax 0.10,
  jax_threefry_partitionable=True): jit(init_state) went from ~50 s to a few.
  """
  fan_in = int(np.prod(shape[:-1]))
  return nn.initializers.lecun_normal()(key, (fan_in, shape[-1]), dtype).reshape(shape)


class Classifier(nn.Module):
  """Returns (logits [B, num_classes], features [B, feature_dim]) for images [B, H, W, C]."""
  num_classes: int
  widths: Sequence[int] = (32, 64)
  feature_dim: int = 128

  @nn.compact
  def __call__(self, x):
    for w in self.widths:
      x = nn.relu(nn.Conv(w, (3, 3), kernel_init=_matrix_init)(x))
      x = nn.relu(nn.Conv(w, (3, 3), kernel_init=_matrix_init)(x))
      x = nn.avg_pool(x, (2, 2), strides=(2, 2), padding='SAME')
    x = x.reshape(x.shape[0], -1)
    features = nn.relu(nn.Dense(self.feature_dim)(x))
    return nn.Dense(self.num_classes)(features), features


def make_classifier(model_cfg: Any, num_classes: int) -> Classifier:
  if num_classes < 2:
    raise ValueError(f'the classifier needs labelled data with >= 2 classes, got '
                     f'num_classes={num_classes}; use a labelled dataset (idx, tfds, '
                     'embedded, or a folder with one subfolder per class).')
  widths = tuple(int(w) for w in model_cfg.get('widths', (32, 64)))
  if not widths or min(widths) < 1:
    raise ValueError(f'model.widths={widths} must be a non-empty list of positive ints.')
  return Classifier(num_classes=num_classes, widths=widths,
                    feature_dim=int(model_cfg.get('feature_dim', 128)))


def params_hash(params: Any) -> str:
  """sha256 over every parameter's path, shape, dtype and bytes: names the weights."""
  h = hashlib.sha256()
  for path, leaf in sorted(jax.tree_util.tree_leaves_with_path(params),
                           key=lambda kv: jax.tree_util.keystr(kv[0])):
    arr = np.ascontiguousarray(np.asarray(leaf))
    h.update(f'{jax.tree_util.keystr(path)}{arr.shape}{arr.dtype}'.encode())
    h.update(arr.tobytes())
  return h.hexdigest()


# ------------------------------------------------------- a trained workdir.


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
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, INFO_FILE), 'w') as f:
    json.dump({'image_shape': [int(s) for s in image_shape], 'value_range': value_range,
               'num_classes': int(num_classes)}, f)


def load_classifier(workdir: str, step: int | None = None) -> TrainedClassifier:
  """The classifier of a workdir trained by experiments/classifier.py (newest checkpoint)."""
  from genai.train import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  from genai.train.checkpoints import Checkpointer  # pylint: disable=import-outside-toplevel
  config = workdir_lib.load_config(workdir, 'classifier')
  info_path = os.path.join(workdir, INFO_FILE)
  if not os.path.exists(info_path):
    raise FileNotFoundError(f'{info_path} not found; train the classifier first with '
                            f'python -m experiments.classifier --workdir {workdir} ...')
  with open(info_path) as f:
    info = json.load(f)
  model = make_classifier(config.model, info['num_classes'])
  ckpt = Checkpointer(os.path.join(workdir, 'checkpoints'), asynchronous=False,
                      read_only=True)
  try:
    step = ckpt.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'No checkpoint in {workdir}/checkpoints yet; train the '
                              'classifier first (python -m experiments.classifier).')
    state, _ = ckpt.restore(step, None)  # Only params are needed: no optimizer to rebuild.
  finally:
    ckpt.close()
  params = jax.tree.map(np.asarray, state['params'])
  return TrainedClassifier(model=model, params=params, image_shape=tuple(info['image_shape']),
                           value_range=info['value_range'], num_classes=info['num_classes'],
                           weights_hash=params_hash(params), workdir=os.path.abspath(workdir))


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
    logits, feats = [], []
    for i in range(0, len(x), batch_size):
      chunk = x[i:i + batch_size]
      n = len(chunk)
      if n < batch_size and len(x) > batch_size:  # One compiled shape: pad the last chunk.
        chunk = np.concatenate([chunk, np.zeros((batch_size - n,) + chunk.shape[1:],
                                                chunk.dtype)])
      lg, ft = apply(params, jnp.asarray(chunk))
      logits.append(np.asarray(lg)[:n])
      feats.append(np.asarray(ft)[:n])
    return {'pool': np.concatenate(feats).astype(np.float32),
            'logits': np.concatenate(logits).astype(np.float32)}

  return fn
