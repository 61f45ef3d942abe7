"""Gradients with optional accumulation over micro-batches, inside one jitted step."""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp


def value_and_grad(loss_fn: Callable[..., tuple[jax.Array, Any]], params: Any, batch: Any,
                   rng: jax.Array, num_microbatches: int = 1):
  """((loss, aux), grads) of loss_fn(params, batch, rng), averaged over micro-batches.

  With num_microbatches=k the leading batch axis is split into k equal parts that are
  processed sequentially by `lax.scan` (k times less activation memory); the result
  equals the full-batch gradient of a per-example-mean loss.
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if num_microbatches == 1:
    return grad_fn(params, batch, rng)

  def split(x):
    if x.shape[0] % num_microbatches:
      raise ValueError(f'Batch size {x.shape[0]} is not divisible by '
                       f'train.grad_accum_steps={num_microbatches}.')
    # Strided: micro-batch i is rows i, i+k, i+2k, ... With the batch split over devices in
    # contiguous blocks, every device then holds its share of every micro-batch, and no
    # data moves between devices.
    x = x.reshape(x.shape[0] // num_microbatches, num_microbatches, *x.shape[1:])
    return jnp.swapaxes(x, 0, 1)

  micro = jax.tree.map(split, batch)

  def body(carry, xs):
    mb, i = xs
    return jax.tree.map(jnp.add, carry, grad_fn(params, mb, jax.random.fold_in(rng, i))), None

  first = jax.tree.map(lambda x: x[0], micro)
  zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(grad_fn, params, first, rng))
  ((loss, aux), grads), _ = jax.lax.scan(body, zeros, (micro, jnp.arange(num_microbatches)))
  scale = 1.0 / num_microbatches
  return (loss * scale, aux), jax.tree.map(lambda g: g * scale, grads)
