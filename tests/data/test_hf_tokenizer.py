"""Tests for genai.data.tokenizers.HFTokenizer ('hf').

Without downloads: a tiny byte-level BPE is trained here with the `tokenizers` library in
SmolLM2's shape (Digits + ByteLevel), then read as a tokenizer.json, rebuilt from GGUF-style
metadata, saved into and loaded from a workdir; its chat template is rendered like HF's.
With the real SmolLM2-135M-Instruct GGUF (fetch it with `python -m genai.pretrained.fetch
smollm2`): ids and chat prompts equal transformers' own tokenizer for the same file.
"""
from __future__ import annotations

import importlib.util
import json
import os
import types
from pathlib import Path

import numpy as np
import pytest

from genai.data import text_sources
from genai.data import tokenizers
from genai.pretrained import fetch

hf_tokenizers = pytest.importorskip('tokenizers')

HAS_TRANSFORMERS = importlib.util.find_spec('transformers') is not None
needs_transformers = pytest.mark.skipif(
    not HAS_TRANSFORMERS, reason='transformers not installed (the HF reference)')
SMOLLM2 = fetch.smollm2_cache_path()
SHAKESPEARE = (Path(__file__).resolve().parents[2].parent / 'shared' / 'data' / 'tinyshakespeare'
               / 'input.txt')
SPECIALS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>']
CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\nBe brief.<|im_end|>\n' }}{% endif %}"
          "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
MESSAGES = [{'role': 'user', 'content': 'Hi there!'},
            {'role': 'assistant', 'content': 'Hello. 42 ways?'},
            {'role': 'user', 'content': 'naïve 東京 🙂'}]
# Digits (split one by one), runs of spaces, tabs, CR, unicode, emoji, special tokens.
STRINGS = ['Hello world!', 'In 2024, 1,234.56 apples cost $7.', '  leading\tand\r\n  trailing  ',
           "I'm sure they'll say it's fine", 'naïve café — 東京 🙂 Ünïcödé', '',
           '<|im_start|>user\nHi<|im_end|>\n', 'x<|endoftext|>y', '\n\n\n']


def cfg(**kw):
  return types.SimpleNamespace(**kw)


@pytest.fixture(scope='module')
def trained():
  """A tiny SmolLM2-shaped byte-level BPE (HF tokenizers object), trained on Python's docs."""
  from tokenizers import decoders, models, pre_tokenizers, trainers  # pylint: disable=import-outside-toplevel
  tok = hf_tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Digits(individual_digits=True),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIALS, show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator([text_sources.embedded_text()[:60_000]], trainer=trainer)
  return tok


@pytest.fixture
def tok_file(trained, tmp_path):
  """An HF model folder: tokenizer.json + tokenizer_config.json (bos/eos/chat template)."""
  path = tmp_path / 'hf' / 'tokenizer.json'
  path.parent.mkdir()
  trained.save(str(path))
  (path.parent / 'tokenizer_config.json').write_text(json.dumps({
      'bos_token': '<|im_start|>', 'eos_token': {'content': '<|im_end|>'},
      'chat_template': CHATML}))
  return path


def gguf_metadata(trained, pre: str = 'smollm') -> dict:
  """What a GGUF file of this tokenizer holds (llama.cpp's tokenizer.ggml.* keys)."""
  state = json.loads(trained.to_str())
  vocab = state['model']['vocab']
  tokens = sorted(vocab, key=vocab.get)
  assert [vocab[t] for t in tokens] == list(range(len(tokens)))
  return {'tokenizer.ggml.model': 'gpt2', 'tokenizer.ggml.pre': pre,
          'tokenizer.ggml.tokens': tokens,
          'tokenizer.ggml.token_type': [3 if t in SPECIALS else 1 for t in tokens],
          'tokenizer.ggml.merges': [' '.join(m) if isinstance(m, list) else m
                                    for m in state['model']['merges']],
          'tokenizer.ggml.bos_token_id': 1, 'tokenizer.ggml.eos_token_id': 2,
          'tokenizer.chat_template': CHATML}


def test_from_tokenizer_json_matches_hf_and_round_trips(trained, tok_file):
  tok = tokenizers.HFTokenizer.from_file(str(tok_file))
  assert tok.name == 'hf' and tok.vocab_size == trained.get_vocab_size()
  assert (tok.bos_id, tok.eos_id, tok.chat_template) == (1, 2, CHATML)
  corpus = text_sources.embedded_text()[100_000:120_000]
  for text in STRINGS + [corpus]:
    ids = tok.encode(text)
    assert ids.dtype == np.int32 and ids.ndim == 1
    assert ids.tolist() == trained.encode(text, add_special_tokens=False).ids, repr(text)
    assert tok.decode(ids) == text, repr(text)
  assert tok.encode('<|im_start|>').tolist() == [1]  # special tokens in text stay whole
  assert tok.encode('2024').tolist() == [tok.token_to_id(d) for d in '2024']


