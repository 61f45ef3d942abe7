"""Training windows streamed from prepared token shards (genai.data.prepare) with grain.

A split's documents, each ended by the separator (EOS), form one token stream; window i is
stream[i*B : i*B + B + 1] for block size B: documents are packed into fixed windows with
EOS between them. Where a window lies is arithmetic on the manifest's per-shard counts, so
a window reads the one or two records (of `chunk_tokens` ids) it spans, and nothing holds
the corpus, its token array or a per-document index in memory.

Each batch also carries `mask` (0 on the target that is a new document's first token:
predicting it from the previous document's text is not learnable, so the loss skips it)
and, when asked, `segment_ids` (1, 2, ... per document within the window, for attention
that does not cross documents).

The training iterator is a grain pipeline: a fresh global shuffle of all windows every
epoch, split across jax processes (each reads 1/process_count of every epoch's windows,
none twice, none missing), batched, gathered, optionally in worker processes and with
prefetch. Its get_state()/set_state() is what the training loop checkpoints, so a resumed
run reads exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Sequence

import grain
import numpy as np

from genai.data import batching
from genai.data import token_shards

Batch = dict[str, np.ndarray]
log = logging.getLogger(__name__)
_SEQUENTIAL_READS = 32


class PackedWindows:
  """Random-access windows of `block_size + 1` tokens of a prepared split (a grain source).

  Element i is {'inputs', 'targets', 'mask'[, 'segment_ids']} for stream window i;
  `gather(indices)` returns a stacked batch. Picklable (grain worker processes): the
  ArrayRecord readers are opened lazily in each process.
  """

  def __init__(self, root: str, split: str, *, block_size: int, segment_ids: bool = False,
               manifest: dict[str, Any] | None = None,
               reader_options: dict[str, str] | None = None):
    self.root, self.split = root, split
    self.manifest = manifest or token_shards.read_manifest(root, split)
    self.paths = token_shards.shard_paths(root, split, self.manifest)
    m = self.manifest
    self.block_size, self.segment_ids = int(block_size), bool(segment_ids)
    if self.block_size < 1:
      raise ValueError(f'data.block_size={block_size} must be >= 1.')
    self.chunk = int(m['chunk_tokens'])
    self.dtype = np.dtype(m['dtype'])
    counts = [s['num_tokens'] for s in m['shards']]
    self._shard_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    self._record_base = np.concatenate(
        [[0], np.cumsum([s['num_records'] for s in m['shards']])]).astype(np.int64)
    self.num_tokens = int(self._shard_start[-1])
    if self.num_tokens < self.block_size + 1:
      raise ValueError(
          f'{self._where()} holds {self.num_tokens} tokens but one window needs '
          f'data.block_size + 1 = {self.block_size + 1}; lower data.block_size or prepare '
          'more text.')
    self._num = (self.num_tokens - 1) // self.block_size
    self._reader_options = reader_options or token_shards.READER_OPTIONS
    self._source = None

  def _where(self) -> str:
    return os.path.join(self.root, self.split)

  def __len__(self) -> int:
    return self._num

  def __getstate__(self):
    return {**self.__dict__, '_source': None}

  def _records(self, ids: Sequence[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    if self._source is None:
      self._source = grain.sources.ArrayRecordDataSource(
          [_instruction(p, s['num_records']) for p, s in zip(self.paths, self.manifest['shards'])],
          reader_options=self._reader_options)
    ids = sorted(set(int(i) for i in ids))
    try:
      # A few records: one by one (grain's batched read starts a thread pool per call,
      # several times the cost of reading them); many: in parallel threads.
      raw = ([self._source[i] for i in ids] if len(ids) <= _SEQUENTIAL_READS
             else self._source.__getitems__(ids))
    except (RuntimeError, OSError) as e:  # riegeli: RuntimeError on a damaged chunk
      shard = self.paths[int(np.searchsorted(self._record_base, ids[0], 'right')) - 1]
      raise ValueError(f'{shard} (or another shard of {self._where()}) is corrupt '
                       f'({str(e).splitlines()[0][:160]}); prepare the data again.') from None
    out = {}
    for i, data in zip(ids, raw):
      shard = int(np.searchsorted(self._record_base, i, 'right')) - 1
      out[i] = token_shards.decode_record(data, self.dtype, self.paths[shard])
    return out

  def _spans(self, start: int, stop: int) -> list[tuple[int, int, int]]:
    """(record id, first, last) pieces of stream range [start, stop)."""
    spans = []
    pos = start
    while pos < stop:
      shard = int(np.searchsorted(self._shard_start, pos, 'right')) - 1
      local = pos - int(self._shard_start[shard])
      r = local // self.chunk
      rec_start = int(self._shard_start[shard]) + r * self.chunk
      rec_stop = min(rec_start + self.chunk, int(self._shard_start[shard + 1]))
      end = min(stop, rec_stop)
      spans.append((int(self._record_base[shard]) + r, pos - rec_start, end - rec_start))
      pos = end
    return spans

  def gather(self, indices: Sequence[int] | np.ndarray) -> Batch:
    """Windows `indices` stacked: int32 inputs/targets/mask (and segment_ids) [n, B]."""
    idx = np.asarray(indices, np.int64).reshape(-1)
    if len(idx) and (idx.min() < 0 or idx.max() >= self._num):
      raise IndexError(f'window index out of range [0, {self._num})')
    n, w = len(idx), self.block_size + 1
    plans = [self._spans(int(i) * self.block_size, int(i) * self.block_size + w) for i in idx]
    records = self._records([r for plan in plans for r, _, _ in plan])
    tokens = np.empty((n, w), np.int32)
    starts = np.zeros((n, w), bool)
    for row, plan in enumerate(plans):
      at = 0
      for r, a, b in plan:
        toks, doc_starts = records[r]
        tokens[row, at:at + b - a] = toks[a:b]
        s = doc_starts[(doc_starts >= a) & (doc_starts < b)]
        starts[row, at + s - a] = True
        at += b - a
    batch = {'inputs': tokens[:, :-1].copy(), 'targets': tokens[:, 1:].copy(),
             'mask': (~starts[:, 1:]).astype(np.int32)}
    if self.segment_ids:
      inner = starts[:, :-1].copy()
      inner[:, 0] = False
      batch['segment_ids'] = (1 + np.cumsum(inner, axis=1)).astype(np.int32)
    return batch

  def __getitem__(self, index: int) -> Batch:
    return {k: v[0] for k, v in self.gather([index]).items()}

  def _getitems(self, indices: Sequence[int]) -> list[Batch]:
    batch = self.gather(indices)
    return [{k: v[i] for k, v in batch.items()} for i in range(len(indices))]

  def __repr__(self) -> str:
    return (f'PackedWindows({self._where()}, tokens={self.num_tokens}, '
            f'block_size={self.block_size}, windows={self._num})')


def _instruction(path: str, num_records: int) -> str:
  """'PATH[0:N]': the record count from the manifest, so grain does not open every shard
  just to count its records."""
  return f'{path}[0:{num_records}]'


def make_train_dataset(windows: PackedWindows, *, batch_size: int, seed: int,
                       shard_index: int | None = None, shard_count: int | None = None,
                       num_workers: int = 0, prefetch: int = 0) -> grain.IterDataset:
  """Endless batches: every epoch a fresh permutation of all windows, of which process p of
  P reads positions p, p+P, ... (no window twice, none missing, over the processes), cut
  into per-process batches of `batch_size`. `num_workers` > 0 gathers in that many worker
  processes (grain mp_prefetch); `prefetch` > 0 reads ahead that many batches in threads."""
  if batch_size < 1:
    raise ValueError(f'batch_size={batch_size} must be >= 1.')
  shard_index, shard_count = batching.resolve_shard(shard_index, shard_count)
  n = len(windows)
  if len(range(shard_index, n, shard_count)) < 1:
    raise ValueError(f'{n} windows cannot be split over {shard_count} processes; prepare '
                     'more text or lower data.block_size.')
  ds = grain.MapDataset.range(n).shuffle(seed=int(seed) % 2**32)
  if shard_count > 1:
    # Slicing a shuffled dataset keeps its epochs: element k of this slice in epoch e is
    # window perm_e[shard_index + k * shard_count].
    ds = ds[shard_index::shard_count]
  ds = ds.repeat().batch(batch_size, drop_remainder=True, batch_fn=_indices_to_array)
  ds = ds.map(windows.gather)
  options = (grain.ReadOptions(num_threads=max(1, prefetch), prefetch_buffer_size=prefetch)
             if prefetch > 0 else batching.NO_PREFETCH)
  it = ds.to_iter_dataset(options)
  if num_workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return it


def _indices_to_array(indices: list) -> np.ndarray:
  return np.asarray(indices, dtype=np.int64)


def eval_batches(windows: PackedWindows, *, batch_size: int, max_batches: int = 0
                 ) -> list[Batch]:
  """Deterministic batches of consecutive windows from the start of the split: at most
  `max_batches` (0 = every full batch); fewer windows than a batch: one smaller batch."""
  n = len(windows)
  if n < batch_size:
    return [windows.gather(np.arange(n))]
  count = n // batch_size if max_batches <= 0 else min(n // batch_size, max_batches)
  return [windows.gather(np.arange(b * batch_size, (b + 1) * batch_size)) for b in range(count)]


@dataclasses.dataclass
class PreparedInfo:
  """What a training run needs to know about the prepared data beside its batches."""
  tokenizer: Any
  train_manifest: dict[str, Any]
  val_manifest: dict[str, Any] | None
  train_windows: int
  val_windows: int
  chars_per_token: float   # of the validation (else training) split: for bits per char
  prompt: str              # the first document's opening text: a default sample prompt


def prepared_lm_data(path: str, *, tokenizer=None, block_size: int, batch_size: int,
                     seed: int, val_split: str | None = 'validation',
                     train_split: str = 'train', eval_batch_size: int | None = None,
                     eval_max_batches: int = 0, segment_ids: bool = False,
                     num_workers: int = 0, prefetch: int = 0,
                     shard_index: int | None = None, shard_count: int | None = None
                     ) -> tuple[grain.DatasetIterator, list[Batch], PreparedInfo]:
  """(train_iter, val_batches, info) of a corpus prepared by `python -m genai.data.prepare`.

  `tokenizer`: the one training uses; None loads PATH/tokenizer. One whose identity differs
  from the manifest's is refused. `batch_size` is per process. `val_split` '' or None = no
  validation; a named split that was not prepared is an error listing the ones that were.
  """
  train_m = token_shards.read_manifest(path, train_split)
  if tokenizer is None:
    tokenizer = token_shards.load_prepared_tokenizer(path)
  token_shards.check_tokenizer(train_m, tokenizer, path, train_split)
  windows = PackedWindows(path, train_split, block_size=block_size, segment_ids=segment_ids,
                          manifest=train_m)
  _warn_short_documents(train_m, block_size, path, train_split)
  it = iter(make_train_dataset(windows, batch_size=batch_size, seed=seed,
                               shard_index=shard_index, shard_count=shard_count,
                               num_workers=num_workers, prefetch=prefetch))
  val, val_m, val_windows = [], None, 0
  if val_split:
    val_m = token_shards.read_manifest(path, val_split)
    token_shards.check_tokenizer(val_m, tokenizer, path, val_split)
    vw = PackedWindows(path, val_split, block_size=block_size, segment_ids=segment_ids,
                       manifest=val_m)
    val_windows = len(vw)
    val = eval_batches(vw, batch_size=eval_batch_size or batch_size,
                       max_batches=eval_max_batches)
  m = val_m or train_m
  first = windows.gather([0])['inputs'][0][:block_size]
  info = PreparedInfo(tokenizer=tokenizer, train_manifest=train_m, val_manifest=val_m,
                      train_windows=len(windows), val_windows=val_windows,
                      chars_per_token=m['num_chars'] / max(1, m['num_tokens']),
                      prompt=tokenizer.decode(first[:1]))
  return it, val, info


def _warn_short_documents(manifest: dict[str, Any], block_size: int, root: str,
                          split: str) -> None:
  longest = manifest['max_doc_tokens']
  if longest < block_size + 1:
    log.warning(
        '%s: block_size=%d is longer than every document (longest %d tokens of %d '
        'documents): each window packs several documents with EOS between them; if the '
        'documents were cut too finely, prepare again with a coarser --doc_split.',
        os.path.join(root, split), block_size, longest, manifest['num_docs'])
