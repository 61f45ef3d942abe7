"""Conditioning inputs shared by the diffusion backbones (UNet and DiT): the diffusion
timestep and an optional class label, embedded into one vector per example."""
from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp


def timestep_embedding(t_B: jnp.ndarray, dim: int, max_period: float = 10000.0
                       ) -> jnp.ndarray:
  """Sinusoidal embedding [B, dim] of (possibly fractional) timesteps t [B].

  Half the channels are cos(t * f_i), half sin(t * f_i) with frequencies
  f_i = max_period ** (-i / (dim // 2)), as in DDPM / ADM / DiT.
  """
  if dim % 2:
    raise ValueError(f'timestep embedding dim={dim} must be even.')
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = jnp.asarray(t_B, jnp.float32)[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class ConditionEmbedding(nn.Module):
  """c = MLP(timestep_embedding(t)) [+ label_embedding(y)], shape [B, features].

  `num_classes=0`: unconditional (y must be None). Otherwise y is int [B] in
  [0, num_classes]; the extra id `num_classes` is the "no label" class that classifier-free
  guidance trains with (label dropout) and samples with.
  """
  features: int
  num_classes: int = 0
  frequency_dim: int = 256

  @nn.compact
  def __call__(self, t_B, y_B=None):
    h = timestep_embedding(t_B, self.frequency_dim)
    h = nn.Dense(self.features, name='t_in')(h)
    h = nn.Dense(self.features, name='t_out')(nn.silu(h))
    if self.num_classes:
      if y_B is None:
        raise ValueError('this model is class-conditional (num_classes='
                         f'{self.num_classes}); pass labels y, or y=num_classes for '
                         '"no label".')
      h = h + nn.Embed(self.num_classes + 1, self.features, name='label')(y_B)
    elif y_B is not None:
      raise ValueError('labels given to an unconditional model; set model.num_classes > 0 '
                       'to train class-conditionally.')
    return h
