"""Tests for genai.data.tokenizers."""

import json
import os
import types
from pathlib import Path

import numpy as np
import pytest

from genai.data import text_sources
from genai.data import tokenizers

# The repo is checked out at X/main with shared data at X/shared.
SHARED = Path(__file__).resolve().parents[2].parent / 'shared'
GPT2_RANKS = SHARED / 'data' / 'gpt2_bpe' / 'gpt2.tiktoken'
needs_gpt2 = pytest.mark.skipif(
    not GPT2_RANKS.is_file(), reason=f'GPT-2 ranks file not found at {GPT2_RANKS}')

# Newlines, runs of spaces, tabs, CR, unicode unseen in training, the
# SentencePiece space mark and strings that look like control symbols.
TRICKY = ('  Hello,  world!\n\n\tindented\r\n  naïve — 東京 🙂\n'
          'x\u2581y <s></s><unk> <|endoftext|> 0123456789 \n\n ')


def cfg(**kw):
  return types.SimpleNamespace(**kw)


@pytest.fixture(scope='module')
def corpus():
  return text_sources.embedded_text()


def test_char_round_trip_and_save(corpus, tmp_path):
  tok = tokenizers.make_tokenizer(cfg(name='char'), corpus, str(tmp_path))
  assert tok.name == 'char' and tok.eos_id is None
  assert tok.vocab_size == len(set(corpus))
  ids = tok.encode(corpus)
  assert ids.dtype == np.int32 and ids.ndim == 1 and len(ids) == len(corpus)
  assert tok.decode(ids) == corpus
  assert tok.decode(list(ids[:50])) == corpus[:50]
  meta = json.loads((tmp_path / 'tokenizer.json').read_text(encoding='utf-8'))
  assert meta == {'name': 'char', 'chars': ''.join(sorted(set(corpus)))}
  again = tokenizers.load_tokenizer(str(tmp_path))
  np.testing.assert_array_equal(again.encode(corpus[:1000]), ids[:1000])


def test_char_unknown_char_error():
  tok = tokenizers.CharTokenizer.from_text('hello world')
  with pytest.raises(ValueError, match=r"not in its vocabulary: '!', 'X'.*"
                     'training corpus'):
    tok.encode('hello X!')


@pytest.mark.parametrize('model_type', ['bpe', 'unigram'])
def test_sentencepiece_exact_round_trip(corpus, tmp_path, model_type):
  for ch in 'ï東🙂\u2581':
    assert ch not in corpus  # Really unseen in training.
  tok = tokenizers.make_tokenizer(
      cfg(name='sentencepiece', vocab_size=512, sp_model_type=model_type),
      corpus, str(tmp_path))
  assert tok.vocab_size == 512 and tok.eos_id is not None
  for text in (TRICKY, corpus[:20_000], '\n', ' ', ''):
    ids = tok.encode(text)
    assert ids.dtype == np.int32 and ids.ndim == 1
    assert tok.decode(ids) == text, repr(text[:80])
  assert (tmp_path / 'tokenizer.model').is_file()
  assert json.loads((tmp_path / 'tokenizer.json').read_text())['name'] == 'sentencepiece'


def test_sentencepiece_reused_not_retrained(corpus, tmp_path):
  tok_cfg = cfg(name='sentencepiece', vocab_size=400)
  first = tokenizers.make_tokenizer(tok_cfg, corpus, str(tmp_path))
  model = tmp_path / 'tokenizer.model'
  stamp = model.stat().st_mtime_ns
  # A different corpus would train a different model: reuse must ignore it.
  second = tokenizers.make_tokenizer(tok_cfg, 'completely different text ' * 50,
                                     str(tmp_path))
  assert model.stat().st_mtime_ns == stamp
  np.testing.assert_array_equal(first.encode(TRICKY), second.encode(TRICKY))
  with pytest.raises(ValueError, match='vocab_size=400 but tokenizer.vocab_size=512'):
    tokenizers.make_tokenizer(cfg(name='sentencepiece', vocab_size=512),
                              corpus, str(tmp_path))


