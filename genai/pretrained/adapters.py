"""LoRA adapters (genai/models/lora.py) as a file of their own, beside the base model.

  save(lora, cfg, 'adapter.safetensors')     # '<module path>.lora_a/.lora_b', float32
  lora, cfg = load('adapter.safetensors')    # rank, alpha and targets from the metadata

A few MB beside a base model of hundreds; `genai.families.lm.export_hf` writes one next to
the merged checkpoint of a LoRA run.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from genai.models.lora import LoraConfig
from genai.pretrained import safetensors_io

FORMAT = 'genai-lora'


def save(lora: dict[str, dict[str, Any]], cfg: LoraConfig, path: str) -> None:
  """The adapters alone as safetensors, with rank, alpha and targets in the metadata."""
  tensors = {}
  for k, ab in lora.items():
    tensors[f'{k}.lora_a'] = np.asarray(ab['a'], np.float32)
    tensors[f'{k}.lora_b'] = np.asarray(ab['b'], np.float32)
  safetensors_io.write(path, tensors, {'format': FORMAT, 'rank': str(cfg.rank),
                                       'alpha': str(cfg.alpha), 'targets': cfg.targets})


def load(path: str) -> tuple[dict[str, dict[str, np.ndarray]], LoraConfig]:
  """(adapters {module path: {'a', 'b'}}, their LoraConfig) of a file `save` wrote."""
  meta = safetensors_io.read_metadata(path)
  if meta.get('format') != FORMAT:
    raise ValueError(f'{path} is not a genai LoRA adapter file (format '
                     f'{meta.get("format")!r}, expected {FORMAT!r}).')
  lora: dict[str, dict[str, np.ndarray]] = {}
  for name, x in safetensors_io.read(path).items():
    key, _, part = name.rpartition('.lora_')
    lora.setdefault(key, {})[part] = x
  return lora, LoraConfig(rank=int(meta['rank']), alpha=float(meta['alpha']),
                          targets=meta['targets'])
