"""Loading raw training text from the embedded corpus, local files or TFDS."""

from __future__ import annotations

from typing import Any

from genai import paths
from genai import errors

VALID_SOURCES = ('embedded', 'files', 'tfds')


def load_text(data_cfg: Any) -> str:
  """Returns the whole corpus named by `data_cfg` as one string.

  `data_cfg.source` picks the loader: 'embedded' (English prose shipped with
  Python), 'files' (`data_cfg.path`: a path, glob or comma-separated list) or
  'tfds' (`data_cfg.tfds_name` and friends).
  """
  source = getattr(data_cfg, 'source', 'embedded')
  if source == 'embedded':
    text = embedded_text()
  elif source == 'files':
    text = _load_files(getattr(data_cfg, 'path', None))
  elif source == 'tfds':
    text = _load_tfds(
        name=getattr(data_cfg, 'tfds_name', None),
        split=getattr(data_cfg, 'tfds_split', None) or 'train',
        text_key=getattr(data_cfg, 'tfds_text_key', None) or 'text',
        max_examples=int(getattr(data_cfg, 'max_examples', 0) or 0),
        data_dir=getattr(data_cfg, 'tfds_data_dir', None) or None,
    )
  else:
    raise ValueError(
        f'data.source={source!r} is not a known text source; use one of '
        f'{", ".join(repr(s) for s in VALID_SOURCES)}.')
  if not text:
    raise errors.DataError(
        f'data.source={source!r} produced an empty corpus (0 characters)',
        'point it at non-empty text (check data.path / data.tfds_name / '
        'data.tfds_text_key)')
  return text


def describe(data_cfg: Any) -> str:
  """Where the corpus of `data_cfg` comes from, for error messages."""
  source = getattr(data_cfg, 'source', 'embedded')
  if source == 'files':
    return f'data.path={getattr(data_cfg, "path", None)!r}'
  if source == 'tfds':
    return f'TFDS {getattr(data_cfg, "tfds_name", None)!r}'
  return f'data.source={source!r}'


def embedded_text() -> str:
  """English prose from Python's own docs (~465k chars); no network or files."""
  # pydoc_data ships with every CPython install, so this corpus is always
  # available and identical for a given Python version.
  from pydoc_data import topics  # pylint: disable=import-outside-toplevel
  return '\n\n'.join(topics.topics[k] for k in sorted(topics.topics))


def _resolve_paths(path: str) -> list[str]:
  """Expands a path, glob or comma-separated list of them to sorted files."""
  files: list[str] = []
  for part in (p.strip() for p in path.split(',')):
    if not part:
      continue
    matches = paths.glob_files(part)
    if not matches:
      raise ValueError(
          f'data.path entry {part!r} matches no file; pass an existing file '
          "or glob, or use data.source='embedded'.")
    files.extend(matches)
  # Sorted and de-duplicated so overlapping globs don't repeat a file and the
  # corpus doesn't depend on the order the user listed things in.
  return sorted(set(files))


def _load_files(path: str | None) -> str:
  if not path:
    raise ValueError(
        "data.source='files' needs data.path (a file, glob or comma-separated "
        "list); set data.path or use data.source='embedded'.")
  files = _resolve_paths(path)
  text = ''.join(read_text_file(f) for f in files)
  if not text:
    named = (f'{files[0]} is empty (0 bytes)' if len(files) == 1 else
             f'all {len(files)} files it matches are empty')
    raise errors.DataError(f'data.path={path!r} holds no text: {named}',
                           'point data.path at non-empty UTF-8 text')
  return text


def read_text_file(path: str) -> str:
  """A UTF-8 text file's contents; a file that is not UTF-8 text (a binary file, another
  encoding) raises DataError naming the file, the byte, its offset and line, and the fix."""
  data = paths.path(path).read_bytes()
  try:
    return data.decode('utf-8')
  except UnicodeDecodeError as e:
    line = data.count(b'\n', 0, e.start) + 1
    column = e.start - (data.rfind(b'\n', 0, e.start) + 1) + 1
    nul = data.find(b'\x00', 0, 1 << 16)
    what = (f'{path} looks like a binary file, not text (a NUL byte at offset {nul}; '
            f'byte 0x{data[e.start]:02x} at offset {e.start}, line {line}, column {column} is '
            'not UTF-8)') if nul >= 0 else (
            f'{path} is not UTF-8 text: byte 0x{data[e.start]:02x} at offset {e.start} '
            f'(line {line}, column {column}) cannot be decoded ({e.reason})')
    fix = ('point data.path at text files only (check the glob)' if nul >= 0 else
           f'convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8 {path} > fixed.txt), or '
           'drop it from data.path')
    raise errors.DataError(what, fix) from None


def _load_tfds(*, name: str | None, split: str, text_key: str,
               max_examples: int, data_dir: str | None) -> str:
  """Reads a text feature of a TFDS dataset through the TFDS API."""
  if not name:
    raise ValueError(
        "data.source='tfds' needs data.tfds_name (e.g. 'tiny_shakespeare' or "
        "'lm1b'); set it or use data.source='embedded'.")
  # Imported lazily: tensorflow_datasets pulls in TensorFlow (~5 s).
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(
        f'data.tfds_name={name!r} is not a known TFDS dataset; check the name '
        'against tfds.list_builders() (or the TFDS catalog), and if it is a '
        'community/custom dataset make sure its module is imported (then '
        'download it with `tfds build NAME`, which needs network).') from e
  except AssertionError as e:  # e.g. 'name:9.9.9', a version that is unknown.
    raise ValueError(
        f'data.tfds_name={name!r} cannot be built ({e}); fix or drop the '
        "':version' / '/config' suffix.") from e

  # tfds.load(download=True) would try the network when data is missing; we
  # read through the builder instead so a missing dataset is a clear error.
  try:
    ds = builder.as_dataset(split=split, shuffle_files=False)
  except AssertionError as e:  # TFDS signals "not prepared" this way.
    raise ValueError(
        f'TFDS dataset {name!r} is not prepared in data_dir='
        f"'{builder.data_dir}'; prepare it first with `tfds build {name}` "
        '(needs network) or tfds.builder(name).download_and_prepare(), set '
        'data.tfds_data_dir to a folder that holds it prepared, or use '
        "data.source='embedded'.") from e
  if text_key not in builder.info.features:
    raise ValueError(
        f'TFDS dataset {name!r} has no feature {text_key!r}; set '
        f'data.tfds_text_key to one of {sorted(builder.info.features.keys())}.')
  if max_examples > 0:
    # Under tfds.testing.mock_data split slicing is ignored, so limit here.
    ds = ds.take(max_examples)

  pieces = []
  for ex in tfds.as_numpy(ds):
    value = ex[text_key]
    if isinstance(value, bytes):
      value = value.decode('utf-8')
    elif not isinstance(value, str):
      raise ValueError(
          f'TFDS dataset {name!r} feature {text_key!r} is not text (got '
          f'{type(value).__name__}); set data.tfds_text_key to a text feature.')
    pieces.append(value)
  return '\n'.join(pieces)
