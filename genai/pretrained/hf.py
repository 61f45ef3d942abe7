"""Hugging Face checkpoints (safetensors + config.json) <-> the genai transformer.

  cfg, params = import_hf('path/to/hf_dir')       # GPT-2 or Llama family, no torch
  export_hf(cfg, params, 'out_dir')               # transformers.from_pretrained loads it

Supported `model_type`s: 'gpt2' (GPT2LMHeadModel) and 'llama' (LlamaForCausalLM, with
grouped-query attention and tied or untied embeddings). Weights are read and written with
genai/pretrained/safetensors_io.py (numpy only); the layout translation goes through the
canonical tensors of genai/pretrained/convert.py.
"""
from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from genai import paths
from genai.models.transformer import TransformerConfig
from genai.pretrained import convert
from genai.pretrained import safetensors_io

SUPPORTED = ('gpt2', 'llama')
_GPT2_ACTS = {'gelu_new': 'gelu', 'gelu_pytorch_tanh': 'gelu', 'gelu': 'gelu_erf'}


# ----------------------------------------------------------------- config.json <-> config

def config_from_hf(hf: dict[str, Any], source: str = 'config.json') -> TransformerConfig:
  """A TransformerConfig from an HF config dict; unsupported features are named."""
  mt = hf.get('model_type')
  if mt not in SUPPORTED:
    raise ValueError(f'{source}: model_type={mt!r} is not supported; genai imports '
                     f'{SUPPORTED} checkpoints.')
  if mt == 'gpt2':
    act = hf.get('activation_function', 'gelu_new')
    if act not in _GPT2_ACTS:
      raise ValueError(f'{source}: activation_function={act!r} is not supported '
                       f'(known: {sorted(_GPT2_ACTS)}).')
    for flag in ('scale_attn_by_inverse_layer_idx', 'reorder_and_upcast_attn'):
      if hf.get(flag):
        raise ValueError(f'{source}: {flag}=True is not supported by the genai transformer.')
    c = hf['n_embd']
    return TransformerConfig(
        vocab_size=hf['vocab_size'], num_layers=hf['n_layer'], num_heads=hf['n_head'],
        d_model=c, d_ff=hf.get('n_inner') or 4 * c, max_len=hf['n_positions'], arch='gpt2',
        mlp=_GPT2_ACTS[act], norm_eps=hf.get('layer_norm_epsilon', 1e-5),
        tie_embeddings=hf.get('tie_word_embeddings', True))
  c, h = hf['hidden_size'], hf['num_attention_heads']
  d_head = hf.get('head_dim')
  d_head = None if d_head is None or (c % h == 0 and d_head == c // h) else int(d_head)
  if hf.get('hidden_act', 'silu') != 'silu':
    raise ValueError(f'{source}: hidden_act={hf["hidden_act"]!r}; genai Llama uses silu.')
  rope = hf.get('rope_parameters') or hf.get('rope_scaling') or {}
  if rope.get('rope_type', 'default') != 'default':
    raise ValueError(f'{source}: rope_type={rope["rope_type"]!r} (RoPE scaling) is not '
                     'supported; genai implements plain RoPE.')
  theta = hf.get('rope_theta') or rope.get('rope_theta') or 10000.0
  if bool(hf.get('attention_bias')) != bool(hf.get('mlp_bias')):
    raise ValueError(f'{source}: attention_bias={hf.get("attention_bias")} and mlp_bias='
                     f'{hf.get("mlp_bias")}; genai needs both on or both off.')
  return TransformerConfig(
      vocab_size=hf['vocab_size'], num_layers=hf['num_hidden_layers'], num_heads=h,
      num_kv_heads=hf.get('num_key_value_heads') or h, d_model=c, d_ff=hf['intermediate_size'],
      max_len=hf.get('max_position_embeddings', 2048), arch='llama', d_head=d_head,
      norm_eps=hf.get('rms_norm_eps', 1e-6), rope_theta=float(theta),
      use_bias=bool(hf.get('attention_bias')), tie_embeddings=hf.get('tie_word_embeddings', False))


def config_to_hf(cfg: TransformerConfig) -> dict[str, Any]:
  """The config.json transformers needs to rebuild `cfg`."""
  if cfg.arch == 'gpt2' and cfg.positions == 'learned' and cfg.norm == 'layernorm':
    if cfg.mlp == 'swiglu' or not cfg.use_bias:
      raise ValueError('GPT-2 export needs a GELU MLP with biases (model.mlp, model.use_bias).')
    if cfg.num_heads * cfg.head_dim != cfg.d_model:
      raise ValueError('GPT-2 export needs num_heads * head_dim == d_model (heads pruned?); '
                       'HF GPT-2 has no separate head_dim.')
    return {'architectures': ['GPT2LMHeadModel'], 'model_type': 'gpt2',
            'vocab_size': cfg.vocab_size, 'n_positions': cfg.max_len, 'n_embd': cfg.d_model,
            'n_layer': cfg.num_layers, 'n_head': cfg.num_heads, 'n_inner': cfg.d_ff,
            'activation_function': 'gelu_new' if cfg.mlp == 'gelu' else 'gelu',
            'layer_norm_epsilon': cfg.norm_eps, 'tie_word_embeddings': cfg.tie_embeddings,
            'resid_pdrop': 0.0, 'embd_pdrop': 0.0, 'attn_pdrop': 0.0, 'dtype': 'float32'}
  if cfg.arch == 'llama' and cfg.positions == 'rope' and cfg.norm == 'rmsnorm' and cfg.mlp == 'swiglu':
    return {'architectures': ['LlamaForCausalLM'], 'model_type': 'llama',
            'vocab_size': cfg.vocab_size, 'hidden_size': cfg.d_model,
            'intermediate_size': cfg.d_ff, 'num_hidden_layers': cfg.num_layers,
            'num_attention_heads': cfg.num_heads, 'num_key_value_heads': cfg.num_kv_heads,
            'head_dim': cfg.head_dim, 'max_position_embeddings': cfg.max_len,
            'rms_norm_eps': cfg.norm_eps, 'rope_theta': cfg.rope_theta,
            'hidden_act': 'silu', 'attention_bias': cfg.use_bias, 'mlp_bias': cfg.use_bias,
            'tie_word_embeddings': cfg.tie_embeddings, 'dtype': 'float32'}
  raise ValueError(f'No HF architecture matches this config (arch={cfg.arch}, positions='
                   f'{cfg.positions}, norm={cfg.norm}, mlp={cfg.mlp}); export supports the '
                   'plain GPT-2 and Llama shapes.')


# ----------------------------------------------------------------- names <-> canonical

_GPT2_LAYER = {'ln_1.weight': 'attn_norm.scale', 'ln_1.bias': 'attn_norm.bias',
               'ln_2.weight': 'mlp_norm.scale', 'ln_2.bias': 'mlp_norm.bias',
               'attn.c_proj.weight': 'o', 'attn.c_proj.bias': 'o.bias',
               'mlp.c_fc.weight': 'fc_in', 'mlp.c_fc.bias': 'fc_in.bias',
               'mlp.c_proj.weight': 'fc_out', 'mlp.c_proj.bias': 'fc_out.bias'}
_LLAMA_LAYER = {'input_layernorm.weight': 'attn_norm.scale',
                'post_attention_layernorm.weight': 'mlp_norm.scale',
                'self_attn.q_proj': 'q', 'self_attn.k_proj': 'k', 'self_attn.v_proj': 'v',
                'self_attn.o_proj': 'o', 'mlp.gate_proj': 'gate', 'mlp.up_proj': 'up',
                'mlp.down_proj': 'fc_out'}


def _gpt2_to_canonical(w: dict[str, np.ndarray], cfg: TransformerConfig) -> dict:
  t = {}
  for name, x in w.items():
    name = name.removeprefix('transformer.')
    if re.fullmatch(r'h\.\d+\.attn\.(masked_)?bias', name):
      continue  # causal-mask buffers of old checkpoints, not weights
    if name == 'wte.weight':
      t['embed'] = x
    elif name == 'wpe.weight':
      t['pos_embed'] = x
    elif name in ('ln_f.weight', 'ln_f.bias'):
      t['final_norm.' + ('scale' if name.endswith('weight') else 'bias')] = x
    elif name == 'lm_head.weight':
      if not cfg.tie_embeddings:
        t['lm_head'] = x.T
    elif m := re.fullmatch(r'h\.(\d+)\.attn\.c_attn\.(weight|bias)', name):
      i, c = m.group(1), cfg.d_model
      suffix = '' if m.group(2) == 'weight' else '.bias'
      q, k, v = np.split(x, [c, 2 * c], axis=-1)  # Conv1D: [in, out], out = q | k | v
      t.update({f'{i}.q{suffix}': q, f'{i}.k{suffix}': k, f'{i}.v{suffix}': v})
    elif (m := re.fullmatch(r'h\.(\d+)\.(.+)', name)) and m.group(2) in _GPT2_LAYER:
      t[f'{m.group(1)}.{_GPT2_LAYER[m.group(2)]}'] = x
    else:
      t['unknown:' + name] = x  # reported by convert.to_genai as unused
  return t


def _llama_to_canonical(w: dict[str, np.ndarray], cfg: TransformerConfig) -> dict:
  t = {}
  for name, x in w.items():
    if name == 'model.embed_tokens.weight':
      t['embed'] = x
    elif name == 'model.norm.weight':
      t['final_norm.scale'] = x
    elif name == 'lm_head.weight':
      if not cfg.tie_embeddings:
        t['lm_head'] = x.T
    elif m := re.fullmatch(r'model\.layers\.(\d+)\.(.+?)(\.weight|\.bias)?', name):
      i, key, kind = m.group(1), m.group(2), m.group(3)
      if key + (kind or '') in _LLAMA_LAYER:  # norms: '...layernorm.weight'
        t[f'{i}.{_LLAMA_LAYER[key + kind]}'] = x
      elif key in _LLAMA_LAYER:  # projections: torch Linear [out, in] -> [in, out]
        t[f'{i}.{_LLAMA_LAYER[key]}' + ('' if kind == '.weight' else '.bias')] = (
            x.T if kind == '.weight' else x)
      else:
        t['unknown:' + name] = x
    else:
      t['unknown:' + name] = x
  return t


def _canonical_to_gpt2(t: dict[str, np.ndarray], cfg: TransformerConfig) -> dict:
  inv = {v: k for k, v in _GPT2_LAYER.items()}
  w = {'transformer.wte.weight': t['embed'], 'transformer.wpe.weight': t['pos_embed'],
       'transformer.ln_f.weight': t['final_norm.scale'], 'transformer.ln_f.bias': t['final_norm.bias']}
  for i in range(cfg.num_layers):
    w[f'transformer.h.{i}.attn.c_attn.weight'] = np.concatenate([t[f'{i}.q'], t[f'{i}.k'], t[f'{i}.v']], -1)
    w[f'transformer.h.{i}.attn.c_attn.bias'] = np.concatenate(
        [t[f'{i}.q.bias'], t[f'{i}.k.bias'], t[f'{i}.v.bias']])
    for canon, hf_name in inv.items():
      w[f'transformer.h.{i}.{hf_name}'] = t[f'{i}.{canon}']
  if not cfg.tie_embeddings:
    w['lm_head.weight'] = t['lm_head'].T
  return w


def _canonical_to_llama(t: dict[str, np.ndarray], cfg: TransformerConfig) -> dict:
  w = {'model.embed_tokens.weight': t['embed'], 'model.norm.weight': t['final_norm.scale']}
  for i in range(cfg.num_layers):
    for hf_name, canon in _LLAMA_LAYER.items():
      if hf_name.endswith('.weight'):  # norms
        w[f'model.layers.{i}.{hf_name}'] = t[f'{i}.{canon}']
      else:
        w[f'model.layers.{i}.{hf_name}.weight'] = t[f'{i}.{canon}'].T
        if cfg.use_bias:
          w[f'model.layers.{i}.{hf_name}.bias'] = t[f'{i}.{canon}.bias']
  if not cfg.tie_embeddings:
    w['lm_head.weight'] = t['lm_head'].T
  return w


# ----------------------------------------------------------------- files

def read_weights(directory: str) -> dict[str, np.ndarray]:
  """All tensors of model.safetensors, or of the shards an index file lists."""
  index = paths.path(directory) / 'model.safetensors.index.json'
  single = paths.path(directory) / 'model.safetensors'
  if index.exists():
    files = sorted(set(json.loads(index.read_text())['weight_map'].values()))
  elif single.exists():
    files = ['model.safetensors']
  else:
    raise FileNotFoundError(f'{directory} holds no model.safetensors (or index); genai '
                            'imports safetensors checkpoints (pytorch_model.bin is not read: '
                            'convert it with transformers save_pretrained(safe_serialization=True)).')
  weights = {}
  for name in files:
    weights.update(safetensors_io.read(paths.join(directory, name)))
  return weights


def import_hf(directory: str, **overrides) -> tuple[TransformerConfig, dict]:
  """(config, float32 genai params) of an HF checkpoint directory. `overrides` replace
  config fields that do not change shapes (e.g. max_len to shrink the position table,
  dropout, dtype, remat, scan_layers)."""
  path = paths.join(directory, 'config.json')
  if not paths.path(path).exists():
    raise FileNotFoundError(f'{path} not found: an HF checkpoint directory needs config.json '
                            'beside its .safetensors files.')
  hf = paths.read_json(path)
  cfg = config_from_hf(hf, path)
  if overrides:
    cfg = TransformerConfig.from_dict({**{k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
                                       **overrides})
  weights = read_weights(directory)
  to_canonical = _gpt2_to_canonical if cfg.arch == 'gpt2' else _llama_to_canonical
  return cfg, convert.to_genai(cfg, to_canonical(weights, cfg), source=directory)


def export_hf(cfg: TransformerConfig, params: Any, directory: str) -> None:
  """Writes config.json + model.safetensors (float32) that transformers loads."""
  hf = config_to_hf(cfg)
  t = convert.from_genai(cfg, params)
  weights = (_canonical_to_gpt2 if hf['model_type'] == 'gpt2' else _canonical_to_llama)(t, cfg)
  paths.path(directory).mkdir(parents=True, exist_ok=True)
  safetensors_io.write(paths.join(directory, 'model.safetensors'),
                       {k: np.ascontiguousarray(v, np.float32) for k, v in weights.items()})
  paths.write_json(paths.join(directory, 'config.json'), hf, indent=2)
