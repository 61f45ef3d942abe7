"""On a CPU-only host: how many XLA devices, and which convolution kernels.

XLA:CPU runs one program on one device with a thread pool. Splitting the host into one
device per core lets data parallelism use every core where one program keeps few threads
busy. The loop already splits the global batch over the mesh's data axis
(genai/parallel/mesh.py), so splitting the host is all it takes; the math is the same
global-batch step (BatchNorm syncs over the whole batch unless train.per_device is set).
It pays for the baby char LM: its command took 46.8-50.3 s split against 54.0-56.9 as one
device, its evaluation losses split too (sharding.split_local_batch). The convolutional
recipes run on one device instead, their convolutions on Eigen's thread pool (below): the
diffusion MNIST recipe's 300 steps and evaluation took 33.2 s against 39.2 split with
YNNPACK's convolutions, the DCGAN step 15.7 against 29 ms split (docs/parallel.md).

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
collectives (Inception features, diffusion sampling chains) splits its batches over
whatever devices there are (genai/parallel/sharding.local_split); `python -m
genai.evaluation.fid` and the sampling commands lay the host out with `split_for` (one
device with Eigen convolutions, where available). `benchmarks/conv_step_speed.py`,
`lm_step_speed.py` and `inception_speed.py` time both layouts (`--cpu_devices`).

Convolutions: jaxlib 0.10 hands each convolution to YNNPACK (XNNPACK's successor), which
runs it on one thread; XLA's Eigen convolution uses the device's whole thread pool. So
where a device has more than one core, `conv_kernels` takes convolutions off YNNPACK
(`--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`, the rest of YNNPACK's
fusions kept). On the 2-core AMD EPYC VM, one device: a 3x3 convolution's forward and
backward (batch 64, 28x28, 64 -> 64) 42 ms against 77, the DCGAN step 15.7 ms against
19.7, the UNet step 84-94 against 121-139, FID Inception 28.1 images/s against 10.6.
Where each device has one core (a split host) YNNPACK stays: Eigen's convolutions made
the split UNet step slower (112-120 ms against 85). Only set on the jaxlib versions
it was measured on (0.10.x: an unknown flag in XLA_FLAGS aborts XLA) and never over the
user's own setting of that flag.

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
YNN_FLAG = '--xla_cpu_experimental_ynn_fusion_type'
CONV_OFF_YNN = f'{YNN_FLAG}=-individual_convolution'
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


def _jaxlib_measured() -> bool:
  """Whether the installed jaxlib is one `CONV_OFF_YNN` was measured on (0.10.x), read from
  its metadata (no import)."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  try:
    return metadata.version('jaxlib').startswith('0.10.')
  except metadata.PackageNotFoundError:
    return False


def _conv_choice_open() -> bool:
  """Whether genai may choose the convolution kernels: a jaxlib it was measured on and no
  YNN fusion types in the user's XLA_FLAGS."""
  return _jaxlib_measured() and YNN_FLAG not in os.environ.get('XLA_FLAGS', '')


def conv_kernels(devices: int, cores: int | None = None) -> bool:
  """Routes XLA:CPU's convolutions to Eigen (multi-threaded) when each of the host's
  `devices` has more than one of its `cores` (module doc); True when it set the flag.
  Leaves alone XLA_FLAGS that already name the YNN fusion types, a started JAX, and
  jaxlib versions it was not measured on."""
  per_device = (cores if cores is not None else usable_cores()) // max(1, devices)
  if per_device < 2 or _backends_started() or not _conv_choice_open():
    return False
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + f' {CONV_OFF_YNN}').strip()
  return True


def conv_kernel_name() -> str:
  """Which kernels this process's convolutions run on: 'Eigen' or 'YNNPACK'."""
  return 'Eigen' if CONV_OFF_YNN in os.environ.get('XLA_FLAGS', '') else 'YNNPACK'


def split_for(batch_sizes: Iterable[int], n: int = 0) -> bool:
  """Lays the host out for convolutional inference on `batch_sizes` (Inception features,
  sampling chains) and picks its convolution kernels (`conv_kernels`). `n` devices if
  given. Auto (n=0): one device with Eigen's multi-threaded convolutions where
  `conv_kernels` can choose them (FID Inception on the 2-core AMD EPYC VM: 28.1 images/s
  on one device, 27.0 split with Eigen, 16.4 split with YNNPACK, 10.6 on one device with
  YNNPACK), else one device per core that divides every batch size (`auto_count`). Call
  it before JAX starts; returns what `set_count` does."""
  if not n and _conv_choice_open():
    n = 1
  split = set_count(n or auto_count(batch_sizes))
  conv_kernels(current_flag() or 1)
  return split


def _user_chose_devices(pc: Any) -> bool:
  """Whether the config's mesh or start-up must keep the devices JAX gives: an explicit
  `parallel.num_devices` or mesh axis sizes, or a multi-process run."""
  return bool(int(pc.get('num_devices', 0) or 0)
              or (int(pc.get('data', -1)), int(pc.get('fsdp', 1)), int(pc.get('tensor', 1)))
              != (-1, 1, 1)
              or pc.get('distributed', 'auto') == 'on' or pc.get('coordinator_address', '')
              or distributed.cluster_env() is not None)


def configure(config: Any) -> int | None:
  """Sets the host's CPU device count from `config.parallel.cpu_devices` (module doc) and
  the convolution kernels for it (`conv_kernels`) before JAX starts; returns the count
  set, or None when it left JAX's default."""
  n = _configure_count(config)
  conv_kernels(current_flag() or 1)
  return n


def _configure_count(config: Any) -> int | None:
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
