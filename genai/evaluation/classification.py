"""Accuracy and loss of a classifier over a whole split, in fixed-size masked batches."""
from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from genai.data import batching
from genai.objectives import classification


def make_eval_fn(logits_fn: Callable[[Any, jax.Array], jax.Array], batch_size: int, *,
                 binary: bool = False):
  """(params, inputs [N, ...], labels [N]) -> {'eval/accuracy', 'eval/loss'} over all N
  (and 'eval/precision', 'eval/recall' of class 1 when `binary`). One compiled shape: the
  last batch is padded and masked."""
  @jax.jit
  def sums(params, x, y, mask):
    return classification.masked_sums(logits_fn(params, x), y, mask)

  def evaluate(params, inputs, labels):
    n = len(inputs)
    out = []
    for real, (x, y) in batching.fixed_size_batches((inputs, labels), batch_size):
      out.append(sums(params, x, y, (np.arange(batch_size) < real).astype(np.float32)))
    total = {k: float(sum(o[k] for o in jax.device_get(out))) for k in out[0]}
    results = {'eval/accuracy': total['correct'] / n, 'eval/loss': total['nll'] / n}
    if binary:
      results['eval/precision'] = total['tp'] / total['pred_pos'] if total['pred_pos'] else 0.0
      results['eval/recall'] = total['tp'] / total['pos'] if total['pos'] else 0.0
    return results

  return evaluate
