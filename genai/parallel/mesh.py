"""The device mesh from a config's `parallel` block, and the batch sizes it implies.

Three named mesh axes cover the usual layouts of a transformer:

  data    plain data parallelism: the batch is split, parameters are replicated.
  fsdp    the batch is split *and* parameters/optimizer state are sharded (ZeRO-3 style);
          XLA all-gathers each weight where it is used and reduce-scatters its gradient.
  tensor  tensor (Megatron) parallelism: attention heads and MLP hidden units are split.

`parallel.data=-1` takes every device the other axes leave, so the default mesh is pure
data parallelism over all devices, on one CPU as on a TPU pod. The batch is always split
over ('data', 'fsdp') together, so `train.batch_size` (the *global* batch) must divide
by data * fsdp; each process loads `batch_size / process_count` examples of it.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

AXES = ('data', 'fsdp', 'tensor')
BATCH_AXES = ('data', 'fsdp')


def mesh_shape(pc: Any, num_devices: int) -> tuple[int, ...]:
  """(data, fsdp, tensor) sizes for `num_devices`, resolving one -1 entry. An axis the
  block leaves out has its default (parallel_config's): data -1, fsdp and tensor 1."""
  sizes = [int(pc.get(a, -1 if a == 'data' else 1)) for a in AXES]
  given = ', '.join(f'parallel.{a}={s}' for a, s in zip(AXES, sizes))
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f'Bad mesh ({given}): each axis needs a size >= 1, and at most one '
                     'may be -1 (= every device the other axes leave).')
  fixed = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % fixed:
      raise ValueError(f'The mesh ({given}) does not divide the {num_devices} devices: '
                       f'{num_devices} is not a multiple of {fixed}. Pick axis sizes whose '
                       f'product divides {num_devices}.')
    sizes[sizes.index(-1)] = num_devices // fixed
  elif fixed != num_devices:
    raise ValueError(f'The mesh ({given}) has {fixed} devices but {num_devices} are in use. '
                     'Make the product of the axis sizes equal the device count, or set '
                     'one axis to -1 to take the rest (e.g. parallel.data=-1).')
  return tuple(sizes)


def make_mesh(pc: Any | None = None) -> Mesh:
  """A ('data', 'fsdp', 'tensor') mesh over all devices (or the first `parallel.num_devices`).

  `jax.make_mesh` orders devices so the last axes (tensor, then fsdp) get the fastest
  interconnect: ICI neighbours on TPU, NVLink peers on a GPU box.
  """
  pc = pc if pc is not None else {}
  devices = jax.devices()
  n = int(pc.get('num_devices', 0) or 0)
  if n:
    if jax.process_count() > 1:
      raise ValueError('parallel.num_devices only works in a single process; leave it at 0 '
                       'on multi-host runs (every device of every host is used).')
    if not 0 < n <= len(devices):
      raise ValueError(f'parallel.num_devices={n}, but only {len(devices)} devices exist.')
    devices = devices[:n]
  shape = mesh_shape(pc, len(devices))
  # Auto axes: XLA's sharding propagation (GSPMD) places the intermediates; only the state
  # and batch shardings are pinned. (jax.make_mesh defaults to Explicit axes, whose
  # sharding-in-types would make every gather/einsum in the models spell its out_sharding.)
  auto = (jax.sharding.AxisType.Auto,) * len(AXES)
  if len(devices) == len(jax.devices()):
    return jax.make_mesh(shape, AXES, axis_types=auto, devices=devices)
  return Mesh(np.asarray(devices).reshape(shape), AXES, axis_types=auto)


def batch_shards(mesh: Mesh) -> int:
  """How many ways the batch is split: data * fsdp."""
  return mesh.shape['data'] * mesh.shape['fsdp']


def local_batch_size(global_batch: int, mesh: Mesh | None = None,
                     name: str = 'train.batch_size') -> int:
  """The examples this process loads per step of a global batch, with clear errors."""
  procs = jax.process_count()
  if mesh is not None and global_batch % batch_shards(mesh):
    raise ValueError(
        f'{name}={global_batch} does not divide over the data axes of the mesh '
        f'(data={mesh.shape["data"]} x fsdp={mesh.shape["fsdp"]} = {batch_shards(mesh)} '
        f'shards); use a multiple of {batch_shards(mesh)}.')
  if global_batch % procs:
    raise ValueError(f'{name}={global_batch} is the global batch and must divide over the '
                     f'{procs} processes; use a multiple of {procs}.')
  return global_batch // procs
