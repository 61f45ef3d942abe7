"""One model, one optimizer, one loss: the state and the train step of the classifiers
(experiments/classifier.py, experiments/text_classifier.py)."""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax


def init_fn(model, example_input: jax.Array, tx: optax.GradientTransformation):
  """init_state(rng) -> {'params', 'opt_state', 'step'} of `model` on inputs like
  `example_input` (one row)."""
  def init_state(rng):
    params = model.init(rng, example_input)['params']
    return {'params': params, 'opt_state': tx.init(params), 'step': jnp.zeros((), jnp.int32)}
  return init_state


def make_train_step(loss_fn: Callable[[Any, dict], tuple[jax.Array, jax.Array]],
                    tx: optax.GradientTransformation, schedule: optax.Schedule):
  """train_step(state, batch, rng) for `loss_fn(params, batch) -> (loss, accuracy)`;
  deterministic (the rng is unused: no dropout, the iterator is seeded)."""
  def train_step(state, batch, rng):
    del rng
    (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(state['params'], batch)
    updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    metrics = {'loss': loss, 'accuracy': accuracy, 'grad_norm': optax.tree.norm(grads),
               'lr': schedule(state['step'])}
    return {'params': params, 'opt_state': opt_state, 'step': state['step'] + 1}, metrics
  return train_step
