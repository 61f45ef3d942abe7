"""TensorBoard event files of a run, written into its workdir on any filesystem, without
TensorFlow.

`EventWriter` writes the event protos itself (TensorBoard's record framing and protos, both
pure Python), in the layout TensorFlow's summary ops use: scalars, texts and images as
plugin tensors, hparams through the hparams plugin. The loop used clu's `SummaryWriter`,
which imports TensorFlow: 2-3 s of every training command's start-up on a 2-core CPU, for
a few hundred bytes of events.

A remote workdir (`gs://...`) gets the same writer on a local staging folder whose event
files are copied up through the path layer (`genai.paths`) at every `flush` (the loop
flushes at each checkpoint) and at `close`: one upload per checkpoint instead of one per
scalar.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from typing import Any, Mapping

import numpy as np

from genai import paths


def open_writer(workdir: str):
  """A writer of TensorBoard events into `workdir` (local or remote): write_scalars,
  write_texts, write_images, write_hparams, flush, close (clu's MetricWriter calls)."""
  if not paths.is_remote(workdir):
    return EventWriter(paths.join(workdir))
  return _StagedWriter(workdir)


class EventWriter:
  """One `events.out.tfevents.*` file in a local folder, written synchronously (a few
  hundred bytes per log line; images only at evaluation)."""

  def __init__(self, logdir: str):
    # tensorboard's record framing and protos are pure Python; its EventFileWriter is not
    # used because it opens files through tf.io.gfile, which imports TensorFlow.
    from tensorboard.compat.proto import event_pb2  # pylint: disable=import-outside-toplevel
    from tensorboard.summary.writer import record_writer  # pylint: disable=import-outside-toplevel
    self._event_pb2 = event_pb2
    os.makedirs(logdir, exist_ok=True)
    name = (f'events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}'
            '.0.v2')
    self.path = os.path.join(logdir, name)
    self._file = open(self.path, 'wb')  # pylint: disable=consider-using-with
    self._records = record_writer.RecordWriter(self._file)
    self._write(event_pb2.Event(wall_time=time.time(), file_version='brain.Event:2'))

  def _write(self, event) -> None:
    self._records.write(event.SerializeToString())

  def _summary(self, step: int, values) -> None:
    from tensorboard.compat.proto import summary_pb2  # pylint: disable=import-outside-toplevel
    self._write(self._event_pb2.Event(wall_time=time.time(), step=int(step),
                                      summary=summary_pb2.Summary(value=values)))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    self._summary(step, [_value(k, 'scalars', 'DT_FLOAT', [float(v)], [], 'float_val')
                         for k, v in scalars.items()])

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    self._summary(step, [_value(k, 'text', 'DT_STRING', [str(v).encode()], [], 'string_val')
                         for k, v in texts.items()])

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """[N, H, W, C] images (uint8, or floats in [0, 1]) as PNGs, all N of each key."""
    from genai.data import image_shards  # pylint: disable=import-outside-toplevel
    values = []
    for k, v in images.items():
      x = np.asarray(v)
      if x.dtype != np.uint8:  # as tf.image.convert_image_dtype(saturate=True) does
        x = np.clip(x.astype(np.float32) * 255.5, 0, 255).astype(np.uint8)
      pngs = [image_shards.png_bytes(img) for img in x]
      h, w = x.shape[1:3]
      values.append(_value(k, 'images', 'DT_STRING', [b'%d' % w, b'%d' % h] + pngs,
                           [2 + len(pngs)], 'string_val'))
    self._summary(step, values)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    from tensorboard.plugins.hparams import summary_v2  # pylint: disable=import-outside-toplevel
    clean = {k: v if isinstance(v, (bool, int, float, str)) else str(v)
             for k, v in hparams.items()}
    self._write(self._event_pb2.Event(wall_time=time.time(), step=0,
                                      summary=summary_v2.hparams_pb(clean)))

  def flush(self) -> None:
    if not self._file.closed:
      self._file.flush()

  def close(self) -> None:
    if not self._file.closed:
      self._file.close()


def _value(tag: str, plugin: str, dtype: str, vals: list, shape: list[int], field: str):
  """A Summary.Value holding a tensor for `plugin`, as tf.summary's ops write it."""
  # pylint: disable=import-outside-toplevel
  from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
  tensor = tensor_pb2.TensorProto(
      dtype=types_pb2.DataType.Value(dtype),
      tensor_shape=tensor_shape_pb2.TensorShapeProto(
          dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in shape]),
      **{field: vals})
  meta = summary_pb2.SummaryMetadata(
      plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin))
  return summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=meta)


def null_writer():
  """A writer that writes nothing (processes other than 0)."""
  return _NullWriter()


class _NullWriter:

  def __getattr__(self, name):  # write_scalars, write_images, flush, close, ...
    return lambda *args, **kwargs: None


class _StagedWriter:
  """Writes event files locally; `flush`/`close` upload the changed ones to `workdir`."""

  def __init__(self, workdir: str):
    self._staging = tempfile.mkdtemp(prefix='genai-events-')
    self._dst = paths.path(workdir)
    self._sizes: dict[str, int] = {}
    self._writer = EventWriter(self._staging)

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
