"""Prepared token data on disk: ArrayRecord shards of token ids, and their manifest.

A prepared corpus is a folder:

  ROOT/tokenizer/tokenizer.json (+ model file)   the tokenizer the ids come from
  ROOT/<split>/tokens-00000.array_record ...     one shard per work unit of preparation
  ROOT/<split>/manifest.json                     written last: the split is complete

The documents of a split, each followed by the separator ids (the tokenizer's EOS, or the
ids of a separator text for tokenizers without one), form one token stream. Every record
of a shard holds exactly `chunk_tokens` consecutive ids of that stream (the last record of
a shard may hold fewer), so where a window of the stream lies is arithmetic on the
manifest's per-shard counts: readers keep no per-document index, and memory stays flat in
the corpus size. A record also lists where documents start inside it, which is what
packing needs to mask the loss across document boundaries.

Shards and the manifest are written under temporary names and renamed when complete, so a
preparation that dies half-way leaves nothing a reader takes for a complete split.
"""
from __future__ import annotations

import json
import os
import struct
import zlib
from typing import Any

import numpy as np

FORMAT = 'genai.tokens/1'
MANIFEST = 'manifest.json'
TOKENIZER_DIR = 'tokenizer'
SHARD_PATTERN = 'tokens-{:05d}.array_record'
# One record per chunk: grain's random access reads one record without its neighbours.
# zstd level 1: as small as the default level 3 on token ids (8.0 MB against 7.9 MB for
# 10 MB of text) and written 1.7x faster.
WRITER_OPTIONS = 'group_size:1,zstd:1'
# The readers' record index in memory (8 bytes a record: 4 MB for a 1 GB char corpus in
# records of 2048 tokens). 'offloaded' keeps it on disk but made a read of a 10,000-record
# shard 25x slower (0.83 ms against 0.03 ms here).
READER_OPTIONS = {'index_storage_option': 'in_memory'}
DEFAULT_CHUNK_TOKENS = 2048

_HEADER = struct.Struct('<4sIII')  # magic, number of tokens, number of doc starts, crc32
_MAGIC = b'GTK1'


def token_dtype(vocab_size: int) -> np.dtype:
  return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def encode_record(tokens: np.ndarray, doc_starts: np.ndarray, dtype: np.dtype) -> bytes:
  """One record: header, uint32 document starts (positions in this record), token ids."""
  payload = (np.asarray(doc_starts, '<u4').tobytes()
             + np.asarray(tokens).astype(np.dtype(dtype).newbyteorder('<')).tobytes())
  return _HEADER.pack(_MAGIC, len(tokens), len(doc_starts), zlib.crc32(payload)) + payload


def decode_record(data: bytes, dtype: np.dtype, where: str) -> tuple[np.ndarray, np.ndarray]:
  """(tokens, doc_starts) of a record; a damaged one is a ValueError naming `where`."""
  try:
    magic, n_tokens, n_starts, crc = _HEADER.unpack_from(data)
  except struct.error:
    magic = None
  dtype = np.dtype(dtype).newbyteorder('<')
  body = memoryview(data)[_HEADER.size:]
  if (magic != _MAGIC or len(body) != 4 * n_starts + dtype.itemsize * n_tokens
      or zlib.crc32(body) != crc):
    raise ValueError(f'{where} is corrupt (a record fails its checksum); prepare the data '
                     'again with python -m genai.data.prepare.')
  starts = np.frombuffer(body, '<u4', n_starts)
  tokens = np.frombuffer(body, dtype, n_tokens, offset=4 * n_starts)
  return tokens, starts


