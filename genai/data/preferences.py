"""Preference pairs for DPO: JSONL rows {"prompt", "chosen", "rejected"}.

Each pair becomes two SFT examples (prompt + chosen, prompt + rejected; genai/data/sft.py
encodes them, with the mask on response tokens only) stacked on axis 1: arrays [N, 2, T],
index 0 the chosen response, 1 the rejected one. The sft iterator and eval batches work on
them unchanged (they index the leading axis).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from genai.data import sft

KEYS = ('prompt', 'chosen', 'rejected')


def read_jsonl(path: str) -> list[dict[str, Any]]:
  def check(row):
    missing = [k for k in KEYS if not isinstance(row.get(k), str)]
    return (f'needs string fields {KEYS}; missing or not text: {missing}.' if missing
            else None)
  return sft.read_rows(path, expected='{"prompt", "chosen", "rejected"} rows (e.g. from '
                       'FeedbackStore.export_dpo)', check=check, empty='preference pairs')


def encode_pairs(rows: list[dict[str, Any]], tokenizer, block_size: int, source: str = 'DPO'
                 ) -> dict[str, np.ndarray]:
  """{'inputs', 'targets' int32 [N, 2, T], 'mask' float32 [N, 2, T]}; [:, 0] is chosen."""
  chosen = sft.encode_examples([{'prompt': r['prompt'], 'response': r['chosen']} for r in rows],
                               tokenizer, block_size, source)
  rejected = sft.encode_examples([{'prompt': r['prompt'], 'response': r['rejected']}
                                  for r in rows], tokenizer, block_size, source)
  return {k: np.stack([chosen[k], rejected[k]], axis=1) for k in chosen}
