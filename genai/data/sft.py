"""Supervised fine-tuning data: prompt/response pairs with the loss on responses only.

A JSONL file, one example per line, either
  {"prompt": "...", "response": "..."}                       (plain text; the prompt is
                                                              encoded as is)
  {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}
                                                             (chat: the last message must be
                                                              the assistant's response; the
                                                              rest is rendered with the
                                                              tokenizer's chat template)
Each example becomes tokens = prompt + response (+ EOS), cut to block_size + 1 and padded;
`mask` is 1 exactly on the targets that are response tokens (EOS included), so the loss
ignores the prompt and the padding. The last `val_fraction` of the examples is validation.
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from genai.data import batching


def read_rows(path: str, *, expected: str, check, empty: str = 'examples'
              ) -> list[dict[str, Any]]:
  """The JSON objects of a JSONL file (blank lines skipped). `check(row)` returns what is
  wrong with a row, or None; errors name the file and line; `expected` describes the rows
  in the missing-file error."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'data.path={path!r} does not exist; give a JSONL file of '
                            f'{expected}.')
  rows = []
  with open(path, encoding='utf-8') as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except ValueError as e:
        raise ValueError(f'{path}:{n} is not valid JSON ({e}).') from None
      problem = check(row)
      if problem:
        raise ValueError(f'{path}:{n} {problem}')
      rows.append(row)
  if not rows:
    raise ValueError(f'{path} holds no {empty}.')
  return rows


def read_jsonl(path: str) -> list[dict[str, Any]]:
  def check(row):
    if not ({'prompt', 'response'} <= set(row) or 'messages' in row):
      return (f'needs "prompt" and "response" keys or a "messages" list; got '
              f'{sorted(row)}.')
    return None
  return read_rows(path, expected='{"prompt", "response"} or {"messages": [...]} rows',
                   check=check)


def prompt_and_response(row: dict[str, Any], tokenizer, where: str) -> tuple[str, str]:
  if 'messages' not in row:
    return row['prompt'], row['response']
  msgs = row['messages']
  if not msgs or msgs[-1].get('role') != 'assistant':
    raise ValueError(f'{where}: the last message must have role "assistant" (the response).')
  template = getattr(tokenizer, 'apply_chat_template', None)
  if template is None or getattr(tokenizer, 'chat_template', None) is None:
    raise ValueError(f'{where}: "messages" rows need a tokenizer with a chat template '
                     '(e.g. model.init_from=smollm2); use "prompt"/"response" rows otherwise.')
  return template(msgs[:-1], add_generation_prompt=True), msgs[-1]['content']


def encode_examples(rows: list[dict[str, Any]], tokenizer, block_size: int, source: str = 'SFT'
                    ) -> dict[str, np.ndarray]:
  """{'inputs', 'targets' int32 [N, T], 'mask' float32 [N, T]} with T = block_size."""
  n = len(rows)
  tokens = np.zeros((n, block_size + 1), np.int32)
  resp = np.zeros((n, block_size + 1), np.float32)
  eos = getattr(tokenizer, 'eos_id', None)
  for i, row in enumerate(rows):
    prompt, response = prompt_and_response(row, tokenizer, f'{source} row {i + 1}')
    p = list(tokenizer.encode(prompt))
    r = list(tokenizer.encode(response)) + ([eos] if eos is not None else [])
    ids = (p + r)[:block_size + 1]
    if len(p) >= len(ids):
      raise ValueError(f'{source} row {i + 1}: the prompt alone has {len(p)} tokens, which '
                       f'leaves no response inside data.block_size + 1 = {block_size + 1}; '
                       'raise data.block_size or shorten the prompt.')
    tokens[i, :len(ids)] = ids
    resp[i, len(p):len(ids)] = 1.0
  return {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:], 'mask': resp[:, 1:]}


def split(examples: dict[str, np.ndarray], val_fraction: float):
  n = len(examples['inputs'])
  n_val = int(round(n * val_fraction))
  if n - n_val < 1:
    raise ValueError(f'{n} SFT examples leave none for training with data.val_fraction='
                     f'{val_fraction}.')
  return ({k: v[:n - n_val] for k, v in examples.items()},
          {k: v[n - n_val:] for k, v in examples.items()})


class _Gather:
  def __init__(self, arrays):
    self.arrays = arrays

  def __call__(self, idx):
    return {k: np.ascontiguousarray(v[idx]) for k, v in self.arrays.items()}


def make_train_iterator(examples: dict[str, np.ndarray], *, batch_size: int, seed: int):
  """Endless shuffled batches (per-host shard), with grain get_state()/set_state()."""
  index, count = batching.resolve_shard(None, None)
  n = len(examples['inputs'])
  if batching.items_per_shard(n, index, count) < batch_size:
    raise ValueError(f'{n} SFT training examples are fewer than one batch per host '
                     f'({batch_size}); lower train.batch_size or add examples.')
  ds = batching.index_batches(n, batch_size=batch_size, seed=seed, shard_index=index,
                              shard_count=count)
  return iter(ds.map(_Gather(examples)).to_iter_dataset(batching.NO_PREFETCH))


def eval_batches(examples: dict[str, np.ndarray], batch_size: int) -> list[dict[str, np.ndarray]]:
  n = len(examples['inputs'])
  return [{k: v[i:i + batch_size] for k, v in examples.items()} for i in range(0, n, batch_size)]
