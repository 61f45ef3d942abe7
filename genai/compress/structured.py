"""Structured pruning of the transformer: fewer attention heads and MLP units, i.e. a
genuinely smaller model with a new config that loads and runs like any other.

  new_cfg, new_params = prune_structure(cfg, params, heads_per_group=2, d_ff=768)

Scores are weight magnitudes (no data needed): a query head's score is the L2 norm of its
q columns times that of its rows in the output projection; an MLP unit's is the norm of
its input column(s) (gate and up for SwiGLU) times that of its output row. Every KV group
keeps the same number of query heads (`heads_per_group`), so grouped-query attention keeps
its shape; whole KV groups can go too (`kv_heads`: for multi-head attention, whole heads);
head_dim is kept (`d_head` in the new config). A pruned model equals the
original with the removed heads' and units' output rows set to zero (tested).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from genai.models.transformer import TransformerConfig
from genai.pretrained import convert


def _norm(x, axis):
  return np.sqrt((np.asarray(x, np.float64) ** 2).sum(axis=axis))


def head_and_unit_scores(cfg: TransformerConfig, t: dict[str, np.ndarray], i: int):
  """(query-head scores [K, G], MLP-unit scores [F]) of layer i from canonical tensors."""
  h, k, d, c = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.d_model
  q = t[f'{i}.q'].reshape(c, h, d)
  o = t[f'{i}.o'].reshape(h, d, c)
  heads = (_norm(q, (0, 2)) * _norm(o, (1, 2))).reshape(k, h // k)
  if cfg.mlp == 'swiglu':
    unit_in = _norm(t[f'{i}.gate'], 0) * _norm(t[f'{i}.up'], 0)
  else:
    unit_in = _norm(t[f'{i}.fc_in'], 0)
  return heads, unit_in * _norm(t[f'{i}.fc_out'], 1)


def prune_structure(cfg: TransformerConfig, params: Any, heads_per_group: int | None = None,
                    d_ff: int | None = None, kv_heads: int | None = None
                    ) -> tuple[TransformerConfig, dict]:
  """Keeps the `kv_heads` best KV groups (with all their query heads; for multi-head
  attention a group is one head), then the `heads_per_group` best query heads of each, and
  the `d_ff` best MLP units of every layer (None = keep all). Returns (config, params)."""
  g = cfg.num_heads // cfg.num_kv_heads
  g_new = g if heads_per_group is None else int(heads_per_group)
  k_new = cfg.num_kv_heads if kv_heads is None else int(kv_heads)
  f_new = cfg.d_ff if d_ff is None else int(d_ff)
  if not 1 <= g_new <= g:
    raise ValueError(f'heads_per_group={g_new} must be in [1, {g}] (query heads per KV head).')
  if not 1 <= k_new <= cfg.num_kv_heads:
    raise ValueError(f'kv_heads={k_new} must be in [1, {cfg.num_kv_heads}].')
  if not 1 <= f_new <= cfg.d_ff:
    raise ValueError(f'd_ff={f_new} must be in [1, {cfg.d_ff}].')
  t = convert.from_genai(cfg, params)
  d, c, k = cfg.head_dim, cfg.d_model, cfg.num_kv_heads
  new_cfg = dataclasses.replace(cfg, num_heads=k_new * g_new, num_kv_heads=k_new, d_ff=f_new,
                                d_head=d)
  out = {name: x for name, x in t.items() if not name.split('.')[0].isdigit()}
  for i in range(cfg.num_layers):
    heads, units = head_and_unit_scores(cfg, t, i)
    # The best k_new KV groups, then per group the best g_new query heads (original order).
    keep_k = np.sort(np.argsort(-heads.sum(axis=1), kind='stable')[:k_new])
    keep_h = np.sort(np.argsort(-heads[keep_k], axis=1, kind='stable')[:, :g_new], axis=1)
    keep_h = (keep_h + g * keep_k[:, None]).ravel()
    keep_f = np.sort(np.argsort(-units, kind='stable')[:f_new])
    for name, x in t.items():
      layer, _, rest = name.partition('.')
      if layer != str(i):
        continue
      if rest in ('q', 'q.bias'):
        x = x.reshape(*x.shape[:-1], cfg.num_heads, d)[..., keep_h, :].reshape(*x.shape[:-1], -1)
      elif rest in ('k', 'v', 'k.bias', 'v.bias'):
        x = x.reshape(*x.shape[:-1], k, d)[..., keep_k, :].reshape(*x.shape[:-1], -1)
      elif rest == 'o':
        x = x.reshape(cfg.num_heads, d, c)[keep_h].reshape(-1, c)
      elif rest in ('fc_in', 'gate', 'up', 'fc_in.bias', 'gate.bias', 'up.bias'):
        x = x[..., keep_f]
      elif rest == 'fc_out':
        x = x[keep_f]
      out[name] = x
  return new_cfg, convert.to_genai(new_cfg, out, source='structured pruning')
