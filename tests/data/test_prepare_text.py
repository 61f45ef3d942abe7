"""genai.data.prepare (text): shards decode back to exactly the corpus' tokens; the
manifest, parallel and serial runs agree; shards appear atomically; TFDS under the mock."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from genai.data import corpus_inputs
from genai.data import prepare
from genai.data import token_shards
from genai.data import tokenizers
from conftest import SHARED

SHAKESPEARE = SHARED / 'data/tinyshakespeare/input.txt'
GPT2_RANKS = SHARED / 'data/gpt2_bpe/gpt2.tiktoken'


def read_stream(root, split):
  """(all ids of a split in order, document start positions), from the shards."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  m = token_shards.read_manifest(str(root), split)
  ids, starts, offset = [], [], 0
  for path, shard in zip(token_shards.shard_paths(str(root), split, m), m['shards']):
    reader = array_record_module.ArrayRecordReader(path)
    records = reader.read_all()
    reader.close()
    assert len(records) == shard['num_records']
    for i, rec in enumerate(records):
      toks, s = token_shards.decode_record(rec, np.dtype(m['dtype']), path)
      if i < len(records) - 1:
        assert len(toks) == m['chunk_tokens']  # every record but a shard's last is full
      ids.append(toks.astype(np.int64))
      starts.extend((s + offset).tolist())
      offset += len(toks)
  return np.concatenate(ids), starts, m


def expected_stream(docs, tok, sep):
  parts, starts, pos = [], [], 0
  for d in docs:
    ids = tok.encode(d)
    starts.append(pos)
    parts += [ids, np.asarray(sep)]
    pos += len(ids) + len(sep)
  return np.concatenate(parts).astype(np.int64), starts


def paragraphs(text):
  """Paragraphs as prepare cuts them: at blank lines, without their trailing newline."""
  return [p.rstrip('\n') for p in re.split(r'\n[ \t\r\f\v]*\n', text) if p.strip()]


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  """Three text files: Shakespeare's first 60k characters cut in two, and Python's docs."""
  from pydoc_data import topics  # pylint: disable=g-import-not-at-top
  d = tmp_path_factory.mktemp('corpus')
  text = SHAKESPEARE.read_text()[:60_000]
  (d / 'a.txt').write_text(text[:35_000])
  (d / 'b.txt').write_text(text[35_000:])
  (d / 'c.txt').write_text('\n\n'.join(topics.topics[k] for k in sorted(topics.topics)[:40]))
  return d


@pytest.mark.parametrize('doc_split', ['file', 'paragraph', 'line'])
def test_char_shards_decode_to_the_corpus_exactly(corpus, tmp_path, doc_split):
  out = tmp_path / 'out'
  # Small pieces and records: several units per file, documents across records.
  manifests = prepare.prepare_text(str(out), inputs=[str(corpus / '*.txt')], doc_split=doc_split,
                                   tokenizer='char', piece_bytes=8_000, chunk_tokens=300,
                                   workers=1)
  files = sorted(corpus.glob('*.txt'))
  texts = [f.read_text() for f in files]
  if doc_split == 'file':
    docs = texts
  elif doc_split == 'paragraph':
    docs = [p for t in texts for p in paragraphs(t)]
  else:
    docs = [line for t in texts for line in t.split('\n') if line.strip()]
  tok = token_shards.load_prepared_tokenizer(str(out))
  assert tok.chars == ''.join(sorted(set(''.join(texts)) | {'\n'}))
  ids, starts, m = read_stream(out, 'train')
  want, want_starts = expected_stream(docs, tok, tok.encode('\n'))
  np.testing.assert_array_equal(ids, want)
  assert starts == want_starts
  assert m == manifests['train']
  assert m['num_docs'] == len(docs) and m['num_tokens'] == len(want)
  assert m['num_chars'] == sum(len(d) for d in docs)
  assert m['max_doc_tokens'] == max(len(d) for d in docs) or doc_split == 'file'
  assert m['tokenizer']['identity'] == tok.identity() and m['separator'] == list(tok.encode('\n'))
  assert m['dtype'] == 'uint16' and sum(s['num_tokens'] for s in m['shards']) == len(want)
  assert len(m['shards']) > 3  # the files were cut into several units
  if doc_split == 'file':  # documents are whole files even when cut into pieces
    assert tok.decode(want[:len(texts[0])]) == texts[0]
  assert not [f for f in os.listdir(out / 'train') if '.tmp-' in f]


