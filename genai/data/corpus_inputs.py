"""The inputs of data preparation, cut into independent work units, and their documents.

Inputs are local text files and globs (one document per file, paragraph or line), JSONL
files (one document per line, from a text field) or a TFDS dataset (one document per
example, read by index through `tfds.data_source`). Large files are cut into byte ranges
at document (or line) boundaries, so work spreads over processes and no unit holds more
than `piece_bytes` of text; every unit is described by a small picklable dict, which is
what the local process pool and Apache Beam both distribute.

Bad inputs: an empty file is skipped and counted, a binary file (NUL bytes) too; text that
is not UTF-8, or a JSONL line that is not an object with the text field, is a one-line
ValueError naming the file and the fix.
"""
from __future__ import annotations

import glob
import os
import re
from typing import Any, Iterator

DOC_SPLITS = ('file', 'paragraph', 'line')
DEFAULT_PIECE_BYTES = 4 << 20
_SNIFF_BYTES = 64 << 10
_PARAGRAPH_RE = re.compile(r'\n[ \t\r\f\v]*\n')

Unit = dict[str, Any]


def resolve_files(patterns: list[str]) -> list[str]:
  """Sorted, de-duplicated files of paths/globs (comma-separated lists allowed)."""
  files: list[str] = []
  for pattern in (p.strip() for arg in patterns for p in arg.split(',')):
    if not pattern:
      continue
    matches = sorted(m for m in glob.glob(os.path.expanduser(pattern)) if os.path.isfile(m))
    if not matches:
      raise FileNotFoundError(f'input {pattern!r} matches no file; pass existing files or '
                              'globs (quote globs so the shell does not expand them).')
    files.extend(matches)
  return sorted(set(os.path.abspath(f) for f in files))


def sniff(path: str) -> str | None:
  """'empty' (no non-whitespace text), 'binary' (NUL bytes near the start) or None."""
  size = os.path.getsize(path)
  with open(path, 'rb') as f:
    head = f.read(_SNIFF_BYTES)
  if b'\0' in head:
    return 'binary'
  if size == 0 or (size <= len(head) and not head.strip()):
    return 'empty'
  return None


def file_units(files: list[str], *, kind: str, doc_split: str, piece_bytes: int,
               text_key: str = 'text', encoding_errors: str = 'strict',
               skipped: dict[str, list[str]]) -> list[Unit]:
  """Work units (byte ranges) of text or JSONL files; empty/binary files go to `skipped`."""
  if doc_split not in DOC_SPLITS:
    raise ValueError(f'--doc_split={doc_split!r} is not one of {DOC_SPLITS}.')
  units = []
  for path in files:
    problem = sniff(path)
    if problem:
      skipped.setdefault(f'{problem}_files', []).append(path)
      continue
    bounds = _piece_bounds(path, piece_bytes, 'line' if kind == 'jsonl' else doc_split)
    for i, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
      units.append({'kind': kind, 'path': path, 'start': start, 'end': end,
                    'first': i == 0, 'last': end == bounds[-1], 'doc_split': doc_split,
                    'text_key': text_key, 'encoding_errors': encoding_errors})
  return units


def _piece_bounds(path: str, piece_bytes: int, boundary: str) -> list[int]:
  """Byte offsets [0, ..., size] cutting the file about every `piece_bytes` at a point
  where a document (or, for 'file', a line followed by non-space text) starts: cutting
  there changes neither the documents nor, for BPE's pre-tokenizer, the ids."""
  size = os.path.getsize(path)
  bounds = [0]
  with open(path, 'rb') as f:
    while size - bounds[-1] > piece_bytes:
      cut = _next_boundary(f, bounds[-1] + piece_bytes, size, boundary)
      if cut >= size:
        break
      bounds.append(cut)
  bounds.append(size)
  return bounds


def _next_boundary(f, offset: int, size: int, boundary: str) -> int:
  pattern = {'line': re.compile(rb'\n'), 'paragraph': re.compile(rb'\n[ \t\r]*\n'),
             'file': re.compile(rb'\n(?=[^\s])')}[boundary]
  block, overlap = 1 << 20, 64
  pos = offset
  while pos < size:
    f.seek(pos)
    data = f.read(block + overlap)
    m = pattern.search(data)
    if m:
      return pos + m.end()
    pos += block
  return size


def tfds_units(name: str, split: str, data_dir: str | None, text_key: str, examples: int,
               per_unit: int, encoding_errors: str = 'strict') -> list[Unit]:
  return [{'kind': 'tfds', 'name': name, 'split': split, 'data_dir': data_dir,
           'text_key': text_key, 'start': s, 'stop': min(s + per_unit, examples),
           'encoding_errors': encoding_errors}
          for s in range(0, examples, per_unit)]


