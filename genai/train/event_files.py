"""TensorBoard event files of a run, written into its workdir on any filesystem.

A local workdir gets clu's `SummaryWriter` directly. A remote one (`gs://...`) gets the same
writer on a local staging folder whose event files are copied up through the path layer
(`genai.paths`) at every `flush` (the loop flushes at each checkpoint) and at `close`: one
upload per checkpoint instead of one per scalar, and no dependence on which filesystems
TensorFlow's own `gfile` was built with.
"""
from __future__ import annotations

import os
import shutil
import tempfile

from genai import paths

# clu's metric writers import TensorFlow (2 s and more): only a run that writes events pays it,
# not the commands that merely import the loop (sampling, export, serving).


def open_writer(workdir: str):
  """A clu MetricWriter of TensorBoard events into `workdir` (local or remote)."""
  from clu import metric_writers  # pylint: disable=import-outside-toplevel
  if not paths.is_remote(workdir):
    return metric_writers.AsyncWriter(metric_writers.SummaryWriter(paths.join(workdir)))
  return _StagedWriter(workdir, metric_writers)


def null_writer():
  """A writer that writes nothing (processes other than 0), without importing clu."""
  return _NullWriter()


class _NullWriter:

  def __getattr__(self, name):  # write_scalars, write_images, flush, close, ...
    return lambda *args, **kwargs: None


class _StagedWriter:
  """Writes event files locally; `flush`/`close` upload the changed ones to `workdir`."""

  def __init__(self, workdir: str, metric_writers):
    self._staging = tempfile.mkdtemp(prefix='genai-events-')
    self._dst = paths.path(workdir)
    self._sizes: dict[str, int] = {}
    self._writer = metric_writers.AsyncWriter(metric_writers.SummaryWriter(self._staging))

  def __getattr__(self, name):  # write_scalars, write_images, write_hparams, ...
    return getattr(self._writer, name)

  def flush(self) -> None:
    self._writer.flush()
    self._upload()

  def close(self) -> None:
    self._writer.close()
    self._upload()
    shutil.rmtree(self._staging, ignore_errors=True)

  def _upload(self) -> None:
    if not os.path.isdir(self._staging):
      return
    self._dst.mkdir(parents=True, exist_ok=True)
    for name in sorted(os.listdir(self._staging)):
      local = os.path.join(self._staging, name)
      size = os.path.getsize(local) if os.path.isfile(local) else None
      if size is not None and self._sizes.get(name) != size:
        with open(local, 'rb') as f:
          (self._dst / name).write_bytes(f.read())
        self._sizes[name] = size
