"""A small conv classifier whose penultimate layer is the "domain" feature extractor.

InceptionV3 features (ImageNet, 299x299 colour) describe 28x28 grayscale digits poorly, so
for small grayscale datasets genai also reports FID-domain: the same Frechet distance on the
features of this classifier trained on the dataset itself (experiments/classifier.py, with
the shared loop; genai/families/classifier.py reads its workdir and extracts features). Its numbers are only comparable to FID-domain figures computed with the
same classifier workdir, never to Inception FID; every report labels them `*_domain` and
names the extractor 'domain:<workdir>'.

  Classifier: [conv3x3-relu, conv3x3-relu, avgpool2] per width, flatten,
              dense(feature_dim)-relu (the features), dense(num_classes) (the logits).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np


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
