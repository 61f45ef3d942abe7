"""Running data preparation's work units: in this process, in a pool of spawned processes,
or as an Apache Beam pipeline (genai/data/prepare_beam.py). Text (genai/data/prepare.py)
and images (genai/data/image_shards.py) share it."""
from __future__ import annotations

import multiprocessing
import os
from typing import Any, Callable, Sequence


def map_units(fn: Callable[[Any], Any], items: Sequence[Any], *, workers: int = 0,
              runner: str | None = None, beam_args: Sequence[str] = (),
              tmp_dir: str | None = None) -> list[Any]:
  """[fn(item) for item in items], in order: in this process (workers <= 1), in a pool of
  spawned processes (workers 0 = one per CPU), or as an Apache Beam pipeline on `runner`.
  `fn` must be a module-level function (it is pickled by reference)."""
  if runner:
    from genai.data import prepare_beam  # pylint: disable=import-outside-toplevel
    return prepare_beam.map_units(fn, items, runner=runner, beam_args=beam_args,
                                  tmp_dir=tmp_dir or '.')
  workers = min(int(workers if workers else os.cpu_count() or 1), len(items))
  if workers <= 1:
    return [fn(item) for item in items]
  # spawn, not fork: the caller may hold jax/TF threads, which fork does not survive.
  with multiprocessing.get_context('spawn').Pool(workers) as pool:
    return list(pool.imap(fn, items, chunksize=1))


def remove_unlisted(folder: str, keep: set[str], manifest: str) -> None:
  """Deletes shards (and temporary files) of an earlier preparation that the new manifest
  does not list."""
  for name in os.listdir(folder):
    if name not in keep and name != manifest and (
        name.endswith('.array_record') or '.tmp-' in name):
      os.remove(os.path.join(folder, name))
