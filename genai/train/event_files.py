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

from clu import metric_writers

from genai import paths


def open_writer(workdir: str) -> metric_writers.MetricWriter:
  if not paths.is_remote(workdir):
    return metric_writers.AsyncWriter(metric_writers.SummaryWriter(paths.join(workdir)))
  return _StagedWriter(workdir)


class _StagedWriter(metric_writers.MultiWriter):
  """Writes event files locally; `flush`/`close` upload the changed ones to `workdir`."""

  def __init__(self, workdir: str):
    self._staging = tempfile.mkdtemp(prefix='genai-events-')
    self._dst = paths.path(workdir)
    self._sizes: dict[str, int] = {}
    super().__init__([metric_writers.AsyncWriter(metric_writers.SummaryWriter(self._staging))])

  def flush(self) -> None:
    super().flush()
    self._upload()

  def close(self) -> None:
    super().close()
    self._upload()
    shutil.rmtree(self._staging, ignore_errors=True)

  def _upload(self) -> None:
    if not os.path.isdir(self._staging):
      return
    self._dst.mkdir(parents=True, exist_ok=True)
    for name in sorted(os.listdir(self._staging)):
      local = os.path.join(self._staging, name)
      size = os.path.getsize(local)
      if os.path.isfile(local) and self._sizes.get(name) != size:
        with open(local, 'rb') as f:
          (self._dst / name).write_bytes(f.read())
        self._sizes[name] = size
