"""The one path layer: every path a user gives goes through etils `epath`.

Workdirs, data files and folders, tokenizer files, pretrained weights and the outputs of
export and sampling are `epath.Path`s, so `gs://bucket/run` (and `s3://`, and whatever
filesystem epath reaches: TensorFlow's `tf.io.gfile`, or fsspec's gcsfs/s3fs with
`EPATH_USE_TF=false`) works wherever a local folder does; orbax and TFDS use the same layer.
A local path is made absolute (`os.path.abspath` would turn `gs://b/x` into `<cwd>/gs:/b/x`).

Libraries that only take a local file (sentencepiece, safetensors, TFLite's converter)
get one through `local_copy` (a download into a temporary folder, for remote paths only);
trees written locally by such libraries (a SavedModel) go up with `upload_tree`.
"""
from __future__ import annotations

import contextlib
import functools
import glob
import importlib.util
import json
import os
import shutil
import tempfile
from typing import Any, Iterator, Union

from etils import epath

PathLike = Union[str, os.PathLike]


def is_remote(p: PathLike) -> bool:
  """Whether `p` names a remote filesystem (`scheme://...`), not a local path."""
  return '://' in os.fspath(p)


def path(p: PathLike) -> epath.Path:
  """`p` as an `epath.Path`: a URI as it is, a local path made absolute."""
  s = os.fspath(p)
  if not is_remote(s):
    return epath.Path(os.path.abspath(os.path.expanduser(s)))
  if s.startswith('gs://'):
    _check_gcs_backend()
  return epath.Path(s)


@functools.lru_cache(maxsize=1)
def _check_gcs_backend() -> None:
  """With EPATH_USE_TF=false epath reaches gs:// through gcsfs: say which extra brings it."""
  if (os.environ.get('EPATH_USE_TF', '').lower() in ('false', 'no', 'f', '0')
      and importlib.util.find_spec('gcsfs') is None):
    # genai/_extras.py's line (this module imports nothing from genai).
    raise ImportError("a gs:// path with EPATH_USE_TF=false needs the gcs extra: "
                      "pip install 'genai[gcs]' (missing: gcsfs)")


def join(p: PathLike, *names: str) -> str:
  """`p / names...` as a string, for APIs that take strings (orbax, clu, logs)."""
  return os.fspath(path(p).joinpath(*names))


def read_json(p: PathLike) -> Any:
  return json.loads(path(p).read_text())


def write_json(p: PathLike, obj: Any, **kwargs: Any) -> None:
  """Writes `obj` as JSON to `p`, creating the parent folder."""
  p = path(p)
  p.parent.mkdir(parents=True, exist_ok=True)
  p.write_text(json.dumps(obj, **kwargs))


def glob_files(pattern: PathLike) -> list[str]:
  """The files a path or glob (`*`, `?`, `[...]`) names, sorted; local or remote."""
  s = os.fspath(pattern)
  if not is_remote(s):
    return sorted(m for m in glob.glob(os.path.expanduser(s)) if os.path.isfile(m))
  if not any(c in s for c in '*?['):
    return [s] if path(s).is_file() else []
  # The folder before the first wildcard is the root; the rest is the glob.
  scheme, rest = s.split('://', 1)
  parts = rest.split('/')
  i = next(i for i, part in enumerate(parts) if any(c in part for c in '*?['))
  base = path(f'{scheme}://' + '/'.join(parts[:i]))
  if not base.is_dir():
    return []
  return sorted(os.fspath(m) for m in base.glob('/'.join(parts[i:])) if m.is_file())


def walk(p: PathLike) -> Iterator[tuple[epath.Path, list[str], list[str]]]:
  """(folder, subfolder names, file names) for `p` and every folder below it, like
  `os.walk`, on any filesystem (epath's own `walk` drops the `gs://` of what it yields)."""
  stack = [path(p)]
  while stack:
    d = stack.pop()
    dirs, files = [], []
    for child in sorted(d.iterdir()):
      (dirs if child.is_dir() else files).append(child.name)
    yield d, dirs, files
    stack.extend(d / name for name in reversed(dirs))


def files_under(p: PathLike) -> list[epath.Path]:
  """Every file below folder `p`, recursively, sorted (epath's `rglob` refuses remote
  trees; this walks them)."""
  return sorted(root / name for root, _, files in walk(p) for name in files)


def tree_bytes(p: PathLike) -> int:
  """The total size of the files under folder `p`."""
  total = 0
  for root, _, files in walk(p):
    for name in files:
      total += (root / name).stat().length
  return total


@contextlib.contextmanager
def local_copy(p: PathLike) -> Iterator[str]:
  """A local filesystem path holding `p`'s contents (a file or a folder): `p` itself when
  it is local, else a temporary download, removed afterwards."""
  if not is_remote(p):
    yield os.fspath(path(p))
    return
  src = path(p)
  with tempfile.TemporaryDirectory(prefix='genai-') as tmp:
    dst = os.path.join(tmp, src.name or 'data')
    if src.is_dir():
      for root, _, files in walk(src):
        rel = os.fspath(root)[len(os.fspath(src)):].lstrip('/')
        os.makedirs(os.path.join(dst, rel), exist_ok=True)
        for name in files:
          with (root / name).open('rb') as fin, open(os.path.join(dst, rel, name), 'wb') as fout:
            shutil.copyfileobj(fin, fout)
    else:
      with src.open('rb') as fin, open(dst, 'wb') as fout:
        shutil.copyfileobj(fin, fout)
    yield dst


def upload_tree(local_dir: str, dst: PathLike) -> None:
  """Copies the local folder `local_dir` to `dst` (any epath filesystem), file by file."""
  dst = path(dst)
  for root, _, files in os.walk(local_dir):
    rel = os.path.relpath(root, local_dir)
    target = dst if rel == '.' else dst / rel
    target.mkdir(parents=True, exist_ok=True)
    for name in files:
      with open(os.path.join(root, name), 'rb') as fin, (target / name).open('wb') as fout:
        shutil.copyfileobj(fin, fout)
