"""Quantization-aware training with qwix (the JAX quantization library that succeeds aqtp).

qwix 0.1.8 installs beside the pinned jax 0.10.2 without changing it and wraps a flax.linen
module as is: `qwix.quantize_model(model, QtProvider(rules))` fake-quantizes the weights of
matching modules in the forward pass (straight-through gradients), so training sees the
rounding the int8/int4 model will have. genai applies it to the transformer blocks' dense
layers ('layer_*' module paths), the same kernels genai/compress/quantize.py stores as
integers afterwards; embeddings and norms stay float in both.

  train_model = wrap(model, 'int4', tile_size=32)   # same params, same config
"""
from __future__ import annotations

import flax.linen as nn

KINDS = ('int8', 'int4')


def wrap(model: nn.Module, kind: str, tile_size: int | None = None,
         module_path: str = r'layer_\d+/.*') -> nn.Module:
  """`model` with fake-quantized weights (int8 per channel; int4 per `tile_size` input
  rows, symmetric) in the matching modules."""
  if kind not in KINDS:
    raise ValueError(f'model.qat={kind!r} is unknown; use one of {KINDS} (or "" for off).')
  import qwix  # pylint: disable=import-outside-toplevel
  # qwix's int8 bound is 127.5; scaling its absmax by 127.5 / 127 gives the absmax / 127
  # grid genai stores (int4 uses qwix's own absmax / 7.5 on both sides).
  rule = qwix.QtRule(module_path=module_path, weight_qtype=kind,
                     tile_size=tile_size if kind == 'int4' else None,
                     weight_calibration_method=f'absmax,{127.5 / 127}' if kind == 'int8' else 'absmax')
  return qwix.quantize_model(model, qwix.QtProvider([rule]))