def test_gpt2_bpe_jsonl_and_parallel_workers_match_serial(tmp_path):
  rows = [{'text': t, 'id': i} for i, t in enumerate(paragraphs(SHAKESPEARE.read_text()[:30_000]))]
  jsonl = tmp_path / 'rows.jsonl'
  jsonl.write_text('\n'.join(json.dumps(r) for r in rows) + '\n')
  tok = tokenizers.GPT2BPETokenizer(str(GPT2_RANKS))
  kw = dict(jsonl=[str(jsonl)], tokenizer='gpt2_bpe', bpe_ranks_path=str(GPT2_RANKS),
            piece_bytes=4_000, chunk_tokens=128, val_fraction=0.2)
  serial = prepare.prepare_text(str(tmp_path / 'serial'), workers=1, **kw)
  parallel = prepare.prepare_text(str(tmp_path / 'parallel'), workers=2, **kw)
  for split in ('train', 'validation'):
    a, sa, ma = read_stream(tmp_path / 'serial', split)
    b, sb, mb = read_stream(tmp_path / 'parallel', split)
    np.testing.assert_array_equal(a, b)
    assert sa == sb and ma['shards'] == mb['shards']
    assert serial[split]['separator'] == [tok.eos_id] == [50256]
    assert ma['tokenizer']['identity'] == tok.identity() and ma['dtype'] == 'uint16'
  # The split of every document is a stable hash of its text: together they are the rows.
  train = [r['text'] for r in rows if not prepare.route(r['text'], 0.2)]
  val = [r['text'] for r in rows if prepare.route(r['text'], 0.2)]
  assert 0.1 < len(val) / len(rows) < 0.3
  for split, docs in (('train', train), ('validation', val)):
    ids, starts, m = read_stream(tmp_path / 'serial', split)
    want, want_starts = expected_stream(docs, tok, [tok.eos_id])
    np.testing.assert_array_equal(ids, want)
    assert starts == want_starts and m['num_docs'] == len(docs)
    assert parallel[split]['num_tokens'] == len(want)


def test_piece_boundaries_fall_on_document_starts(tmp_path):
  path = tmp_path / 't.txt'
  path.write_text('alpha beta\n\n gamma\n\n\ndelta\nepsilon zeta\n' * 200)
  for split in corpus_inputs.DOC_SPLITS:
    bounds = corpus_inputs._piece_bounds(str(path), 100, split)  # pylint: disable=protected-access
    data = path.read_bytes()
    assert bounds[0] == 0 and bounds[-1] == len(data) and len(bounds) > 10
    for b in bounds[1:-1]:
      assert data[b - 1:b] == b'\n'
      if split == 'file':
        assert not data[b:b + 1].isspace()
      if split == 'paragraph':
        assert re.search(rb'\n[ \t\r]*\n$', data[:b])


def test_shards_appear_atomically_and_manifest_last(corpus, tmp_path, monkeypatch):
  """A unit that fails leaves no shard under a final name and no manifest; a rerun
  replaces an old preparation's shards and removes those it no longer lists."""
  out = tmp_path / 'out'
  prepare.prepare_text(str(out), inputs=[str(corpus / 'a.txt')], piece_bytes=5_000, workers=1)
  old = set(os.listdir(out / 'train'))
  assert 'manifest.json' in old and len(old) > 4
  real = corpus_inputs.documents
  calls = []

  def failing(unit):
    calls.append(unit)
    if len(calls) == 3:
      raise OSError('disk full')
    yield from real(unit)

  monkeypatch.setattr(corpus_inputs, 'documents', failing)
  with pytest.raises(OSError, match='disk full'):
    prepare.prepare_text(str(out), inputs=[str(corpus / 'a.txt')], piece_bytes=5_000, workers=1)
  assert not (out / 'train/manifest.json').exists()  # removed before any shard was rewritten
  assert not [f for f in os.listdir(out / 'train') if '.tmp-' in f]
  with pytest.raises(FileNotFoundError, match='manifest.json does not exist.*no complete split'):
    token_shards.read_manifest(str(out), 'train')
  monkeypatch.setattr(corpus_inputs, 'documents', real)
  prepare.prepare_text(str(out), inputs=[str(corpus / 'a.txt')], piece_bytes=20_000, workers=1)
  m = token_shards.read_manifest(str(out), 'train')
  assert sorted(os.listdir(out / 'train')) == sorted(
      ['manifest.json'] + [s['file'] for s in m['shards']])


