"""On a CPU-only host, one XLA device per core, so data parallelism uses every core.

XLA:CPU runs one program on one device with a thread pool, and the small convolutions of
the diffusion UNet keep few of its threads busy: on a 2-core AMD EPYC VM its train step
(configs/diffusion/mnist.py, batch 64) took 130 ms on one device with both cores and 90 ms
on two devices with half the batch each. The loop already splits the global batch over the
mesh's data axis (genai/parallel/mesh.py), so splitting the host is all it takes; the math
is the same global-batch step (BatchNorm syncs over the whole batch unless
train.per_device is set). The baby char LM's command took 46.8-50.3 s split against
54.0-56.9 as one device, its evaluation losses split too (sharding.split_local_batch). It
does not pay everywhere: the DCGAN step (batch 64) took 29 ms split against 20.5 on one
device, and the MNIST DiT's command gained nothing (docs/parallel.md).

The device count is XLA's `--xla_force_host_platform_device_count`, which must be in
XLA_FLAGS before JAX starts its CPU backend, so a command sets it first thing
(genai/train/cli.py, from the config's `parallel` block):

  parallel.cpu_devices = 1   plain JAX: the whole host is one device (the default);
  parallel.cpu_devices = 0   auto: one device per core this process may run on (its CPU
                             affinity, so `taskset -c 1` means one), at most 8, lowered to
                             the largest count that divides train.batch_size (the
                             diffusion MNIST and baby char LM configs);
  parallel.cpu_devices = n   exactly n.

Auto leaves JAX's default where the user chose for themselves: a mesh with explicit axis
sizes or `parallel.num_devices`, or a multi-process run; no setting overrides XLA_FLAGS
that already set the count, or a JAX whose backends already started. On GPU/TPU hosts the
flag only shapes the CPU client, which those runs do not train on. Inference with no
collectives (Inception features, diffusion sampling chains) splits its batches over the
devices through genai/parallel/sharding.local_split; `python -m genai.evaluation.fid`
splits the host for it. `benchmarks/conv_step_speed.py`, `lm_step_speed.py` and
`inception_speed.py` time both layouts (`--cpu_devices`).

A known failure: a deep queue of calls with an all-reduce deadlocks XLA:CPU on a split
host. One device's share of the all-reduce waits for the other's and XLA aborts the
process after 40 s (`Termination timeout for all reduce`). The char LM's 1-step train
call on 2 devices, 256 calls, waiting every N (benchmarks/split_queue_probe.py, jax
0.10.2): every run finished with N = 1, 2 or 32, 2 of 3 with N = 64, none without
waiting. The train loop keeps at most two calls in flight (it fetches call c's metrics
after dispatching call c+1), and so do the speed benchmarks (benchmarks/sharded_step.py):
keep it so in any loop over a split host.
"""
from __future__ import annotations

import os
import re
from typing import Any, Iterable

from genai.parallel import distributed

FLAG = '--xla_force_host_platform_device_count'
MAX_AUTO = 8  # one replica of params and optimizer state per device: bound the copies


def usable_cores() -> int:
  """The cores this process may run on (its affinity mask), else os.cpu_count()."""
  try:
    return len(os.sched_getaffinity(0))
  except (AttributeError, OSError):
    return os.cpu_count() or 1


def auto_count(batch_sizes: Iterable[int] = (), cores: int | None = None) -> int:
  """One device per core (at most MAX_AUTO), lowered until it divides every batch size."""
  n = max(1, min(cores if cores is not None else usable_cores(), MAX_AUTO))
  sizes = [int(b) for b in batch_sizes if b]
  while n > 1 and any(b % n for b in sizes):
    n -= 1
  return n


def current_flag() -> int | None:
  """The device count XLA_FLAGS already sets, or None."""
  m = re.search(re.escape(FLAG) + r'=(\d+)', os.environ.get('XLA_FLAGS', ''))
  return int(m.group(1)) if m else None


def _backends_started() -> bool:
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):
    return True  # cannot tell: do not touch a running JAX


def set_count(n: int) -> bool:
  """Puts `n` host devices in XLA_FLAGS; False (and no change) when the user's XLA_FLAGS
  already set a count or JAX's backends have started."""
  if n < 1:
    raise ValueError(f'parallel.cpu_devices={n}: use 0 (auto) or a device count >= 1.')
  if current_flag() is not None or _backends_started():
    return False
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + f' {FLAG}={n}').strip()
  return True


def split_for(batch_sizes: Iterable[int], n: int = 0) -> bool:
  """Splits the host for inference on `batch_sizes` (Inception features, sampling chains):
  `n` devices, or with n=0 one per core that divides every batch size (`auto_count`).
  Call it before JAX starts; returns what `set_count` does."""
  return set_count(n or auto_count(batch_sizes))


def _user_chose_devices(pc: Any) -> bool:
  """Whether the config's mesh or start-up must keep the devices JAX gives: an explicit
  `parallel.num_devices` or mesh axis sizes, or a multi-process run."""
  return bool(int(pc.get('num_devices', 0) or 0)
              or (int(pc.get('data', -1)), int(pc.get('fsdp', 1)), int(pc.get('tensor', 1)))
              != (-1, 1, 1)
              or pc.get('distributed', 'auto') == 'on' or pc.get('coordinator_address', '')
              or distributed.cluster_env() is not None)


def configure(config: Any) -> int | None:
  """Sets the host's CPU device count from `config.parallel.cpu_devices` (module doc) before
  JAX starts; returns the count set, or None when it left JAX's default."""
  pc = config.get('parallel') or {}
  wanted = int(pc.get('cpu_devices', 1))
  if wanted < 0:
    raise ValueError(f'parallel.cpu_devices={wanted}: use 0 (auto) or a device count >= 1.')
  if wanted == 1:
    return None  # JAX's own default
  if not wanted and _user_chose_devices(pc):
    return None
  train = config.get('train') or {}
  n = wanted or auto_count([train.get('batch_size', 0)])
  return n if n > 1 and set_count(n) else None
