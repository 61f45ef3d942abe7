"""One entry point for pretrained weights: `load(spec)` -> (config, params, tokenizer).

  'hf:DIR'     an HF checkpoint directory (config.json + safetensors; tokenizer.json if any)
  'gguf:FILE'  a GGUF file (Llama family; its tokenizer and chat template are inside)
  'smollm2'    SmolLM2-135M-Instruct from the cache (`python -m genai.pretrained.fetch smollm2`)
(A genai workdir, 'workdir:DIR', is read by experiments/lm.py, which owns that format.)

`overrides` set config fields that keep the parameter shapes: dropout, dtype, remat,
scan_layers, max_len (no larger than the checkpoint's learned position table).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from genai import paths
from genai.data import tokenizers
from genai.models.transformer import TransformerConfig
from genai.pretrained import convert
from genai.pretrained import fetch
from genai.pretrained import gguf
from genai.pretrained import hf

SHAPE_FREE_FIELDS = ('dropout', 'dtype', 'remat', 'scan_layers', 'max_len')


def apply_overrides(cfg: TransformerConfig, params: Any, overrides: dict[str, Any]):
  """(config with `overrides`, params re-laid out for it); only SHAPE_FREE_FIELDS may change."""
  bad = sorted(set(overrides) - set(SHAPE_FREE_FIELDS))
  if bad:
    raise ValueError(f'model.{bad[0]} cannot be changed when starting from pretrained weights '
                     f'(it changes parameter shapes); only {SHAPE_FREE_FIELDS} can.')
  new = dataclasses.replace(cfg, **overrides)
  if new.scan_layers != cfg.scan_layers or (new.positions == 'learned' and new.max_len != cfg.max_len):
    # Re-lay the tensors for the new layout (stacked layers, shorter position table).
    params = convert.to_genai(new, convert.from_genai(cfg, params))
  return new, params


def config_of(spec: str) -> TransformerConfig:
  """The architecture of a pretrained source without reading (or dequantizing) its weights."""
  kind, _, where = spec.partition(':')
  if kind == 'hf':
    return hf.config_from_hf(paths.read_json(paths.join(where, 'config.json')), where)
  if kind in ('gguf', 'smollm2'):
    path = where if kind == 'gguf' else str(fetch.smollm2_path())
    with paths.local_copy(path) as local:  # the gguf reader memory-maps a local file
      reader = gguf._reader(local)  # pylint: disable=protected-access
      return gguf.config_from_metadata(gguf.read_metadata(reader),
                                       {t.name for t in reader.tensors}, path)
  raise ValueError(f'{spec!r} is not a known source; use hf:DIR, gguf:FILE, smollm2 or '
                   'workdir:DIR.')


def load(spec: str, **overrides) -> tuple[TransformerConfig, Any, tokenizers.Tokenizer | None]:
  """(config, float32 params, tokenizer or None) of a pretrained source (see module doc)."""
  kind, _, where = spec.partition(':')
  if kind == 'hf':
    cfg, params = hf.import_hf(where)
    d = paths.path(where)
    if (d / 'tokenizer.json').exists():
      tok = tokenizers.HFTokenizer.from_file(paths.join(where, 'tokenizer.json'))
    elif (d / 'vocab.json').exists() and (d / 'merges.txt').exists():
      with paths.local_copy(d / 'vocab.json') as vocab, paths.local_copy(d / 'merges.txt') as merges:
        tok = tokenizers.HFTokenizer.from_vocab_merges(vocab, merges)
    else:
      tok = None
  elif kind in ('gguf', 'smollm2'):
    path = where if kind == 'gguf' else str(fetch.smollm2_path())
    with paths.local_copy(path) as local:
      cfg, params, tok, _ = gguf.load_gguf(local)
  else:
    raise ValueError(f'model.init_from={spec!r} is not a known source; use hf:DIR, gguf:FILE, '
                     'smollm2 or workdir:DIR.')
  if tok is not None and tok.vocab_size > cfg.vocab_size:
    raise ValueError(f'{spec}: the tokenizer has {tok.vocab_size} ids but the model embeds '
                     f'only {cfg.vocab_size}; the tokenizer belongs to another model.')
  overrides = {k: v for k, v in overrides.items() if v is not None}
  cfg, params = apply_overrides(cfg, params, overrides)
  return cfg, params, tok
