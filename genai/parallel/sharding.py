"""Shardings of the training state and of batches on a ('data', 'fsdp', 'tensor') mesh.

Models name the axes of their parameters with *logical* names on the initialisers
(`nn.with_logical_partitioning(init, ('embed', 'mlp'))`); rules map logical names to mesh
axes. The state is created sharded: `jax.eval_shape(init)` gives the boxed abstract state,
its logical specs become `NamedSharding`s, and `jit(init, out_shardings=...)` writes each
shard straight to its device. Parameters without names (the image families) and scalars
are replicated.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from genai.parallel import mesh as mesh_lib

# Logical axis -> mesh axes, in priority order (flax assigns each mesh axis at most once
# per array). Activations' batch goes over data and fsdp; weights' model dimension is
# sharded over fsdp (ZeRO-3); heads, KV heads, MLP units and the vocabulary over tensor.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ('batch', mesh_lib.BATCH_AXES),
    ('embed', 'fsdp'),
    ('kv_heads', 'tensor'),
    ('heads', 'tensor'),
    ('mlp', 'tensor'),
    ('vocab', 'tensor'),
    ('head_dim', None),
    ('norm', None),
    ('layers', None),
)


def rules_from_config(pc: Any | None) -> tuple[tuple[str, Any], ...]:
  """`parallel.rules` (pairs that take priority) followed by DEFAULT_RULES."""
  extra = tuple((str(k), v if v is None or isinstance(v, str) else tuple(v))
                for k, v in ((pc or {}).get('rules') or ()))
  return extra + DEFAULT_RULES


def _fit_spec(spec: P, shape: Sequence[int], mesh: Mesh) -> P:
  """Drops mesh axes that do not divide their dimension (e.g. a 65-char vocabulary over
  tensor=2): that dimension stays replicated instead of failing to shard."""
  out = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    size = int(np.prod([mesh.shape[a] for a in names])) if names else 1
    out.append(axes if names and dim % size == 0 else None)
  return P(*out)


def shardings_of(abstract_boxed: Any, mesh: Mesh, rules) -> Any:
  """NamedShardings for an (abstract) pytree whose leaves may be LogicallyPartitioned."""
  specs = nn.get_partition_spec(abstract_boxed)
  mesh_specs = nn.logical_to_mesh(specs, rules)
  shapes = nn.unbox(abstract_boxed)
  is_spec = lambda x: isinstance(x, P)
  # A box around an empty node (optax's MaskedNode for frozen parameters) holds no array.
  return jax.tree.map(
      lambda s, a: NamedSharding(mesh, _fit_spec(s, a.shape, mesh)) if hasattr(a, 'shape') else a,
      mesh_specs, shapes, is_leaf=is_spec)


def abstract_state(init_state: Callable[..., Any], mesh: Mesh, rules, *args) -> Any:
  """ShapeDtypeStructs carrying their NamedShardings: the state's layout, and what orbax
  restores into (whatever topology wrote the checkpoint)."""
  boxed = jax.eval_shape(init_state, jax.random.key(0), *args)
  shardings = shardings_of(boxed, mesh, rules)
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      nn.unbox(boxed), shardings)


def state_shardings(abstract: Any) -> Any:
  """The NamedShardings of an `abstract_state`."""
  return jax.tree.map(lambda a: a.sharding, abstract)


def sharded_init(init_state: Callable[..., Any], mesh: Mesh, rules, *args
                 ) -> tuple[Callable[..., Any], Any]:
  """(jitted (rng, *args) -> unboxed state created sharded, its `abstract_state`).

  `args` (e.g. pretrained weights) are passed as arguments, not captured: a jitted closure
  would bake them into the program as constants."""
  abstract = abstract_state(init_state, mesh, rules, *args)
  init = jax.jit(lambda rng, *a: nn.unbox(init_state(rng, *a)),
                 out_shardings=state_shardings(abstract))
  return init, abstract


def batch_sharding(mesh: Mesh, leading: int = 0) -> NamedSharding:
  """Batch axis split over ('data', 'fsdp'), after `leading` unsplit axes (steps per call)."""
  return NamedSharding(mesh, P(*([None] * leading), mesh_lib.BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local: Any, sharding: NamedSharding, batch_axis: int = 0) -> Any:
  """One global jax.Array per leaf from this process's slice of the batch.

  Each process passes its own rows (`batch_size / process_count` of them); the global
  batch axis is `process_count` times longer. Single-process runs simply place the batch.
  """
  procs = jax.process_count()

  def one(x):
    x = np.asarray(x)
    shape = list(x.shape)
    shape[batch_axis] *= procs
    return jax.make_array_from_process_local_data(sharding, x, tuple(shape))

  return jax.tree.map(one, local)


def local_split(batch: int) -> tuple[NamedSharding, NamedSharding] | None:
  """(batch-split, replicated) shardings over this process's devices for single-process
  inference (Inception features, sampling chains), or None with one device or a batch
  they do not divide. On a CPU host split into one device per core
  (genai/parallel/cpu_devices.py) this is what puts every core to work."""
  devices = jax.local_devices()
  n = len(devices)
  if n == 1 or jax.process_count() > 1 or batch % n:
    return None
  mesh = Mesh(np.asarray(devices), ('batch',))
  return NamedSharding(mesh, P('batch')), NamedSharding(mesh, P())


def split_local_batch(batch: Any) -> Any:
  """On a CPU host split into devices (genai/parallel/cpu_devices.py), a host batch
  (leaves with a leading batch axis) placed split over them, as `local_split` allows;
  else unchanged. A jitted reduction over it (an evaluation loss) then runs on every core,
  with one all-reduce, instead of replicated on each device. GPUs and TPUs keep the batch
  as it is: their training mesh may order the devices otherwise (`jax.make_mesh`), and a
  jitted call needs one device order for all its arguments."""
  leaves = jax.tree.leaves(batch)
  if not leaves or jax.local_devices()[0].platform != 'cpu':
    return batch
  split = local_split(int(np.shape(leaves[0])[0]))
  return batch if split is None else jax.device_put(batch, split[0])
