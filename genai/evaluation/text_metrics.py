"""Language-model metrics: perplexity, bits per token/character, BLEU."""
from __future__ import annotations

import math
from typing import Sequence


def perplexity(mean_nll: float) -> float:
  """exp of the mean negative log-likelihood per token (nats)."""
  return math.exp(mean_nll)


def bits_per_token(mean_nll: float) -> float:
  return mean_nll / math.log(2)


def bits_per_char(mean_nll: float, chars_per_token: float) -> float:
  """Bits per character of text whose tokens average `chars_per_token` characters."""
  return mean_nll / math.log(2) / chars_per_token


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
  """Corpus BLEU (sacrebleu defaults: 13a tokenisation, 4-grams), 0..100."""
  import sacrebleu  # pylint: disable=g-import-not-at-top
  if len(hypotheses) != len(references):
    raise ValueError(f'{len(hypotheses)} hypotheses but {len(references)} references.')
  if not hypotheses:
    raise ValueError('BLEU needs at least one hypothesis/reference pair.')
  return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)
