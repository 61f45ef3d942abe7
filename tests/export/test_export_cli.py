"""Export errors that name the problem and the fix (no trained workdir needed)."""
import json

import pytest

from genai.export import tflite
from genai.export import workdir as export_workdir


def test_not_a_workdir(tmp_path):
  with pytest.raises(ValueError, match=r'is not a genai workdir \(no config.json\)'):
    export_workdir.export_workdir(str(tmp_path), str(tmp_path / 'out'))


def test_family_without_export(tmp_path):
  (tmp_path / 'config.json').write_text(json.dumps({'experiment': 'classifier'}))
  with pytest.raises(ValueError, match=r'experiments.classifier, which has no export'):
    export_workdir.export_workdir(str(tmp_path), str(tmp_path / 'out'))


@pytest.mark.parametrize('kwargs, message', [
    (dict(format='onnx'),
     r"--format='onnx' is unknown; use one of \('saved_model', 'tflite', 'both'\)"),
    (dict(quantize='int4'), r"--quantize='int4' is unknown; use one of \('none', 'int8'\)"),
    (dict(format='saved_model', quantize='int8'), 'applies to TFLite files only'),
    (dict(format='both', platforms=('cpu', 'cuda')), 'TFLite conversion needs a SavedModel'),
])
def test_bad_options(tmp_path, kwargs, message):
  with pytest.raises(ValueError, match=message):
    export_workdir.export_workdir(str(tmp_path), str(tmp_path / 'out'), **kwargs)


def test_tflite_bad_quantize(tmp_path):
  with pytest.raises(ValueError, match='quantize'):
    tflite.convert(str(tmp_path), 'sample', 'fp16')
