"""Import Llama-architecture GGUF checkpoints (llama.cpp's format) into genai's Transformer.

    cfg, params, tokenizer, metadata = load_gguf('SmolLM2-135M-Instruct.Q4_1.gguf')
    logits, _ = Transformer(cfg).apply({'params': params}, tokens_BT)

The `gguf` package reads the file: its metadata gives a `TransformerConfig` (arch='llama'),
every tensor is dequantized to float32 with numpy (Q4_0/Q4_1/Q8_0/K-quants/F16/...), mapped
to convert.py's canonical names and handed to `convert.to_genai`. The tokenizer is an
`HFTokenizer` built from the file's tokenizer metadata (vocabulary, merges, special ids,
chat template).

GGUF layout notes: gguf-py gives each tensor in numpy order, i.e. ggml's `ne` reversed, so a
projection arrives as torch's [out, in] and is transposed to canonical [in, out]. llama.cpp's
converter permutes the rows of `attn_q`/`attn_k` per head from HF's rotate-half RoPE layout
to the interleaved one its kernels use; `_unpermute` undoes that (as HF transformers' GGUF
loader does), so the canonical tensors use rotate-half like genai's `_rope`.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from genai.data.gguf_file import read_metadata
from genai.data.gguf_file import reader as _reader
from genai.data.tokenizers import HFTokenizer
from genai.models.transformer import TransformerConfig
from genai.pretrained import convert

SUPPORTED_ARCHS = ('llama',)

# GGUF per-layer tensor name -> (canonical suffix, kind): 'proj' is transposed [out, in] ->
# [in, out]; 'q'/'k' are also un-permuted (llama.cpp's RoPE row order); 'vec' is kept.
_LAYER_TENSORS = {
    'attn_q': ('q', 'q'), 'attn_k': ('k', 'k'), 'attn_v': ('v', 'proj'),
    'attn_output': ('o', 'proj'), 'ffn_gate': ('gate', 'proj'), 'ffn_up': ('up', 'proj'),
    'ffn_down': ('fc_out', 'proj'), 'attn_norm': ('attn_norm.scale', 'vec'),
    'ffn_norm': ('mlp_norm.scale', 'vec'),
}


def config_from_metadata(meta: dict[str, Any], tensor_names: set[str],
                         source: str = 'GGUF file') -> TransformerConfig:
  """A genai `TransformerConfig` (arch='llama') for the model a GGUF file describes.

  `tensor_names` are the file's tensors: the embeddings are tied when it has no
  `output.weight` (llama.cpp then reuses `token_embd` as the head).
  """
  arch = meta.get('general.architecture')
  if arch not in SUPPORTED_ARCHS:
    raise ValueError(f'{source}: architecture {arch!r} is not supported; genai imports GGUF '
                     f'files of architecture {", ".join(SUPPORTED_ARCHS)} (Llama, SmolLM, '
                     'TinyLlama, ...).')

  def get(key, default=None):
    value = meta.get(f'{arch}.{key}', default)
    if value is None:
      raise ValueError(f'{source}: metadata {arch}.{key} is missing; the file is incomplete.')
    return value

  if get('expert_count', 0):
    raise ValueError(f'{source}: a mixture-of-experts {arch} model ({get("expert_count")} '
                     'experts) is not supported; genai imports dense Llama models only.')
  scaling = meta.get(f'{arch}.rope.scaling.type', 'none')
  if scaling != 'none' or 'rope_freqs.weight' in tensor_names:
    raise ValueError(f'{source}: RoPE scaling ({scaling!r}, or a rope_freqs tensor) is not '
                     'supported; genai implements plain RoPE only.')
  heads, width = int(get('attention.head_count')), int(get('embedding_length'))
  vocab = meta.get(f'{arch}.vocab_size') or len(meta.get('tokenizer.ggml.tokens') or [])
  if not vocab:
    raise ValueError(f'{source}: neither {arch}.vocab_size nor tokenizer tokens are present.')
  cfg = TransformerConfig(
      vocab_size=int(vocab), num_layers=int(get('block_count')), num_heads=heads,
      num_kv_heads=int(get('attention.head_count_kv', heads)), d_model=width,
      d_ff=int(get('feed_forward_length')), max_len=int(get('context_length', 2048)),
      arch='llama', norm_eps=float(get('attention.layer_norm_rms_epsilon', 1e-5)),
      rope_theta=float(get('rope.freq_base', 10000.0)),
      tie_embeddings='output.weight' not in tensor_names)
  for key in ('rope.dimension_count', 'attention.key_length', 'attention.value_length'):
    if int(get(key, cfg.head_dim)) != cfg.head_dim:
      raise ValueError(f'{source}: {arch}.{key}={get(key)} differs from the head dim '
                       f'{cfg.head_dim} (= {width} / {heads}); genai needs them equal.')
  return cfg


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
  """Undoes llama.cpp's per-head q/k row permutation (interleaved -> rotate-half RoPE)."""
  rows = w.shape[0]
  return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _dequantize(tensor, source: str) -> np.ndarray:
  import gguf  # pylint: disable=import-outside-toplevel
  try:
    w = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
  except NotImplementedError as e:
    raise ValueError(f'{source}: tensor {tensor.name!r} has quantization '
                     f'{tensor.tensor_type.name}, which the gguf package cannot dequantize '
                     '(update gguf, or use a file with another quantization).') from e
  return np.asarray(w, np.float32)