@pytest.mark.parametrize('pre', ['smollm', 'gpt-2'])
def test_from_gguf_metadata_matches_hf(trained, pre):
  reference = trained
  if pre == 'gpt-2':  # GPT-2's regex alone: digits are not split first.
    from tokenizers import pre_tokenizers  # pylint: disable=import-outside-toplevel
    reference = hf_tokenizers.Tokenizer.from_str(trained.to_str())
    reference.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  tok = tokenizers.HFTokenizer.from_gguf_metadata(gguf_metadata(trained, pre))
  assert (tok.bos_id, tok.eos_id, tok.vocab_size) == (1, 2, trained.get_vocab_size())
  pieces = [p for p, _ in tok._tok.pre_tokenizer.pre_tokenize_str('x 123')]
  assert pieces == (['x', 'Ġ', '1', '2', '3'] if pre == 'smollm' else ['x', 'Ġ123'])
  for text in STRINGS + [text_sources.embedded_text()[200_000:220_000]]:
    assert tok.encode(text).tolist() == reference.encode(text).ids, repr(text)
    assert tok.decode(tok.encode(text)) == text


def test_gguf_file_path_and_workdir_round_trip(trained, tmp_path):
  gguf = pytest.importorskip('gguf')
  meta = gguf_metadata(trained)
  path = tmp_path / 'tok.gguf'
  writer = gguf.GGUFWriter(str(path), 'llama')
  writer.add_tokenizer_model('gpt2')
  writer.add_tokenizer_pre('smollm')
  writer.add_token_list(meta['tokenizer.ggml.tokens'])
  writer.add_token_types(meta['tokenizer.ggml.token_type'])
  writer.add_token_merges(meta['tokenizer.ggml.merges'])
  writer.add_bos_token_id(1)
  writer.add_eos_token_id(2)
  writer.add_chat_template(CHATML)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  workdir = tmp_path / 'run'
  tok = tokenizers.make_tokenizer(cfg(name='hf', hf_tokenizer_path=str(path)), '', str(workdir))
  saved = json.loads((workdir / 'tokenizer.json').read_text(encoding='utf-8'))
  assert saved['name'] == 'hf' and saved['hf_file'] == 'hf_tokenizer.json'
  assert (saved['bos_id'], saved['eos_id'], saved['chat_template']) == (1, 2, CHATML)
  # hf_tokenizer.json is HF's own format: the `tokenizers` library reads it as it is.
  hf_copy = hf_tokenizers.Tokenizer.from_file(str(workdir / 'hf_tokenizer.json'))
  again = tokenizers.load_tokenizer(str(workdir))
  reused = tokenizers.make_tokenizer(cfg(name='hf', hf_tokenizer_path='/moved/away.gguf'), '',
                                     str(workdir))
  for text in STRINGS:
    want = trained.encode(text).ids
    assert tok.encode(text).tolist() == want
    assert again.encode(text).tolist() == want and reused.encode(text).tolist() == want
    assert hf_copy.encode(text).ids == want
  assert (again.bos_id, again.eos_id, again.chat_template) == (1, 2, CHATML)
  assert again.apply_chat_template(MESSAGES) == tok.apply_chat_template(MESSAGES)


def test_chat_template_renders_chatml(tok_file):
  tok = tokenizers.HFTokenizer.from_file(str(tok_file))
  assert tok.apply_chat_template(MESSAGES[:1]) == (
      '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there!<|im_end|>\n'
      '<|im_start|>assistant\n')
  system = [{'role': 'system', 'content': 'S'}, {'role': 'user', 'content': 'U'}]
  assert tok.apply_chat_template(system, add_generation_prompt=False) == (
      '<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n')
  ids = tok.encode(tok.apply_chat_template(MESSAGES))
  assert ids[0] == 1 and (ids == 2).sum() == 4  # <|im_start|> first; four <|im_end|>


@needs_transformers
@pytest.mark.parametrize('add_generation_prompt', [True, False])
def test_chat_template_equals_transformers(trained, tok_file, add_generation_prompt):
  from transformers import PreTrainedTokenizerFast  # pylint: disable=import-outside-toplevel
  template = ('{{ bos_token }}{% for m in messages %}{% if m.role == "user" %}U: '
              '{{ m.content | trim }}\n{% elif m.role == "assistant" %}A: {{ m.content }}'
              '{{ eos_token }}\n{% else %}{{ raise_exception("bad role") }}{% endif %}'
              '{% endfor %}{% if add_generation_prompt %}A:{% endif %}')
  ref = PreTrainedTokenizerFast(tokenizer_object=trained, bos_token='<|im_start|>',
                                eos_token='<|im_end|>')
  ours = tokenizers.HFTokenizer.from_file(str(tok_file))
  for tmpl in (CHATML, template):
    ours.chat_template = tmpl
    want = ref.apply_chat_template(MESSAGES, chat_template=tmpl, tokenize=False,
                                   add_generation_prompt=add_generation_prompt)
    assert ours.apply_chat_template(MESSAGES, add_generation_prompt) == want
  with pytest.raises(ValueError, match='failed to render.*bad role'):
    ours.apply_chat_template([{'role': 'tool', 'content': 'x'}])


