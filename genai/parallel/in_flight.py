"""Bounded asynchronous dispatch: a window of jitted calls in flight, never hundreds.

JAX dispatches asynchronously, so a loop over evaluation batches can queue every call
before the first finishes, and fetching the results once saves a host round trip per
call. On a CPU host split into several devices (genai/parallel/cpu_devices.py), a deep
queue of calls with an all-reduce deadlocks XLA:CPU: XLA aborts the process after 40 s
(`Termination timeout for all reduce`). benchmarks/split_queue_probe.py measured it: 256
calls waiting every 1, 2 or 32 always finished, every 64 in 2 runs of 3, never waiting
in none. The train loop keeps two calls in flight (genai/train/loop.py); loops that
dispatch many calls before reading them use `fetch_windowed`.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import jax

WINDOW = 16  # calls in flight at most: half the deepest wait that always finished


def fetch_windowed(fn: Callable[[Any], Any], items: Iterable[Any], window: int = WINDOW
                   ) -> list[Any]:
  """[jax.device_get(fn(item)) for item in items], fetching after every `window` calls:
  one host transfer per window, and never more than `window` calls queued."""
  if window < 1:
    raise ValueError(f'window must be >= 1, got {window}.')
  out: list[Any] = []
  pending: list[Any] = []
  for item in items:
    pending.append(fn(item))
    if len(pending) == window:
      out += jax.device_get(pending)
      pending = []
  return out + (jax.device_get(pending) if pending else [])