@pytest.mark.parametrize('name', ['tiny_shakespeare', 'lm1b'])
def test_tfds_text_under_mock_data(tmp_path, name):
  """A TFDS text dataset by name, every example (no cap), through tfds.data_source."""
  tfds = pytest.importorskip('tensorflow_datasets')
  with tfds.testing.mock_data(num_examples=6):
    m = prepare.prepare_text(str(tmp_path / 'ts'), tfds=name, tfds_split='train',
                             tokenizer='char', workers=1)['train']
    src = tfds.data_source(name, split='train')
    docs = [src[i]['text'] for i in range(len(src))]
  docs = [d.decode() if isinstance(d, bytes) else d for d in docs]
  docs = [d for d in docs if d.strip()]
  tok = token_shards.load_prepared_tokenizer(str(tmp_path / 'ts'))
  ids, _, _ = read_stream(tmp_path / 'ts', 'train')
  np.testing.assert_array_equal(ids, expected_stream(docs, tok, tok.encode('\n'))[0])
  assert m['source'] == {'tfds': name, 'tfds_split': 'train', 'examples': 6}
  assert m['doc_split'] == 'example' and m['num_docs'] == len(docs)


def test_second_split_reuses_the_tokenizer(corpus, tmp_path):
  out = str(tmp_path / 'out')
  prepare.prepare_text(out, inputs=[str(corpus / 'a.txt')], tokenizer='gpt2_bpe',
                       bpe_ranks_path=str(GPT2_RANKS), workers=1)
  m = prepare.prepare_text(out, inputs=[str(corpus / 'b.txt')], split='test',
                           tokenizer='gpt2_bpe', bpe_ranks_path=str(GPT2_RANKS), workers=1)
  assert m['test']['tokenizer'] == token_shards.read_manifest(out, 'train')['tokenizer']
  with pytest.raises(ValueError, match='already holds data of a gpt2_bpe tokenizer'):
    prepare.prepare_text(out, inputs=[str(corpus / 'b.txt')], split='x', tokenizer='char')


def test_cli(corpus, tmp_path):
  env = {**os.environ, 'PYTHONPATH': str(prepare.__file__).rsplit('/genai/', 1)[0]}
  out = tmp_path / 'cli'
  proc = subprocess.run(
      [sys.executable, '-m', 'genai.data.prepare', '--out', str(out), '--inputs',
       str(corpus / 'a.txt'), str(corpus / 'b.txt'), '--doc_split', 'paragraph',
       '--val_fraction', '0.2', '--workers', '2', '--piece_mb', '0.01'],
      capture_output=True, text=True, env=env, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert re.search(r'/train: \d+ documents, \d+ tokens in \d+ shards', proc.stdout)
  m = token_shards.read_manifest(str(out), 'validation')
  assert m['command'].startswith('python -m genai.data.prepare --out')
  proc = subprocess.run([sys.executable, '-m', 'genai.data.prepare', '--out', str(out),
                         '--inputs', str(tmp_path / 'nothing*.txt')],
                        capture_output=True, text=True, env=env, timeout=60)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines() == [
      f"error: input '{tmp_path}/nothing*.txt' matches no file; pass existing files or globs "
      '(quote globs so the shell does not expand them).']


def test_tokenizer_identity_is_stable_and_tells_vocabularies_apart(tmp_path):
  text = SHAKESPEARE.read_text()[:20_000]
  char = tokenizers.CharTokenizer.from_text(text)
  gpt2 = tokenizers.GPT2BPETokenizer(str(GPT2_RANKS))
  sp = tokenizers.SentencePieceTokenizer.train(text, vocab_size=400)
  for i, tok in enumerate((char, gpt2, sp)):
    tok.save(str(tmp_path / str(i)))
    again = tokenizers.load_tokenizer(str(tmp_path / str(i)))
    assert again.identity() == tok.identity()
    assert re.fullmatch(rf'{tok.name}:[0-9a-f]{{64}}', tok.identity())
  assert char.identity() != tokenizers.CharTokenizer.from_text(text + '~').identity()
  assert len({char.identity(), gpt2.identity(), sp.identity()}) == 3


def test_sentencepiece_trained_on_the_inputs(corpus, tmp_path):
  out = str(tmp_path / 'sp')
  m = prepare.prepare_text(out, inputs=[str(corpus / 'c.txt')], doc_split='paragraph',
                           tokenizer='sentencepiece', vocab_size=400, workers=1)['train']
  tok = token_shards.load_prepared_tokenizer(out)
  assert tok.name == 'sentencepiece' and tok.vocab_size == 400
  docs = paragraphs((corpus / 'c.txt').read_text())
  ids, _, _ = read_stream(tmp_path / 'sp', 'train')
  np.testing.assert_array_equal(ids, expected_stream(docs, tok, [tok.eos_id])[0])
  assert m['separator'] == [tok.eos_id] and m['separator_text'] is None
