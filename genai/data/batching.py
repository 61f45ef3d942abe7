"""Shuffled, per-host-sharded batches of item *indices*: the shared core of every input
pipeline. Callers gather each index batch with one numpy fancy-index; grain's per-element
path (and its prefetch threads) cost several times more CPU, which a 2-core machine
running XLA cannot spare."""
from __future__ import annotations

import grain
import numpy as np

# No prefetch threads: next() is a fraction of a millisecond and jax's async dispatch
# already overlaps it with the previous step's compute.
NO_PREFETCH = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)


def resolve_shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
  """Defaults to this process's place among jax processes (one shard per host)."""
  if shard_index is None or shard_count is None:
    import jax  # pylint: disable=import-outside-toplevel
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
  if not 0 <= shard_index < shard_count:
    raise ValueError(f'shard_index={shard_index} must be in [0, '
                     f'shard_count={shard_count}).')
  return shard_index, shard_count


def _indices_to_array(indices: list) -> np.ndarray:
  return np.asarray(indices, dtype=np.int64)


def index_batches(num_items: int, *, batch_size: int, seed: int, shard_index: int,
                  shard_count: int) -> grain.MapDataset:
  """Endless int64 [batch_size] index batches over this host's slice of range(num_items).

  grain's shuffle draws a fresh permutation per epoch (seed + epoch), so
  shuffle-then-repeat gives a new order every pass over the data.
  """
  if batch_size < 1:
    raise ValueError(f'batch_size={batch_size} must be >= 1.')
  ds = grain.MapDataset.range(num_items)
  if shard_count > 1:
    ds = ds[shard_index::shard_count]
  ds = ds.shuffle(seed=int(seed) % 2**32).repeat()
  return ds.batch(batch_size, drop_remainder=True, batch_fn=_indices_to_array)


def items_per_shard(num_items: int, shard_index: int, shard_count: int) -> int:
  return len(range(shard_index, num_items, shard_count))


def fixed_size_batches(arrays: tuple[np.ndarray, ...], batch_size: int
                       ) -> list[tuple[int, tuple[np.ndarray, ...]]]:
  """Batches of `batch_size` rows over equally long `arrays`, the last one padded with
  copies of the first row, so one compiled shape serves every batch of an evaluation.
  [(number of real rows, padded arrays)]; callers mask or drop the padded rows' results."""
  n = len(arrays[0])
  if n < 1 or batch_size < 1:
    raise ValueError(f'need at least one row and batch_size >= 1 (got {n} rows, '
                     f'batch_size={batch_size}).')
  out = []
  for start in range(0, n, batch_size):
    real = min(batch_size, n - start)
    pad = np.zeros(batch_size - real, np.int64)
    out.append((real, tuple(np.concatenate([a[start:start + real], a[pad]]) for a in arrays)))
  return out