def test_errors(trained, tok_file, tmp_path):
  meta = gguf_metadata(trained)
  with pytest.raises(ValueError, match="tokenizer.ggml.pre='qwen2' is not supported.*smollm"):
    tokenizers.HFTokenizer.from_gguf_metadata({**meta, 'tokenizer.ggml.pre': 'qwen2'})
  with pytest.raises(ValueError, match="tokenizer.ggml.model='llama' is not supported"):
    tokenizers.HFTokenizer.from_gguf_metadata({**meta, 'tokenizer.ggml.model': 'llama'})
  no_template = tokenizers.HFTokenizer.from_gguf_metadata(
      {k: v for k, v in meta.items() if k != 'tokenizer.chat_template'}, source='x.gguf')
  with pytest.raises(ValueError, match='x.gguf has no chat template'):
    no_template.apply_chat_template(MESSAGES)
  bad = tmp_path / 'bad.json'
  bad.write_text('{"not": "a tokenizer"}')
  with pytest.raises(ValueError, match='bad.json is not a valid HF tokenizer.json'):
    tokenizers.HFTokenizer.from_file(str(bad))
  with pytest.raises(ValueError, match='hf_tokenizer_path.*no such file'):
    tokenizers.make_tokenizer(cfg(name='hf', hf_tokenizer_path=str(tmp_path / 'x.json')),
                              '', None)
  with pytest.raises(ValueError, match='needs tokenizer.hf_tokenizer_path'):
    tokenizers.make_tokenizer(cfg(name='hf'), '', None)
  workdir = tmp_path / 'run'
  tokenizers.make_tokenizer(cfg(name='hf', hf_tokenizer_path=str(tok_file)), '', str(workdir))
  os.remove(workdir / 'hf_tokenizer.json')
  with pytest.raises(FileNotFoundError, match='hf_tokenizer.json.*is missing'):
    tokenizers.load_tokenizer(str(workdir))


# ------------------------------------------------------- the real SmolLM2-135M-Instruct.


@pytest.fixture(scope='module')
def smollm2():
  """(genai tokenizer, transformers tokenizer) of the SmolLM2 GGUF."""
  if not SMOLLM2.is_file():
    pytest.skip(f'SmolLM2 GGUF not cached at {SMOLLM2}; run `{fetch.FETCH_COMMAND} smollm2`.')
  if not HAS_TRANSFORMERS:
    pytest.skip('transformers not installed (the HF reference)')
  os.environ.setdefault('HF_HUB_OFFLINE', '1')
  from transformers import AutoTokenizer  # pylint: disable=import-outside-toplevel
  ref = AutoTokenizer.from_pretrained(str(SMOLLM2.parent), gguf_file=SMOLLM2.name)
  return tokenizers.HFTokenizer.from_file(str(SMOLLM2)), ref


@pytest.mark.slow  # the real SmolLM2 file
def test_smollm2_ids_equal_transformers(smollm2):
  tok, ref = smollm2
  assert (tok.vocab_size, tok.bos_id, tok.eos_id) == (49152, 1, 2)
  assert tok.add_bos_token is False
  texts = list(STRINGS)
  if SHAKESPEARE.is_file():
    texts.append(SHAKESPEARE.read_text(encoding='utf-8')[:20_000])
  for text in texts:
    ids = tok.encode(text)
    assert ids.tolist() == ref(text, add_special_tokens=False).input_ids, repr(text[:60])
    assert tok.decode(ids) == text
  assert tok.encode('Hello world!').tolist() == [19556, 905, 17]


@pytest.mark.slow  # the real SmolLM2 file
@pytest.mark.parametrize('n', [1, 3])
def test_smollm2_chat_template_equals_transformers(smollm2, n):
  tok, ref = smollm2
  for gen in (True, False):
    want = ref.apply_chat_template(MESSAGES[:n], tokenize=False, add_generation_prompt=gen)
    assert tok.apply_chat_template(MESSAGES[:n], add_generation_prompt=gen) == want
  system = [{'role': 'system', 'content': 'You are terse.'}] + MESSAGES[:n]
  want = ref.apply_chat_template(system, tokenize=False, add_generation_prompt=True)
  got = tok.apply_chat_template(system)
  assert got == want
  assert tok.encode(got).tolist() == ref(want, add_special_tokens=False).input_ids


@pytest.mark.slow  # a training
def test_lm_config_trains_with_an_hf_tokenizer(tok_file, tmp_path):
  """tokenizer.hf_tokenizer_path is a config field (so --config.tokenizer.hf_tokenizer_path=
  works), and the LM experiment trains a model over that tokenizer's vocabulary."""
  from configs.lm import pydoc_char  # pylint: disable=import-outside-toplevel
  from experiments import lm  # pylint: disable=import-outside-toplevel
  config = pydoc_char.get_config('runlocal')
  assert config.tokenizer.hf_tokenizer_path == ''
  config.tokenizer.name, config.tokenizer.hf_tokenizer_path = 'hf', str(tok_file)
  state = lm.train_and_evaluate(config, str(tmp_path / 'w'))
  assert int(state['step']) == config.train.num_steps
  assert tokenizers.load_tokenizer(str(tmp_path / 'w')).vocab_size == 600
  assert state['params']['embed']['embedding'].shape[0] >= 600