def test_sentencepiece_vocab_too_large():
  with pytest.raises(ValueError, match='lower tokenizer.vocab_size'):
    tokenizers.make_tokenizer(cfg(name='sentencepiece', vocab_size=5000),
                              'tiny corpus\nof two lines', None)


@needs_gpt2
def test_gpt2_bpe(corpus, tmp_path):
  tok = tokenizers.make_tokenizer(
      cfg(name='gpt2_bpe', bpe_ranks_path=str(GPT2_RANKS)), corpus, str(tmp_path))
  assert tok.vocab_size == 50257 and tok.eos_id == 50256
  assert tok.encode('Hello world').tolist() == [15496, 995]
  assert tok.encode('Hello world!').tolist() == [15496, 995, 0]
  for text in (TRICKY, corpus[:20_000]):
    ids = tok.encode(text)
    assert ids.dtype == np.int32
    assert tok.decode(ids) == text
  meta = json.loads((tmp_path / 'tokenizer.json').read_text())
  assert meta == {'name': 'gpt2_bpe', 'bpe_ranks_path': str(GPT2_RANKS.resolve())}
  copy = tmp_path / 'gpt2.tiktoken'
  assert copy.read_bytes() == GPT2_RANKS.read_bytes()
  # The workdir is self-contained: loading prefers the copy.
  meta['bpe_ranks_path'] = str(tmp_path / 'moved_away.tiktoken')
  (tmp_path / 'tokenizer.json').write_text(json.dumps(meta))
  again = tokenizers.load_tokenizer(str(tmp_path))
  assert again.bpe_ranks_path == str(copy)
  assert again.encode('Hello world').tolist() == [15496, 995]


def test_gpt2_bpe_missing_file(tmp_path):
  with pytest.raises(ValueError, match='no such file.*r50k_base.tiktoken'):
    tokenizers.make_tokenizer(
        cfg(name='gpt2_bpe', bpe_ranks_path=str(tmp_path / 'gpt2.tiktoken')),
        'x', None)
  with pytest.raises(ValueError, match='bpe_ranks_path is not set'):
    tokenizers.make_tokenizer(cfg(name='gpt2_bpe'), 'x', None)


def test_make_tokenizer_without_workdir_saves_nothing(tmp_path):
  tok = tokenizers.make_tokenizer(cfg(name='char'), 'abc', None)
  assert tok.decode(tok.encode('cab')) == 'cab'


def test_name_mismatch_and_unknown_name(tmp_path):
  tokenizers.make_tokenizer(cfg(name='char'), 'abc', str(tmp_path))
  with pytest.raises(ValueError, match="holds a 'char' tokenizer but "
                     "tokenizer.name='sentencepiece'"):
    tokenizers.make_tokenizer(cfg(name='sentencepiece', vocab_size=300),
                              'abc', str(tmp_path))
  with pytest.raises(ValueError, match="'wordpiece' is not a known tokenizer.*"
                     "'char', 'sentencepiece', 'gpt2_bpe'"):
    tokenizers.make_tokenizer(cfg(name='wordpiece'), 'abc', str(tmp_path))


def test_resumed_char_vocab_is_reused(tmp_path):
  first = tokenizers.make_tokenizer(cfg(name='char'), 'abc', str(tmp_path))
  second = tokenizers.make_tokenizer(cfg(name='char'), 'xyz', str(tmp_path))
  assert second.vocab_size == first.vocab_size == 3
  assert second.decode([0, 1, 2]) == 'abc'


def test_load_tokenizer_missing(tmp_path):
  with pytest.raises(FileNotFoundError, match='no tokenizer.json in .*genai LM workdir'):
    tokenizers.load_tokenizer(str(tmp_path))


def test_config_dict_fields(tmp_path):
  ml_collections = pytest.importorskip('ml_collections')
  tok_cfg = ml_collections.ConfigDict({'name': 'char'})  # optional fields absent
  tok = tokenizers.make_tokenizer(tok_cfg, 'hello', str(tmp_path))
  assert os.path.isfile(tmp_path / 'tokenizer.json')
  assert tok.vocab_size == 4