def _check_shape(name: str, w: np.ndarray, shape: tuple[int, ...], source: str) -> None:
  if w.shape != shape:
    raise ValueError(f'{source}: tensor {name!r} has shape {w.shape}, but the metadata '
                     f'implies {shape}; the file is inconsistent.')


def canonical_tensors(reader, cfg: TransformerConfig, source: str = 'GGUF file'
                      ) -> dict[str, np.ndarray]:
  """Every tensor of the file, dequantized to float32, under convert.py's canonical names."""
  c, h, k, d = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  out_rows = {'q': h * d, 'k': k * d}
  t: dict[str, np.ndarray] = {}
  unknown = []
  for tensor in reader.tensors:
    name = tensor.name
    parts = name.split('.')
    if name == 'token_embd.weight':
      t['embed'] = _dequantize(tensor, source)
    elif name == 'output_norm.weight':
      t['final_norm.scale'] = _dequantize(tensor, source)
    elif name == 'output.weight':
      t['lm_head'] = _dequantize(tensor, source).T
    elif (len(parts) == 4 and parts[0] == 'blk' and parts[3] == 'weight'
          and parts[2] in _LAYER_TENSORS):
      suffix, kind = _LAYER_TENSORS[parts[2]]
      w = _dequantize(tensor, source)
      if kind in out_rows:
        _check_shape(name, w, (out_rows[kind], c), source)
        w = _unpermute(w, h if kind == 'q' else k)
      t[f'{parts[1]}.{suffix}'] = w if kind == 'vec' else w.T
    else:
      unknown.append(name)
  if unknown:
    raise ValueError(f'{source}: tensors {unknown[:5]}{"..." if len(unknown) > 5 else ""} '
                     'are not part of a Llama model genai can import (biases, extra norms '
                     'or another architecture).')
  return {name: np.ascontiguousarray(w) for name, w in t.items()}


def load_gguf(path: str | os.PathLike, **overrides: Any
              ) -> tuple[TransformerConfig, dict, HFTokenizer, dict[str, Any]]:
  """(config, genai params (float32 numpy), tokenizer, metadata) of a Llama GGUF file.

  `overrides` change TransformerConfig fields that leave the weights as they are, e.g.
  scan_layers=True (stacked layers: compiles ~5x faster), dtype='bfloat16', max_len=2048.
  """
  source = os.fspath(path)
  reader = _reader(source)
  meta = read_metadata(reader)
  names = {tensor.name for tensor in reader.tensors}
  cfg = config_from_metadata(meta, names, source)
  if overrides:
    cfg = TransformerConfig.from_dict({**dataclasses.asdict(cfg), **overrides})
  params = convert.to_genai(cfg, canonical_tensors(reader, cfg, source), source=source)
  tokenizer = HFTokenizer.from_gguf_metadata(meta, source=source)
  if tokenizer.vocab_size > cfg.vocab_size:
    raise ValueError(f'{source}: the tokenizer has {tokenizer.vocab_size} tokens but the '
                     f'model only {cfg.vocab_size} embeddings; the file is inconsistent.')
  return cfg, params, tokenizer, meta
