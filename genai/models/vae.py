"""A convolutional variational autoencoder (flax.linen).

Encoder: per level a stride-2 3x3 conv (then `blocks_per_level` stride-1 residual convs),
flatten, a dense hidden layer (dropout after it), and two heads for the mean and log-variance
of the diagonal Gaussian posterior q(z|x). Decoder: the mirror image: dense -> the smallest
feature map -> per level a sub-pixel 2x upsampling (cropped back to the encoder's size at
that level, so odd sizes such as 7x7 work); the last upsampling outputs the image's channels.

The decoder's output is the likelihood's parameter per pixel: Bernoulli logits, or the mean
of a Gaussian whose scale is one learned log-scale per channel (see `log_scale`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

LIKELIHOODS = ('bernoulli', 'gaussian')
NORMS = ('none', 'layer', 'group')


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  image_shape: tuple[int, int, int]       # (H, W, C)
  latent_dim: int = 32
  channels: tuple[int, ...] = (32, 64)    # one stride-2 level per entry
  blocks_per_level: int = 0               # extra residual 3x3 convs per level
  hidden_dim: int = 256                   # dense layer between the convs and z (0 = none)
  likelihood: str = 'bernoulli'           # 'bernoulli' (logits) | 'gaussian' (mean)
  norm: str = 'none'                      # 'none' | 'layer' | 'group' after each conv
  dropout: float = 0.0                    # after the dense hidden layers
  min_log_scale: float = -4.6             # Gaussian: soft floor on log sigma (sigma >= ~0.01)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> 'VAEConfig':
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise ValueError(f'Unknown model config fields {unknown}; known: {sorted(names)}.')
    d = dict(d)
    d['image_shape'] = tuple(int(s) for s in d['image_shape'])
    d['channels'] = tuple(int(c) for c in d.get('channels', cls.channels))
    return cls(**d)

  def __post_init__(self):
    if self.likelihood not in LIKELIHOODS:
      raise ValueError(f'model.likelihood={self.likelihood!r} is unknown; use one of '
                       f'{LIKELIHOODS}.')
    if self.norm not in NORMS:
      raise ValueError(f'model.norm={self.norm!r} is unknown; use one of {NORMS}.')
    if self.latent_dim < 1:
      raise ValueError(f'model.latent_dim={self.latent_dim} must be >= 1.')
    if not self.channels or min(self.channels) < 1:
      raise ValueError(f'model.channels={self.channels} needs at least one positive width.')
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f'model.dropout={self.dropout} must be in [0, 1).')
    if len(self.image_shape) != 3:
      raise ValueError(f'image_shape={self.image_shape} must be (H, W, C).')

  def level_sizes(self) -> list[tuple[int, int]]:
    """Spatial size at each level: the input, then after each stride-2 conv (ceil)."""
    h, w = self.image_shape[:2]
    sizes = [(h, w)]
    for _ in self.channels:
      h, w = -(-h // 2), -(-w // 2)
      sizes.append((h, w))
    return sizes


def _norm(kind: str, channels: int) -> nn.Module | None:
  if kind == 'layer':
    return nn.LayerNorm()
  if kind == 'group':
    return nn.GroupNorm(num_groups=min(8, channels) if channels % min(8, channels) == 0
                        else 1)
  return None


class ConvBlock(nn.Module):
  """3x3 conv -> [norm] -> silu, plus the input when `residual` (stride 1, same width)."""
  features: int
  stride: int = 1
  norm: str = 'none'
  residual: bool = False

  @nn.compact
  def __call__(self, x):
    h = nn.Conv(self.features, (3, 3), strides=(self.stride, self.stride), padding='SAME')(x)
    norm = _norm(self.norm, self.features)
    if norm is not None:
      h = norm(h)
    h = nn.silu(h)
    return h + x if self.residual else h


class Encoder(nn.Module):
  cfg: VAEConfig

  @nn.compact
  def __call__(self, x_BHWC, deterministic: bool = True):
    cfg = self.cfg
    h = x_BHWC
    for width in cfg.channels:
      h = ConvBlock(width, stride=2, norm=cfg.norm)(h)
      for _ in range(cfg.blocks_per_level):
        h = ConvBlock(width, norm=cfg.norm, residual=True)(h)
    h = h.reshape(h.shape[0], -1)
    if cfg.hidden_dim:
      h = nn.silu(nn.Dense(cfg.hidden_dim)(h))
      h = nn.Dropout(cfg.dropout)(h, deterministic=deterministic)
    mean_BL = nn.Dense(cfg.latent_dim, name='mean')(h)
    logvar_BL = nn.Dense(cfg.latent_dim, name='logvar')(h)
    return mean_BL, logvar_BL


def depth_to_space(x_BHWC: jax.Array, block: int = 2) -> jax.Array:
  """[B, H, W, C * b * b] -> [B, H * b, W * b, C] (pixel shuffle)."""
  b, h, w, c = x_BHWC.shape
  c_out = c // (block * block)
  x = x_BHWC.reshape(b, h, w, block, block, c_out)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h * block, w * block, c_out)


class Decoder(nn.Module):
  """z -> dense -> smallest map -> per level: residual convs, then a sub-pixel 2x upsampling
  (a 3x3 conv to 4x the channels at low resolution, then depth_to_space). The last one
  produces the image's channels directly. Sub-pixel convs instead of transposed convs: XLA's
  CPU transposed convolution (lhs dilation) ran ~8x slower per FLOP here."""
  cfg: VAEConfig

  @nn.compact
  def __call__(self, z_BL, deterministic: bool = True):
    cfg = self.cfg
    sizes = cfg.level_sizes()
    h0, w0 = sizes[-1]
    h = z_BL
    if cfg.hidden_dim:
      h = nn.silu(nn.Dense(cfg.hidden_dim)(h))
      h = nn.Dropout(cfg.dropout)(h, deterministic=deterministic)
    h = nn.silu(nn.Dense(h0 * w0 * cfg.channels[-1])(h))
    h = h.reshape(h.shape[0], h0, w0, cfg.channels[-1])
    for level in reversed(range(len(cfg.channels))):
      for _ in range(cfg.blocks_per_level):
        h = ConvBlock(cfg.channels[level], norm=cfg.norm, residual=True)(h)
      th, tw = sizes[level]
      if level > 0:
        h = ConvBlock(4 * cfg.channels[level - 1], norm=cfg.norm)(h)
        h = depth_to_space(h)[:, :th, :tw]  # 2x overshoots odd sizes by one row/column
      else:
        h = nn.Conv(4 * cfg.image_shape[-1], (3, 3), padding='SAME', name='out')(h)
        h = depth_to_space(h)[:, :th, :tw]
    return h


class VAE(nn.Module):
  """encode(x) -> (mean, logvar) of q(z|x); decode(z) -> likelihood parameter per pixel.

  `log_scale()`: for the Gaussian likelihood, log sigma per channel, a learned parameter
  (init 0, i.e. sigma = 1) kept above `min_log_scale` by a softplus floor.
  `__call__(x, rng)`: reparameterised z = mean + exp(logvar / 2) * eps, eps ~ N(0, I);
  returns (decoder output, mean, logvar, z).
  """
  cfg: VAEConfig

  def setup(self):
    self.encoder = Encoder(self.cfg)
    self.decoder = Decoder(self.cfg)
    if self.cfg.likelihood == 'gaussian':
      self.raw_log_scale = self.param('log_scale', nn.initializers.zeros,
                                      (self.cfg.image_shape[-1],))

  def encode(self, x_BHWC, deterministic: bool = True):
    return self.encoder(x_BHWC, deterministic)

  def decode(self, z_BL, deterministic: bool = True):
    return self.decoder(z_BL, deterministic)

  def log_scale(self):
    if self.cfg.likelihood != 'gaussian':
      raise ValueError('log_scale() exists only for model.likelihood="gaussian".')
    lo = self.cfg.min_log_scale
    return lo + jax.nn.softplus(self.raw_log_scale - lo)

  def __call__(self, x_BHWC, rng: jax.Array, deterministic: bool = True):
    mean_BL, logvar_BL = self.encode(x_BHWC, deterministic)
    z_BL = reparameterize(rng, mean_BL, logvar_BL)
    return self.decode(z_BL, deterministic), mean_BL, logvar_BL, z_BL


def reparameterize(rng: jax.Array, mean: jax.Array, logvar: jax.Array,
                   eps: jax.Array | None = None) -> jax.Array:
  """z = mean + sigma * eps with eps ~ N(0, I) (or the given eps, broadcast on the left)."""
  if eps is None:
    eps = jax.random.normal(rng, mean.shape, mean.dtype)
  return mean + jnp.exp(0.5 * logvar) * eps


def make_vae(model_cfg: Any, image_shape: Sequence[int]) -> VAE:
  """A VAE from a `config.model` block (ConfigDict or dict) and the data's (H, W, C)."""
  d = dict(model_cfg) if not hasattr(model_cfg, 'to_dict') else model_cfg.to_dict()
  d.pop('init_from', None)  # where the weights start (genai/train/transfer.py), not a field
  d['image_shape'] = tuple(image_shape)
  return VAE(VAEConfig.from_dict(d))