class ShardWriter:
  """Writes one shard: a stream of document pieces cut into records of `chunk_tokens`.

  `add(tokens, starts_document)` appends a piece of a document (a new document when
  `starts_document`); `add_separator()` ends one. The shard appears under its final name
  only on `close()`; `abort()` (or an exception inside `with`) deletes the partial file.
  """

  def __init__(self, path: str, *, chunk_tokens: int, dtype: np.dtype):
    from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel
    if chunk_tokens < 1:
      raise ValueError(f'chunk_tokens={chunk_tokens} must be >= 1.')
    self.path, self.chunk_tokens, self.dtype = path, int(chunk_tokens), np.dtype(dtype)
    self._tmp = f'{path}.tmp-{os.getpid()}'
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    self._writer = array_record_module.ArrayRecordWriter(self._tmp, WRITER_OPTIONS)
    self._pieces: list[np.ndarray] = []
    self._starts: list[int] = []   # positions (in the buffered tokens) of document starts
    self._buffered = 0
    self.num_tokens = self.num_records = self.num_docs = 0
    self.max_doc_tokens = 0
    self._doc_tokens = 0
    self._separator = np.zeros(0, np.int64)

  def set_separator(self, ids) -> None:
    self._separator = np.asarray(ids, np.int64)

  def add(self, tokens: np.ndarray, starts_document: bool) -> None:
    tokens = np.asarray(tokens)
    if starts_document:
      self._starts.append(self._buffered)
      self.num_docs += 1
      self._doc_tokens = 0
    self._doc_tokens += len(tokens)
    self.max_doc_tokens = max(self.max_doc_tokens, self._doc_tokens)
    self._append(tokens)

  def add_separator(self) -> None:
    self._append(self._separator)

  def _append(self, tokens: np.ndarray) -> None:
    if len(tokens):
      self._pieces.append(tokens)
      self._buffered += len(tokens)
      self.num_tokens += len(tokens)
    while self._buffered >= self.chunk_tokens:
      self._flush(self.chunk_tokens)

  def _flush(self, n: int) -> None:
    buf = np.concatenate(self._pieces) if len(self._pieces) > 1 else self._pieces[0]
    starts = [s for s in self._starts if s < n]
    self._writer.write(encode_record(buf[:n], np.asarray(starts, np.int64), self.dtype))
    self.num_records += 1
    rest = buf[n:]
    self._pieces = [rest] if len(rest) else []
    self._starts = [s - n for s in self._starts if s >= n]
    self._buffered = len(rest)

  def close(self) -> dict[str, Any] | None:
    """Writes the last record and renames the shard into place; its manifest entry, or
    None (and no file) when the shard holds no tokens."""
    if self._buffered:
      self._flush(self._buffered)
    self._writer.close()
    if not self.num_tokens:
      os.remove(self._tmp)
      return None
    os.replace(self._tmp, self.path)
    return {'file': os.path.basename(self.path), 'num_records': self.num_records,
            'num_tokens': self.num_tokens, 'num_docs': self.num_docs,
            'bytes': os.path.getsize(self.path)}

  def abort(self) -> None:
    try:
      self._writer.close()
    finally:
      if os.path.exists(self._tmp):
        os.remove(self._tmp)

  def __enter__(self):
    return self

  def __exit__(self, exc_type, *_):
    if exc_type is not None:
      self.abort()


def write_json_atomic(path: str, payload: dict[str, Any]) -> None:
  tmp = f'{path}.tmp-{os.getpid()}'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(payload, f, indent=1, ensure_ascii=False)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def split_dir(root: str, split: str) -> str:
  return os.path.join(root, split)


def read_manifest(root: str, split: str, kind: str = FORMAT) -> dict[str, Any]:
  """The manifest of `split` under `root`; a one-line error when it is missing or foreign."""
  path = os.path.join(split_dir(root, split), MANIFEST)
  if not os.path.isfile(path):
    have = sorted(d for d in (os.listdir(root) if os.path.isdir(root) else [])
                  if os.path.isfile(os.path.join(root, d, MANIFEST)))
    hint = (f'its complete splits are {have}' if have else
            'it holds no complete split (preparation not run, or not finished)')
    raise FileNotFoundError(f'{path} does not exist: {hint}; run python -m genai.data.prepare '
                            f'--out {root} ... --split {split} to prepare it.')
  with open(path, encoding='utf-8') as f:
    try:
      manifest = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path} is not valid JSON ({e}); prepare the data again.') from e
  if manifest.get('format') != kind:
    raise ValueError(f'{path} has format {manifest.get("format")!r}, not {kind!r}; point at '
                     'a folder written by python -m genai.data.prepare'
                     f'{" --images" if kind != FORMAT else ""}.')
  return manifest


def shard_paths(root: str, split: str, manifest: dict[str, Any]) -> list[str]:
  """The shard files of a manifest, each checked to exist with the size it was written at."""
  paths = []
  for shard in manifest['shards']:
    path = os.path.join(split_dir(root, split), shard['file'])
    if not os.path.isfile(path):
      raise FileNotFoundError(f'{path} is missing (listed in {split}/{MANIFEST}); restore it '
                              'or prepare the data again.')
    size = os.path.getsize(path)
    if size != shard['bytes']:
      raise ValueError(f'{path} is {size} bytes but the manifest says {shard["bytes"]}: the '
                       'shard is truncated or corrupt; prepare the data again.')
    paths.append(path)
  return paths


def load_prepared_tokenizer(root: str):
  """The tokenizer a prepared corpus was tokenized with (ROOT/tokenizer)."""
  from genai.data import tokenizers  # pylint: disable=import-outside-toplevel
  return tokenizers.load_tokenizer(os.path.join(root, TOKENIZER_DIR))


def check_tokenizer(manifest: dict[str, Any], tokenizer, root: str, split: str) -> None:
  """Refuses a tokenizer other than the one the manifest's ids come from."""
  want, have = manifest['tokenizer']['identity'], tokenizer.identity()
  if have != want:
    raise ValueError(
        f'{os.path.join(root, split, MANIFEST)} was tokenized with {_short(want)} but '
        f'training uses {_short(have)}; train with the prepared tokenizer '
        f'({os.path.join(root, TOKENIZER_DIR)}) or prepare the data again with this one.')


def _short(identity: str) -> str:
  name, _, digest = identity.partition(':')
  return f'{name} tokenizer {digest[:12]}'
