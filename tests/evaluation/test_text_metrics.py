"""Perplexity, bits per char/token and BLEU against closed forms and sacrebleu's known values."""
import math

import pytest

from genai.evaluation import text_metrics


def test_perplexity_and_bits_closed_forms():
  # A uniform model over V symbols: nll = ln V, perplexity = V, bits/token = log2 V.
  nll = math.log(65)
  assert text_metrics.perplexity(nll) == pytest.approx(65)
  assert text_metrics.bits_per_token(nll) == pytest.approx(math.log2(65))
  assert text_metrics.bits_per_char(nll, chars_per_token=2.0) == pytest.approx(math.log2(65) / 2)


def test_bleu_identity_and_disjoint():
  refs = ['the cat sat on the mat today', 'a quick brown fox jumps over it']
  assert text_metrics.bleu(refs, refs) == pytest.approx(100.0)
  assert text_metrics.bleu(['zz yy xx ww vv uu tt'] * 2, refs) == pytest.approx(0.0)


def test_bleu_partial_match_known_value():
  # Hand computation: hypothesis "the cat sat on the mat" vs reference
  # "the cat sat on the red mat": precisions 6/6, 4/5, 3/4, 2/3; brevity penalty exp(1 - 7/6).
  want = math.exp(1 - 7 / 6) * math.exp((math.log(1) + math.log(4 / 5) + math.log(3 / 4)
                                          + math.log(2 / 3)) / 4) * 100
  got = text_metrics.bleu(['the cat sat on the mat'], ['the cat sat on the red mat'])
  assert got == pytest.approx(want, rel=1e-4)


def test_bleu_bad_input():
  with pytest.raises(ValueError, match='2 hypotheses but 1 references'):
    text_metrics.bleu(['a', 'b'], ['a'])
  with pytest.raises(ValueError, match='at least one'):
    text_metrics.bleu([], [])
