"""A task's train step set up as the loop runs it, for the step-speed benchmarks.

`build` makes what `genai.train.loop.train` would: a data-parallel mesh, the state
initialised with its shardings, `make_multi_step` (donated state, `steps_per_call` steps
per jitted call, the task's per-device and unroll settings) and the batches stacked
`steps_per_call` at a time and split over the mesh. benchmarks/lm_train.time_step and
benchmarks/conv_step_speed time it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np

from genai.parallel import mesh as mesh_lib
from genai.parallel import sharding
from genai.train import loop


@dataclasses.dataclass
class ShardedStep:
  """`call(i)` runs stacked batch `i % len(stacked)` through one jitted call, keeping the
  (donated) state, and returns the call's metrics; `run(n)` makes n calls."""
  multi_step: Callable
  state: Any
  stacked: list
  steps_per_call: int

  def call(self, i: int = 0, first_step: int = 0):
    self.state, metrics = self.multi_step(self.state, self.stacked[i % len(self.stacked)],
                                          np.int32(first_step))
    return metrics

  def run(self, calls: int) -> Any:
    """`calls` calls, as the loop runs them: call c's metrics are awaited after call c+1 is
    dispatched, so at most two calls are in flight (a deeper queue of calls with an
    all-reduce deadlocks XLA:CPU on a host split into devices: docs/parallel.md).
    Returns the last call's metrics, the state ready."""
    previous = None
    for c in range(calls):
      metrics = self.call(c, c * self.steps_per_call)
      if previous is not None:
        jax.block_until_ready(previous)
      previous = metrics
    jax.block_until_ready((self.state, previous))
    return previous

  def lower(self):
    return self.multi_step.lower(self.state, self.stacked[0], np.int32(0))


def build(task: loop.Task, batches: list, steps_per_call: int, devices: int = 0) -> ShardedStep:
  """`task`'s step on a data-parallel mesh of the first `devices` devices (0 = all), fed
  `batches` (a multiple of `steps_per_call` of them) in calls of `steps_per_call` steps."""
  if len(batches) % steps_per_call:
    raise ValueError(f'{len(batches)} batches are not a multiple of steps_per_call='
                     f'{steps_per_call}.')
  mesh = mesh_lib.make_mesh({'data': -1, 'num_devices': devices})
  init, abstract = sharding.sharded_init(task.init_state, mesh, sharding.DEFAULT_RULES,
                                         *task.init_args)
  batch_sharding = sharding.batch_sharding(mesh, leading=1)
  stacked = [sharding.global_batch(loop.stack_batches(batches[i:i + steps_per_call]),
                                   batch_sharding, batch_axis=1)
             for i in range(0, len(batches), steps_per_call)]
  multi_step = loop.make_multi_step(task.train_step, jax.random.key(1), mesh,
                                    sharding.state_shardings(abstract),
                                    per_device=task.per_device, unroll=task.unroll_steps)
  return ShardedStep(multi_step, init(jax.random.key(0), *task.init_args), stacked,
                     steps_per_call)
