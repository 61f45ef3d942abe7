"""Exporting a trained workdir: reads its config.json to know the family, which rebuilds the
model from the newest checkpoint and names the functions to export
(`genai.families.<family>.export_signatures`), and writes the SavedModel and/or TFLite files.

Layout of `out`:
  saved_model/<version>/   the SavedModel; `saved_model` is TF Serving's model base path
  <signature>.tflite       float TFLite of the edge signature (LM: decode_step; images: sample)
  <signature>_int8.tflite  the same with int8 dynamic-range weights (--quantize int8
                           writes it as well as the float file)
  export_info.json         family, signatures with input/output shapes and dtypes, file sizes
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

import jax
import numpy as np

from genai import paths
from genai import families
from genai.export import saved_model as sm
from genai.export import tflite

FORMATS = ('saved_model', 'tflite', 'both')


def build(workdir: str, *, batch_size: int = 1, **options: Any
          ) -> tuple[str, Any, dict[str, families.Signature], str]:
  """(family, params, signatures, default signature) of a workdir's newest checkpoint.
  `options`: prompt_len, num_tokens, cache_len, top_k (LM), steps (diffusion)."""
  family, export_signatures = families.capability(workdir, 'export_signatures', 'export')
  if batch_size < 1:
    raise ValueError(f'--batch_size={batch_size} must be >= 1.')
  params, sigs, default = export_signatures(workdir, batch_size=batch_size, **options)
  return family, params, sigs, default


def _describe(params: Any, sigs: dict[str, families.Signature]) -> dict[str, Any]:
  """Each signature's inputs and outputs as {name: 'dtype[shape]'}, e.g. 'int32[1, 1]'."""
  out = {}
  for name, s in sigs.items():
    outputs = jax.eval_shape(s.fn, params, s.inputs)
    out[name] = {kind: {k: f'{np.dtype(v.dtype).name}{list(v.shape)}' for k, v in d.items()}
                 for kind, d in (('inputs', s.inputs), ('outputs', outputs))}
  return out


def export_workdir(workdir: str, out: str, *,
                   format: str = 'both',  # pylint: disable=redefined-builtin
                   quantize: str = 'none',
                   version: int = 1, platforms: tuple[str, ...] = ('cpu',), **options: Any
                   ) -> dict[str, Any]:
  """Exports `workdir` into `out` (layout above); returns what export_info.json holds.

  `options`: batch_size, prompt_len, num_tokens, cache_len, top_k (LM), steps (diffusion).
  """
  if format not in FORMATS:
    raise ValueError(f'--format={format!r} is unknown; use one of {FORMATS}.')
  if quantize not in tflite.QUANTIZE:
    raise ValueError(f'--quantize={quantize!r} is unknown; use one of {tflite.QUANTIZE}.')
  if format == 'saved_model' and quantize != 'none':
    raise ValueError('--quantize applies to TFLite files only; use --format tflite or both.')
  if format != 'saved_model' and tuple(platforms) != ('cpu',):
    raise ValueError(f'--platforms={",".join(platforms)}: TFLite conversion needs a SavedModel '
                     'lowered for cpu only; use --format saved_model for other platforms.')
  family, params, sigs, default = build(workdir, **options)
  info: dict[str, Any] = {'family': family, 'workdir': paths.join(workdir),
                          'default_signature': default, 'signatures': _describe(params, sigs),
                          'files': {}}
  with tempfile.TemporaryDirectory() as tmp:
    # TF and the TFLite converter write local files: a remote `out` (gs://...) is staged in
    # `tmp` and uploaded through the path layer at the end.
    stage = os.path.join(tmp, 'out') if paths.is_remote(out) else paths.join(out)
    os.makedirs(stage, exist_ok=True)
    version_dir = os.path.join('saved_model', str(version))
    sm_dir = (os.path.join(stage, version_dir) if format != 'tflite'
              else os.path.join(tmp, 'saved_model'))
    if os.path.exists(sm_dir):
      shutil.rmtree(sm_dir)
    if paths.is_remote(out) and format != 'tflite' and (paths.path(out) / version_dir).exists():
      (paths.path(out) / version_dir).rmtree()
    sm.save(params, sigs, sm_dir, default=default, platforms=platforms)
    if format != 'tflite':
      info['files'][version_dir] = paths.tree_bytes(sm_dir)
    if format != 'saved_model':
      for name in (k for k, s in sigs.items() if s.tflite):
        for q in ('none',) if quantize == 'none' else ('none', quantize):
          path = os.path.join(stage, f'{name}.tflite' if q == 'none' else f'{name}_{q}.tflite')
          info['files'][os.path.basename(path)] = tflite.write(sm_dir, name, path, q)
    with open(os.path.join(stage, 'export_info.json'), 'w') as f:
      json.dump(info, f, indent=2)
    if paths.is_remote(out):
      paths.upload_tree(stage, out)
  return info
