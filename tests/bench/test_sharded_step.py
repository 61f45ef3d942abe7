"""benchmarks/sharded_step.py: the step-speed benchmarks run a task's step as the loop does."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import sharded_step
from genai.train import loop


def _task():
  """state = {'w', 'step'}; each step adds the batch's mean to w and counts itself."""
  def init_state(rng):
    del rng
    return {'w': jnp.zeros(()), 'step': jnp.zeros((), jnp.int32)}

  def train_step(state, batch, rng):
    del rng
    w = state['w'] + jnp.mean(batch['x'])
    return {'w': w, 'step': state['step'] + 1}, {'loss': w}

  batches = ({'x': np.full((4, 2), float(i), np.float32)} for i in itertools.count())
  return loop.Task(init_state=init_state, train_step=train_step, train_iter=batches)


def test_runs_every_batch_in_calls_of_k_steps_keeping_the_state():
  task = _task()
  step = sharded_step.build(task, [next(task.train_iter) for _ in range(6)], steps_per_call=3)
  assert len(step.stacked) == 2
  metrics = step.run(2)  # batches 0..5 once: w = 0 + 1 + ... + 5
  assert int(step.state['step']) == 6 and float(step.state['w']) == 15.0
  np.testing.assert_allclose(jax.device_get(metrics['loss']), [6.0, 10.0, 15.0])
  step.run(3)  # calls wrap around the stacked batches: 0..2, 3..5, 0..2
  assert int(step.state['step']) == 15 and float(step.state['w']) == 15.0 + 15 + 3


def test_batches_must_fill_whole_calls():
  task = _task()
  with pytest.raises(ValueError, match='not a multiple of steps_per_call=4'):
    sharded_step.build(task, [next(task.train_iter) for _ in range(6)], steps_per_call=4)
