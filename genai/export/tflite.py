"""TFLite/LiteRT flatbuffers from an exported SavedModel signature, and running them.

Conversion reads the SavedModel that `saved_model.save` wrote (jax2tf defaults: native
serialization), so the same StableHLO feeds TF Serving and the edge model; the converter
freezes the tf.Variables into constants. `quantize='int8'` is dynamic-range quantization
(`tf.lite.Optimize.DEFAULT` without a representative dataset): weights of matmuls and
convolutions stored as int8 with per-channel scales, activations stay float32 and are
quantized on the fly inside the int8 kernels.

The files run with `ai_edge_litert.interpreter.Interpreter` (tf.lite.Interpreter is
deprecated). Signature inputs and outputs keep the SavedModel's names.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

QUANTIZE = ('none', 'int8')


def convert(saved_model_dir: str, signature: str, quantize: str = 'none') -> bytes:
  """The .tflite bytes of one signature of a SavedModel."""
  if quantize not in QUANTIZE:
    raise ValueError(f'quantize={quantize!r} is unknown; use one of {QUANTIZE}.')
  converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=[signature])
  if quantize == 'int8':
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  return converter.convert()


def write(saved_model_dir: str, signature: str, path: str, quantize: str = 'none') -> int:
  """Converts and writes `path`; returns its size in bytes."""
  data = convert(saved_model_dir, signature, quantize)
  with open(path, 'wb') as f:
    f.write(data)
  return len(data)


class Runner:
  """Calls one signature of a .tflite file: runner(**inputs) -> {name: np.ndarray}."""

  def __init__(self, path: str, signature: str | None = None, num_threads: int | None = None):
    from ai_edge_litert.interpreter import Interpreter  # pylint: disable=import-outside-toplevel
    self.interpreter = Interpreter(model_path=path, num_threads=num_threads)
    names = list(self.interpreter.get_signature_list())
    if signature is None:
      signature = names[0]
    if signature not in names:
      raise ValueError(f'{path} has no signature {signature!r}; it has {names}.')
    self.signature = signature
    self._run = self.interpreter.get_signature_runner(signature)

  def __call__(self, **inputs: Any) -> dict[str, np.ndarray]:
    outputs = self._run(**{k: np.asarray(v) for k, v in inputs.items()})
    return {k: np.asarray(v) for k, v in outputs.items()}
