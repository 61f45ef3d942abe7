"""Multi-host start-up: `jax.distributed.initialize` from a config's `parallel` block.

JAX's multi-controller runtime runs the same program on every host; each host drives its
local devices and XLA's collectives connect them. Call `initialize` before anything
touches a device (the shared loop's `workdir.run` does it first).

  parallel.distributed = 'auto'  initialise when the environment says this is one of
                                 several processes (a multi-host TPU VM slice, SLURM with
                                 more than one task, Open MPI, or an explicit coordinator
                                 in the config or in JAX_COORDINATOR_ADDRESS); else not.
                         'on'    always (JAX detects TPU/SLURM/MPI clusters itself, or
                                 uses coordinator_address/num_processes/process_id).
                         'off'   never: a single process.
On CPU hosts the cross-process collectives use gloo (`parallel.cpu_collectives`).
"""
from __future__ import annotations

import os
from typing import Any

import jax

MODES = ('auto', 'on', 'off')


def cluster_env() -> str | None:
  """Why the environment looks multi-process, or None."""
  env = os.environ
  if env.get('JAX_COORDINATOR_ADDRESS'):
    return 'JAX_COORDINATOR_ADDRESS is set'
  if int(env.get('SLURM_NTASKS', '1') or 1) > 1 and env.get('SLURM_JOB_ID'):
    return f'SLURM job with {env["SLURM_NTASKS"]} tasks'
  if int(env.get('OMPI_COMM_WORLD_SIZE', '1') or 1) > 1:
    return f'Open MPI world of {env["OMPI_COMM_WORLD_SIZE"]}'
  hosts = env.get('TPU_WORKER_HOSTNAMES', '')
  if len([h for h in hosts.split(',') if h]) > 1:
    return 'multi-host TPU slice'
  return None


def initialize(pc: Any | None) -> bool:
  """Initialises the multi-controller runtime if configured; True if it is running."""
  pc = pc or {}
  mode = pc.get('distributed', 'auto')
  if mode not in MODES:
    raise ValueError(f'parallel.distributed={mode!r} is unknown; use one of {MODES}.')
  if jax.distributed.is_initialized():
    return True
  address = pc.get('coordinator_address', '') or None
  if mode == 'off' or (mode == 'auto' and not address and cluster_env() is None):
    return False
  num = int(pc.get('num_processes', 0) or 0) or None
  pid = int(pc.get('process_id', -1))
  pid = pid if pid >= 0 else None
  if address and (num is None or pid is None) and cluster_env() is None:
    raise ValueError(f'parallel.coordinator_address={address!r} needs parallel.num_processes '
                     'and parallel.process_id too (outside SLURM/MPI/TPU, which set them).')
  collectives = pc.get('cpu_collectives', 'gloo')
  if collectives:
    jax.config.update('jax_cpu_collectives_implementation', collectives)
  jax.distributed.initialize(coordinator_address=address, num_processes=num, process_id=pid)
  return True
