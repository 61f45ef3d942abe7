"""Read and write `.safetensors` files with numpy only (no torch, no safetensors package).

The format: an 8-byte little-endian header length N, N bytes of JSON
({name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}), then
the raw little-endian tensor bytes. bfloat16 is read through ml_dtypes and returned as
float32. A file cut short is caught with the name of the first incomplete tensor.
"""
from __future__ import annotations

import json
import struct

import ml_dtypes
import numpy as np

from genai import paths

_DTYPES = {'F64': np.float64, 'F32': np.float32, 'F16': np.float16,
           'BF16': ml_dtypes.bfloat16, 'I64': np.int64, 'I32': np.int32, 'I16': np.int16,
           'I8': np.int8, 'U8': np.uint8, 'BOOL': np.bool_}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


def _open(path: str):
  if not paths.path(path).exists():
    raise FileNotFoundError(f'{path} does not exist.')
  return paths.path(path).open('rb')


def _read_header(f, path: str) -> dict:
  """The JSON header of the open file `f`; the file is left at the data section."""
  size = f.seek(0, 2)
  f.seek(0)
  raw = f.read(8)
  if len(raw) < 8:
    raise ValueError(f'{path} is not a safetensors file (only {size} bytes).')
  (n,) = struct.unpack('<Q', raw)
  if n > size - 8:
    raise ValueError(f'{path} is not a safetensors file, or its header is truncated '
                     f'(header of {n} bytes in a {size}-byte file).')
  try:
    return json.loads(f.read(n))
  except ValueError as e:
    raise ValueError(f'{path}: the safetensors header is not valid JSON ({e}).') from None


def read_metadata(path: str) -> dict[str, str]:
  """The header's "__metadata__" strings, without reading the tensors."""
  with _open(path) as f:
    return dict(_read_header(f, path).get('__metadata__') or {})


def read(path: str) -> dict[str, np.ndarray]:
  """{name: array} of one .safetensors file; floats of 16 bits come back as float32."""
  with _open(path) as f:
    header = _read_header(f, path)
    data = f.read()
  out = {}
  for name, info in header.items():
    if name == '__metadata__':
      continue
    if info['dtype'] not in _DTYPES:
      raise ValueError(f'{path}: tensor {name!r} has dtype {info["dtype"]}, which genai '
                       f'cannot read (known: {sorted(_DTYPES)}).')
    begin, end = info['data_offsets']
    if end > len(data):
      raise ValueError(f'{path} is truncated: tensor {name!r} needs bytes {begin}..{end} of '
                       f'the data section but the file holds {len(data)}; download it again.')
    arr = np.frombuffer(data[begin:end], dtype=_DTYPES[info['dtype']]).reshape(info['shape'])
    if arr.dtype in (np.float16, ml_dtypes.bfloat16):
      arr = arr.astype(np.float32)
    out[name] = arr
  return out


def write(path: str, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None
          ) -> None:
  """Writes {name: array} atomically (temp file + rename); `metadata` strings go in the
  header (transformers expects {"format": "pt"})."""
  header: dict = {'__metadata__': dict(metadata or {'format': 'pt'})}
  offset, blobs = 0, []
  for name in sorted(tensors):
    arr = np.ascontiguousarray(tensors[name])
    if arr.dtype not in _NAMES:
      raise ValueError(f'tensor {name!r}: dtype {arr.dtype} cannot be written.')
    blob = arr.astype(arr.dtype.newbyteorder('<'), copy=False).tobytes()
    header[name] = {'dtype': _NAMES[arr.dtype], 'shape': list(arr.shape),
                    'data_offsets': [offset, offset + len(blob)]}
    offset += len(blob)
    blobs.append(blob)
  head = json.dumps(header, separators=(',', ':')).encode()
  head += b' ' * (-len(head) % 8)  # 8-byte alignment of the data section
  tmp = paths.path(path + '.tmp')
  with tmp.open('wb') as f:
    f.write(struct.pack('<Q', len(head)))
    f.write(head)
    for blob in blobs:
      f.write(blob)
  tmp.replace(paths.path(path))
