"""A versioned model registry in a directory: which LM workdir is served, and its history.

ROOT/registry.json holds
  {"current": "v3",
   "versions": [{"version": "v1", "workdir": ..., "step": 1200, "created": 1795.0e6,
                 "status": "promoted" | "rejected", "parent": null | "v0",
                 "metrics": {...}, "data": {...}, "reasons": [...],
                 "promotions": [times it became current]}, ...]}
ROOT is any path of etils `epath`: a local folder, or a bucket (gs://..., s3://...) that
every replica and the retrain job reach, so servers on several machines follow one registry.
Every change is written atomically, so a reader (the server's hot reload) never sees half a
file and a crash never loses the registry: locally a temporary file, fsync, os.replace,
under an exclusive lock (ROOT/.registry-lock) so that two writers do not lose each other's
update; in a bucket one object write (an object is replaced whole; run one writer at a
time there). `current` is what `python -m genai.serve --registry ROOT` serves (each replica
polls it, --reload_interval); `rollback` makes the version that was current before it
current again.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from typing import Any, Iterator

from etils import epath

from genai import errors
from genai.train import workdir as workdir_lib

FILE = 'registry.json'


def _is_url(path: str) -> bool:
  return '://' in str(path)


def _absolute(path: str) -> str:
  """A local path made absolute; a bucket URL as it is."""
  return str(path) if _is_url(path) else os.path.abspath(path)


class Registry:

  def __init__(self, root: str):
    self.root = _absolute(root)
    self._root = epath.Path(self.root)
    self._path = self._root / FILE
    self.path = str(self._path)

  # ----------------------------------------------------------------------- reading
  def exists(self) -> bool:
    return self._path.exists()

  def _read(self) -> dict[str, Any]:
    if not self.exists():
      raise FileNotFoundError(f'{self.path} not found: create the registry with '
                              f'`python -m experiments.retrain init --root {self.root} '
                              '--workdir W --heldout FILE`.')
    return json.loads(self._path.read_text())

  def versions(self) -> list[dict[str, Any]]:
    return self._read()['versions']

  def get(self, version: str) -> dict[str, Any]:
    for v in self.versions():
      if v['version'] == version:
        return v
    raise errors.MissingError(f'version {version!r} is not in {self.path}',
                              'python -m experiments.retrain status --root ROOT lists them')

  def current(self) -> dict[str, Any]:
    return self.get(self._read()['current'])

  def served_version(self) -> str:
    """What a server reports: 'v3' (the registry version of the current workdir)."""
    return self._read()['current']

  # ----------------------------------------------------------------------- writing
  @contextlib.contextmanager
  def _locked(self) -> Iterator[None]:
    """Holds the registry's write lock (local roots; a bucket has none)."""
    if _is_url(self.root):
      yield
      return
    os.makedirs(self.root, exist_ok=True)
    with open(os.path.join(self.root, '.registry-lock'), 'a') as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)
      try:
        yield
      finally:
        fcntl.flock(lock, fcntl.LOCK_UN)

  def _write(self, reg: dict[str, Any]) -> None:
    text = json.dumps(reg, indent=1)
    if _is_url(self.root):
      self._root.mkdir(parents=True, exist_ok=True)
      self._path.write_text(text)
      return
    os.makedirs(self.root, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=self.root, prefix='.registry.', suffix='.json')
    with os.fdopen(fd, 'w') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, self.path)

  def init(self, workdir: str, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """Registers `workdir` as v1 and makes it current."""
    with self._locked():
      if self.exists():
        raise FileExistsError(f'{self.path} already exists; use `run`, or another --root.')
      entry = self._entry('v1', workdir, parent=None, metrics=metrics or {}, data={},
                          status='promoted', reasons=[])
      entry['promotions'] = [entry['created']]
      self._write({'current': 'v1', 'versions': [entry]})
    return entry

  def add(self, workdir: str, *, parent: str, metrics: dict[str, Any], data: dict[str, Any],
          promote: bool, reasons: list[str]) -> dict[str, Any]:
    """Records a candidate; makes it current when `promote`."""
    with self._locked():
      reg = self._read()
      version = f'v{len(reg["versions"]) + 1}'
      entry = self._entry(version, workdir, parent=parent, metrics=metrics, data=data,
                          status='promoted' if promote else 'rejected', reasons=reasons)
      if promote:
        entry['promotions'] = [entry['created']]
        reg['current'] = version
      reg['versions'].append(entry)
      self._write(reg)
    return entry

  def rollback(self) -> dict[str, Any]:
    """Makes the version that was current before the current one current again."""
    with self._locked():
      reg = self._read()
      events = sorted((t, v['version']) for v in reg['versions']
                      for t in v.get('promotions', []))
      previous = [name for _, name in events if name != reg['current']]
      if not previous:
        raise ValueError(f'{reg["current"]} is the only version ever served; nothing to roll '
                         'back to.')
      target = previous[-1]
      for v in reg['versions']:
        if v['version'] == target:
          v.setdefault('promotions', []).append(time.time())
      reg['current'] = target
      self._write(reg)
    return self.get(target)

  @staticmethod
  def _entry(version, workdir, *, parent, metrics, data, status, reasons) -> dict[str, Any]:
    workdir = _absolute(workdir)
    return {'version': version, 'workdir': workdir, 'step': workdir_lib.newest_step(workdir),
            'created': time.time(), 'status': status, 'parent': parent, 'metrics': metrics,
            'data': data, 'reasons': reasons}
