"""The LM's training objectives, chosen by one config field, with one signature:

  loss_fn(params, frozen, batch, rng) -> (loss, metrics)

`params` is what the optimizer trains (seen through the model the loss runs, e.g. the
adapters of a LoRA-wrapped model), `frozen` the state's frozen params the objective reads
('teacher' for distillation, 'reference' for DPO), `rng` the dropout key (None =
deterministic) and `metrics` the scalars logged beside the loss.

  'next_token'  next-token NLL on text (genai/objectives/lm.py)
  'sft'         the same NLL on prompt/response rows, counted on the responses only
  'dpo'         DPO on preference pairs against the frozen starting weights (dpo.py)
  'distill'     KD loss against a frozen teacher's logits (distill.py)

`config.objective` names it; empty (and in configs written before the field existed) it
follows from the data and the teacher: data.source 'dpo_jsonl' -> 'dpo', a distill.teacher
-> 'distill', data.source 'sft_jsonl' -> 'sft', else 'next_token'.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import ml_collections

from genai.objectives import distill
from genai.objectives import dpo
from genai.objectives import lm

LossFn = Callable[[Any, dict[str, Any], dict[str, jax.Array], jax.Array | None],
                  tuple[jax.Array, dict[str, jax.Array]]]
OBJECTIVES = ('next_token', 'sft', 'dpo', 'distill')


def objective_of(config: ml_collections.ConfigDict) -> str:
  """`config.objective`, or what the data and teacher imply when it is empty; a one-line
  error when it contradicts them."""
  source = config.data.source
  teacher = (config.get('distill') or {}).get('teacher') or ''
  implied = ('dpo' if source == 'dpo_jsonl' else 'distill' if teacher else
             'sft' if source == 'sft_jsonl' else 'next_token')
  name = config.get('objective') or implied
  if name not in OBJECTIVES:
    raise ValueError(f'objective={name!r} is unknown; use one of {OBJECTIVES} ("" = from '
                     'data.source and distill.teacher).')
  if bool(teacher) != (name == 'distill'):
    raise ValueError(f"objective={name!r} and distill.teacher={teacher!r} disagree: "
                     "'distill' needs a teacher, and a teacher is used by 'distill' only.")
  fits = {'next_token': source not in ('sft_jsonl', 'dpo_jsonl'), 'sft': source == 'sft_jsonl',
          'dpo': source == 'dpo_jsonl', 'distill': source != 'dpo_jsonl'}
  if not fits[name]:
    raise ValueError(f'objective={name!r} contradicts data.source={source!r} (which trains '
                     f'{implied!r}); set objective={implied!r} or change data.source.')
  return name


def make_loss_fn(config: ml_collections.ConfigDict, model: Any,
                 teacher_model: Any = None) -> LossFn:
  """The loss of `config`'s objective for `model` (the model the loss runs: QAT or LoRA
  wrapped as genai.families.lm.Training.wrap makes it)."""
  name = objective_of(config)
  if name == 'dpo':
    return dpo.dpo_objective(model, beta=float(config.dpo.beta),
                             sft_weight=float(config.dpo.get('sft_weight', 0.0)))
  if name == 'distill':
    return distill.distill_objective(model, teacher_model,
                                     temperature=float(config.distill.temperature),
                                     alpha=float(config.distill.alpha))
  return lm.next_token_objective(model)  # 'next_token' and 'sft' (the batch has the mask)
