"""genai/train/event_files.py: TensorBoard events written without TensorFlow, read back by
TensorBoard's own EventAccumulator next to what clu's (TensorFlow) SummaryWriter writes for
the same calls."""
import os
import subprocess
import sys

import numpy as np
import pytest

from genai.train import event_files


def _calls(writer):
  rng = np.random.default_rng(0)
  writer.write_hparams({'lr': 0.001, 'model.name': 'gpt', 'steps': 10, 'ema': True})
  writer.write_scalars(5, {'train/loss': 1.25, 'train/lr': 3e-4})
  writer.write_scalars(10, {'train/loss': 0.5})
  writer.write_texts(10, {'sample': 'To be, or not to be'})
  writer.write_images(10, {'samples': rng.random((2, 8, 6, 1)).astype(np.float32),
                           'rgb': rng.integers(0, 256, (1, 4, 5, 3), dtype=np.uint8)})
  writer.flush()
  writer.close()


def _read(logdir):
  from tensorboard.backend.event_processing import event_accumulator as ea  # pylint: disable=import-outside-toplevel
  acc = ea.EventAccumulator(str(logdir), size_guidance={ea.TENSORS: 0, ea.IMAGES: 0})
  acc.Reload()
  tensors = {}
  for tag in acc.Tags()['tensors']:
    tensors[tag] = [(e.step, e.tensor_proto) for e in acc.Tensors(tag)]
  return acc, tensors


@pytest.mark.slow  # imports TensorFlow (clu's writer, the reference)
def test_events_read_back_like_clus_summary_writer(tmp_path):
  _calls(event_files.open_writer(str(tmp_path / 'ours')))
  from clu import metric_writers  # pylint: disable=import-outside-toplevel
  _calls(metric_writers.SummaryWriter(str(tmp_path / 'clu')))
  from tensorboard.util import tensor_util  # pylint: disable=import-outside-toplevel
  _, ours = _read(tmp_path / 'ours')
  _, ref = _read(tmp_path / 'clu')
  for tag in ('train/loss', 'train/lr', 'sample', 'samples', 'rgb'):
    assert [s for s, _ in ours[tag]] == [s for s, _ in ref[tag]], tag
    for (_, a), (_, b) in zip(ours[tag], ref[tag]):
      x, y = tensor_util.make_ndarray(a), tensor_util.make_ndarray(b)
      if tag in ('samples', 'rgb'):  # [w, h, png, ...]: same size, same decoded pixels
        assert list(x[:2]) == list(y[:2]), tag
        from PIL import Image  # pylint: disable=import-outside-toplevel
        import io  # pylint: disable=import-outside-toplevel
        dec = lambda p: np.asarray(Image.open(io.BytesIO(p)))
        for p, q in zip(x[2:], y[2:]):
          np.testing.assert_array_equal(dec(p).squeeze(), dec(q).squeeze())
      else:
        np.testing.assert_array_equal(x, y)
  assert '_hparams_/session_start_info' in ours


def test_writing_events_does_not_import_tensorflow(tmp_path):
  code = ('import sys; from genai.train import event_files as e; '
          f'w = e.open_writer({str(tmp_path)!r}); w.write_scalars(1, {{"a": 1.0}}); '
          'w.write_texts(1, {"t": "x"}); w.write_hparams({"a": 1}); w.close(); '
          'assert "tensorflow" not in sys.modules, "tensorflow imported"')
  subprocess.run([sys.executable, '-c', code], check=True)
  assert any(n.startswith('events.out.tfevents') for n in os.listdir(tmp_path))
