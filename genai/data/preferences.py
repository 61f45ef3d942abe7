"""Preference pairs for DPO: JSONL rows {"prompt", "chosen", "rejected"}.

Each pair becomes two SFT examples (prompt + chosen, prompt + rejected; genai/data/sft.py
encodes them, with the mask on response tokens only) stacked on axis 1: arrays [N, 2, T],
index 0 the chosen response, 1 the rejected one. The sft iterator and eval batches work on
them unchanged (they index the leading axis).
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from genai.data import sft

KEYS = ('prompt', 'chosen', 'rejected')


def read_jsonl(path: str) -> list[dict[str, Any]]:
  if not os.path.exists(path):
    raise FileNotFoundError(f'data.path={path!r} does not exist; give a JSONL file of '
                            '{"prompt", "chosen", "rejected"} rows (e.g. from '
                            'FeedbackStore.export_dpo).')
  rows = []
  with open(path, encoding='utf-8') as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except ValueError as e:
        raise ValueError(f'{path}:{n} is not valid JSON ({e}).') from None
      missing = [k for k in KEYS if not isinstance(row.get(k), str)]
      if missing:
        raise ValueError(f'{path}:{n} needs string fields {KEYS}; missing or not text: '
                         f'{missing}.')
      rows.append(row)
  if not rows:
    raise ValueError(f'{path} holds no preference pairs.')
  return rows


def encode_pairs(rows: list[dict[str, Any]], tokenizer, block_size: int, source: str = 'DPO'
                 ) -> dict[str, np.ndarray]:
  """{'inputs', 'targets' int32 [N, 2, T], 'mask' float32 [N, 2, T]}; [:, 0] is chosen."""
  chosen = sft.encode_examples([{'prompt': r['prompt'], 'response': r['chosen']} for r in rows],
                               tokenizer, block_size, source)
  rejected = sft.encode_examples([{'prompt': r['prompt'], 'response': r['rejected']}
                                  for r in rows], tokenizer, block_size, source)
  return {k: np.stack([chosen[k], rejected[k]], axis=1) for k in chosen}