def tfds_source(name: str, split: str, data_dir: str | None):
  """`tfds.data_source(name, split)`, with one-line errors for a missing dataset/split."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir or None)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f'--tfds={name!r} is not a known TFDS dataset; check the name against '
                     'the TFDS catalog.') from e
  except (AssertionError, FileNotFoundError, ValueError) as e:
    raise FileNotFoundError(
        f'TFDS dataset {name!r} split {split!r} is not prepared as ArrayRecord in '
        f'{data_dir or "the default data_dir"} ({str(e).splitlines()[0][:200]}); build it '
        f'with `tfds build {name} --file_format=array_record` (needs network) or pass '
        '--tfds_data_dir.') from e


# ------------------------------------------------------------- a unit's documents.


def documents(unit: Unit) -> Iterator[tuple[str, bool, bool, str]]:
  """(text, starts a document, ends a document, key) of a unit, in order. `key` routes the
  document to a split: the file for one document per file (all its pieces go together),
  else None (route by the text itself: stable under any cutting into units, and equal
  documents land in the same split)."""
  if unit['kind'] == 'tfds':
    yield from _tfds_documents(unit)
    return
  text = _read_piece(unit)
  path = unit['path']
  if unit['kind'] == 'jsonl':
    yield from _jsonl_documents(unit, text)
  elif unit['doc_split'] == 'file':
    # One document per file: its pieces continue it; the key is the file.
    yield text, unit['first'], unit['last'], path
  else:
    pattern = _PARAGRAPH_RE if unit['doc_split'] == 'paragraph' else re.compile(r'\n')
    pos = 0
    for m in pattern.finditer(text):
      if text[pos:m.start()].strip():
        yield text[pos:m.start()], True, True, None
      pos = m.end()
    if text[pos:].strip():
      yield text[pos:].rstrip('\n'), True, True, None


def _read_piece(unit: Unit) -> str:
  with open(unit['path'], 'rb') as f:
    f.seek(unit['start'])
    data = f.read(unit['end'] - unit['start'])
  try:
    return data.decode('utf-8', errors=unit.get('encoding_errors', 'strict'))
  except UnicodeDecodeError as e:
    raise ValueError(
        f"{unit['path']}: byte {unit['start'] + e.start} is not UTF-8 ({e.reason}); convert "
        'the file to UTF-8 (e.g. iconv -f latin1 -t utf-8), or pass '
        '--encoding_errors=replace to read bad bytes as U+FFFD.') from None


def _jsonl_documents(unit: Unit, text: str) -> Iterator[tuple[str, bool, bool, str]]:
  import json  # pylint: disable=import-outside-toplevel
  key, offset = unit['text_key'], 0
  for line in text.split('\n'):
    here, offset = offset, offset + len(line) + 1
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f"{unit['path']}:{_line_number(unit, here)}: not a JSON object "
                       f'({e.msg}); fix the line, or prepare the file as plain text.') from None
    value = row.get(key) if isinstance(row, dict) else None
    if not isinstance(value, str):
      has = sorted(row) if isinstance(row, dict) else type(row).__name__
      raise ValueError(f"{unit['path']}:{_line_number(unit, here)}: no text field {key!r} "
                       f'(has {has}); pass --text_key with the field that holds the text.')
    if value.strip():
      yield value, True, True, None


def _line_number(unit: Unit, char_offset: int) -> int:
  """1-based line of a character offset inside a unit (only computed for an error)."""
  with open(unit['path'], 'rb') as f:
    before = f.read(unit['start']).count(b'\n')
    piece = f.read(unit['end'] - unit['start']).decode('utf-8', 'replace')
  return before + piece[:char_offset].count('\n') + 1


def _tfds_documents(unit: Unit) -> Iterator[tuple[str, bool, bool, str]]:
  src = tfds_source(unit['name'], unit['split'], unit['data_dir'])
  key = unit['text_key']
  for i in range(unit['start'], unit['stop']):
    ex = src[i]  # one by one: __getitems__ fails under tfds.testing.mock_data
    if key not in ex:
      raise ValueError(f"TFDS dataset {unit['name']!r} has no feature {key!r} (has "
                       f'{sorted(ex)}); pass --text_key with its text feature.')
    value = ex[key]
    if isinstance(value, bytes):
      try:
        value = value.decode('utf-8', errors=unit.get('encoding_errors', 'strict'))
      except UnicodeDecodeError as e:
        raise ValueError(f"TFDS dataset {unit['name']!r} example {i}: {key!r} is not UTF-8 "
                         f'({e.reason}); pass --encoding_errors=replace.') from None
    if value.strip():
      yield value, True, True, None
