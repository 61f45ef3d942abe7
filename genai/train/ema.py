"""Exponential moving average of parameters (used for GAN generators and diffusion
sampling): ema <- decay * ema + (1 - decay) * params, inside the jitted train step."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def ema_decay(step: jax.Array, decay: float, warmup: bool = True) -> jax.Array:
  """`decay`, ramped up as min(decay, (1 + step) / (10 + step)) when `warmup`.

  The ramp keeps early EMA weights close to the (fast-moving) parameters instead of the
  random initialisation; it is the schedule used by TF's ExponentialMovingAverage with
  num_updates.
  """
  decay = jnp.asarray(decay, jnp.float32)
  if not warmup:
    return decay
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def ema_update(ema: Any, params: Any, decay: jax.Array | float) -> Any:
  return jax.tree.map(lambda e, p: (decay * e + (1.0 - decay) * p).astype(e.dtype),
                      ema, params)
