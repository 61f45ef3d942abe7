"""Cutting token streams into (inputs, targets) training windows with grain."""

from __future__ import annotations

from typing import Sequence

import grain
import numpy as np

from genai.data import batching

Batch = dict[str, np.ndarray]


def split_train_val(tokens: np.ndarray, val_fraction: float, *,
                    block_size: int | None = None, n_train: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
  """Splits off the last `val_fraction` of `tokens` as validation (nanoGPT), or
  everything after the first `n_train` tokens when that is given.

  With `block_size`, both parts must hold at least one window of
  block_size + 1 tokens (validation only when val_fraction > 0).
  """
  if not 0.0 <= val_fraction < 1.0:
    raise ValueError(
        f'data.val_fraction={val_fraction} must be in [0, 1); e.g. 0.1 keeps '
        'the last 10% of tokens for validation.')
  tokens = np.asarray(tokens)
  if n_train is None:
    n_train = int(len(tokens) * (1.0 - val_fraction))
  train, val = tokens[:n_train], tokens[n_train:]
  if block_size is not None:
    need = block_size + 1
    if len(train) < need:
      raise ValueError(
          f'the training split has {len(train)} tokens but one window needs '
          f'data.block_size + 1 = {need}; use a smaller data.block_size, a '
          'smaller data.val_fraction, or more data.')
    if val_fraction > 0 and len(val) < need:
      raise ValueError(
          f'data.val_fraction={val_fraction} leaves {len(val)} validation '
          f'tokens but one window needs data.block_size + 1 = {need}; raise '
          'data.val_fraction, lower data.block_size, or use more data.')
  return train, val


class TokenWindows:
  """Random-access source of fixed-length windows over a token array.

  Element i is tokens[i*stride : i*stride + block_size + 1] as
  {'inputs': x[:-1], 'targets': x[1:]} (int32). stride=block_size gives
  packed non-overlapping blocks; stride=1 gives every offset.
  """

  def __init__(self, tokens: np.ndarray, *, block_size: int, stride: int):
    if block_size < 1 or stride < 1:
      raise ValueError(
          f'data.block_size={block_size} and stride={stride} must both be >= '
          '1.')
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
      raise ValueError(f'tokens must be a 1-D array, got shape {tokens.shape}; '
                       'flatten the token stream first.')
    if block_size + 1 > len(tokens):
      raise ValueError(
          f'a window needs data.block_size + 1 = {block_size + 1} tokens but '
          f'the token stream has only {len(tokens)}; use a smaller '
          'data.block_size or more data.')
    # int32 once up front, so every window/batch is already the model dtype.
    self.tokens = tokens.astype(np.int32, copy=False)
    self.block_size = block_size
    self.stride = stride
    self._num = (len(tokens) - block_size - 1) // stride + 1
    self._offsets = np.arange(block_size + 1)

  def __len__(self) -> int:
    return self._num

  def __getitem__(self, index: int) -> Batch:
    if not -self._num <= index < self._num:
      raise IndexError(f'window {index} out of range for {self._num} windows')
    start = (index % self._num) * self.stride
    x = self.tokens[start:start + self.block_size + 1]
    return {'inputs': x[:-1], 'targets': x[1:]}

  def gather(self, indices: Sequence[int] | np.ndarray) -> Batch:
    """Returns windows `indices` stacked as [len(indices), block_size]."""
    idx = np.asarray(indices, dtype=np.int64)
    # One fancy-index gather for the whole batch instead of a Python loop.
    x = self.tokens[(idx * self.stride)[:, None] + self._offsets]
    # Contiguous copies (a few microseconds) so consumers never see views.
    return {'inputs': np.ascontiguousarray(x[:, :-1]),
            'targets': np.ascontiguousarray(x[:, 1:])}

  def _getitems(self, indices: Sequence[int]) -> list[Batch]:
    # grain's batched-read protocol (SupportsBatchedReadRandomAccessDataSource).
    batch = self.gather(indices)
    return [{'inputs': i, 'targets': t}
            for i, t in zip(batch['inputs'], batch['targets'])]

  def __repr__(self) -> str:
    return (f'TokenWindows(tokens={len(self.tokens)}, block_size='
            f'{self.block_size}, stride={self.stride}, windows={self._num})')


def make_train_dataset(tokens: np.ndarray, *, block_size: int, batch_size: int,
                       stride: int, seed: int, shard_index: int | None = None,
                       shard_count: int | None = None,
                       read_options: grain.ReadOptions | None = None
                       ) -> grain.IterDataset:
  """The endless, shuffled, sharded training batches as a grain IterDataset."""
  if batch_size < 1:
    raise ValueError(f'batch_size={batch_size} must be >= 1.')
  windows = TokenWindows(tokens, block_size=block_size, stride=stride)
  shard_index, shard_count = batching.resolve_shard(shard_index, shard_count)
  if batching.items_per_shard(len(windows), shard_index, shard_count) == 0:
    raise ValueError(
        f'{len(windows)} training windows cannot be split over {shard_count} '
        'hosts (this host gets none); use more data, a smaller '
        'data.block_size, or a smaller stride.')
  ds = batching.index_batches(len(windows), batch_size=batch_size, seed=seed,
                              shard_index=shard_index, shard_count=shard_count)
  return ds.map(windows.gather).to_iter_dataset(read_options or batching.NO_PREFETCH)


def make_train_iterator(tokens: np.ndarray, *, block_size: int,
                        batch_size: int, stride: int, seed: int,
                        shard_index: int | None = None,
                        shard_count: int | None = None
                        ) -> grain.DatasetIterator:
  """Endless iterator of {'inputs', 'targets'} int32 [B, T] batches.

  `batch_size` is per host (each host reads its own shard). Supports
  get_state()/set_state() (a small JSON-serialisable dict) so a resumed run
  sees exactly the batches it would have seen.
  """
  return iter(make_train_dataset(
      tokens, block_size=block_size, batch_size=batch_size, stride=stride,
      seed=seed, shard_index=shard_index, shard_count=shard_count))


def eval_batches(tokens: np.ndarray, *, block_size: int, batch_size: int,
                 max_batches: int) -> list[Batch]:
  """Deterministic non-overlapping windows from the start of `tokens`.

  At most `max_batches` full batches (0 = all); when not even one full batch
  fits, a single smaller batch of every available window.
  """
  windows = TokenWindows(tokens, block_size=block_size, stride=block_size)
  n = len(windows)
  if n < batch_size:
    return [windows.gather(np.arange(n))]
  num_batches = n // batch_size
  if max_batches > 0:
    num_batches = min(num_batches, max_batches)
  return [windows.gather(np.arange(b * batch_size, (b + 1) * batch_size))
          for b in range(num_batches)]
