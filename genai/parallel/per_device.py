"""pmap's per-device semantics through `jax.shard_map`, for steps that want them.

Under the default sharded jit, a train step sees the *global* batch: BatchNorm statistics
are global (SyncBN) and one latent draw covers all devices. Some recipes were written for
pmap instead: each device normalises with its own batch statistics, draws its own noise,
and gradients are averaged explicitly. `per_device_step` gives exactly that:

  * the family's `train_step(state, batch, rng)` runs once per batch shard (one per device
    along the ('data', 'fsdp') axes) on that shard's rows and the replicated state;
  * its rng is `fold_in(rng, device index)`, so every device draws different noise;
  * inside it, `pmean(x)` averages over devices (use it on gradients and on running
    statistics, as `lax.pmean(..., 'batch')` was used under pmap); outside per-device mode
    `pmean` is the identity, so the same step also runs under plain sharded jit;
  * metrics are averaged over devices.
The state must be replicated (tensor = 1; families without logical axis names are).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable

import jax
from jax.sharding import Mesh, PartitionSpec as P

from genai.parallel import mesh as mesh_lib

_ACTIVE = threading.local()


@contextlib.contextmanager
def _tracing_per_device():
  previous = getattr(_ACTIVE, 'on', False)
  _ACTIVE.on = True
  try:
    yield
  finally:
    _ACTIVE.on = previous


def pmean(tree: Any) -> Any:
  """Mean over the per-device batch shards inside `per_device_step`; identity elsewhere."""
  if not getattr(_ACTIVE, 'on', False):
    return tree
  return jax.lax.pmean(tree, mesh_lib.BATCH_AXES)


def device_index() -> jax.Array:
  """This shard's index along ('data', 'fsdp') inside `per_device_step`."""
  return jax.lax.axis_index(mesh_lib.BATCH_AXES)


def per_device_step(train_step: Callable, mesh: Mesh) -> Callable:
  """(state, global batch, rng) -> (state, metrics) with pmap semantics (see module doc)."""
  if mesh.shape['tensor'] != 1:
    raise ValueError('train.per_device=True runs the step once per data shard on a '
                     f'replicated state; it needs parallel.tensor=1 (got {mesh.shape["tensor"]}).')

  def shard_step(state, batch, rng):
    with _tracing_per_device():
      state, metrics = train_step(state, batch, jax.random.fold_in(rng, device_index()))
      return state, jax.lax.pmean(metrics, mesh_lib.BATCH_AXES)

  # check_vma=False: the state is replicated by construction (updates use pmean'd
  # gradients), which the type system cannot see through optax.
  return jax.shard_map(shard_step, mesh=mesh, in_specs=(P(), P(mesh_lib.BATCH_AXES), P()),
                       out_specs=(P(), P()), check_vma=False)
