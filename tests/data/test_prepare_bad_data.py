"""Bad data at preparation and at reading: each a one-line error naming the file and the
fix, or a counted skip with a warning."""
import json
import logging
import os

import numpy as np
import pytest

from genai.data import packed_windows
from genai.data import prepare
from genai.data import token_shards
from genai.data import tokenizers

TEXT = ''.join(f'Line {i}: the quick brown fox jumps over the lazy dog.\n' for i in range(400))


def one_line(excinfo) -> str:
  msg = str(excinfo.value)
  assert '\n' not in msg, msg
  return msg


@pytest.fixture
def prepared(tmp_path):
  (tmp_path / 'in').mkdir()
  (tmp_path / 'in/a.txt').write_text(TEXT)
  out = tmp_path / 'out'
  prepare.prepare_text(str(out), inputs=[str(tmp_path / 'in/a.txt')], doc_split='line',
                       val_fraction=0.2, chunk_tokens=256, piece_bytes=4000, workers=1)
  return out


def test_empty_and_binary_files_are_skipped_and_counted(tmp_path, caplog):
  (tmp_path / 'good.txt').write_text(TEXT)
  (tmp_path / 'empty.txt').write_text('')
  (tmp_path / 'blank.txt').write_text('  \n\n \t\n')
  (tmp_path / 'image.txt').write_bytes(b'\x89PNG\r\n\x1a\n\0\0\0\rIHDR' + bytes(range(256)))
  with caplog.at_level(logging.WARNING):
    m = prepare.prepare_text(str(tmp_path / 'out'), inputs=[str(tmp_path / '*.txt')],
                             workers=1)['train']
  assert m['num_docs'] == 1
  assert m['skipped']['empty_files'] == {'count': 2, 'examples': [
      str(tmp_path / 'blank.txt'), str(tmp_path / 'empty.txt')]}
  assert m['skipped']['binary_files'] == {'count': 1, 'examples': [str(tmp_path / 'image.txt')]}
  assert 'skipped 2 empty files' in caplog.text and '1 binary file' in caplog.text
  # Nothing left to prepare: one line naming them.
  with pytest.raises(ValueError) as e:
    prepare.prepare_text(str(tmp_path / 'out2'),
                         inputs=[str(tmp_path / 'empty.txt'), str(tmp_path / 'image.txt')])
  assert one_line(e) == (
      f'no text to prepare: every input was skipped: 1 empty file ({tmp_path}/empty.txt), '
      f'1 binary file ({tmp_path}/image.txt); pass non-empty UTF-8 text files.')


def test_non_utf8_file_is_an_error_naming_the_byte_and_the_fix(tmp_path):
  path = tmp_path / 'latin1.txt'
  path.write_bytes(TEXT[:100].encode() + 'café'.encode('latin-1') + b'\n' + TEXT[:50].encode())
  with pytest.raises(ValueError) as e:
    prepare.prepare_text(str(tmp_path / 'out'), inputs=[str(path)], workers=1)
  assert one_line(e) == (
      f'{path}: byte 103 is not UTF-8 (invalid continuation byte); convert the file to UTF-8 '
      '(e.g. iconv -f latin1 -t utf-8), or pass --encoding_errors=replace to read bad bytes '
      'as U+FFFD.')
  assert not (tmp_path / 'out/train/manifest.json').exists()
  m = prepare.prepare_text(str(tmp_path / 'out'), inputs=[str(path)], workers=1,
                           encoding_errors='replace')['train']
  tok = token_shards.load_prepared_tokenizer(str(tmp_path / 'out'))
  assert '\ufffd' in tok.chars and m['num_docs'] == 1


def test_bad_jsonl_lines(tmp_path):
  path = tmp_path / 'rows.jsonl'
  path.write_text('{"text": "one"}\n\n{"text": "two"\n')
  with pytest.raises(ValueError) as e:
    prepare.prepare_text(str(tmp_path / 'out'), jsonl=[str(path)], workers=1)
  assert one_line(e).startswith(f'{path}:3: not a JSON object (')
  assert one_line(e).endswith('fix the line, or prepare the file as plain text.')
  path.write_text('{"text": "one"}\n{"body": "two"}\n')
  with pytest.raises(ValueError) as e:
    prepare.prepare_text(str(tmp_path / 'out'), jsonl=[str(path)], workers=1)
  assert one_line(e) == (f"{path}:2: no text field 'text' (has ['body']); pass --text_key "
                         'with the field that holds the text.')


def test_corrupt_truncated_and_missing_shards(prepared):
  m = token_shards.read_manifest(str(prepared), 'train')
  shard = prepared / 'train' / m['shards'][0]['file']
  good = shard.read_bytes()
  windows = packed_windows.PackedWindows(str(prepared), 'train', block_size=32)
  everything = windows.gather(np.arange(len(windows)))
  # Bytes flipped inside the records (before the zero padding up to the 64 KiB block and
  # the index): the reader's chunk hash catches it.
  data_end = good.index(bytes(256))
  assert data_end > 1000
  bad = bytearray(good)
  for i in range(data_end // 2, data_end // 2 + 8):
    bad[i] ^= 0xFF
  shard.write_bytes(bytes(bad))
  with pytest.raises(ValueError) as e:
    packed_windows.PackedWindows(str(prepared), 'train', block_size=32).gather(
        np.arange(len(windows)))
  assert one_line(e).startswith(f'{shard} (or another shard of {prepared}/train) is corrupt (')
  assert one_line(e).endswith('; prepare the data again.')
  # Truncated (a copy cut short): its size differs from the manifest's.
  shard.write_bytes(good[:-1000])
  with pytest.raises(ValueError) as e:
    packed_windows.PackedWindows(str(prepared), 'train', block_size=32)
  assert one_line(e) == (f'{shard} is {len(good) - 1000} bytes but the manifest says '
                         f'{len(good)}: the shard is truncated or corrupt; prepare the data '
                         'again.')
  os.remove(shard)
  with pytest.raises(FileNotFoundError) as e:
    packed_windows.PackedWindows(str(prepared), 'train', block_size=32)
  assert one_line(e) == (f'{shard} is missing (listed in train/manifest.json); restore it or '
                         'prepare the data again.')
  shard.write_bytes(good)
  again = packed_windows.PackedWindows(str(prepared), 'train', block_size=32)
  np.testing.assert_array_equal(again.gather(np.arange(len(windows)))['inputs'],
                                everything['inputs'])


def test_record_checksum():
  rec = token_shards.encode_record(np.arange(10), np.array([0, 4]), np.uint16)
  toks, starts = token_shards.decode_record(rec, np.uint16, 'x')
  assert toks.tolist() == list(range(10)) and starts.tolist() == [0, 4]
  bad = rec[:-1] + bytes([rec[-1] ^ 1])
  with pytest.raises(ValueError, match='^x is corrupt .a record fails its checksum.; prepare'):
    token_shards.decode_record(bad, np.uint16, 'x')


def test_manifest_and_tokenizer_mismatch(prepared, tmp_path):
  other = tokenizers.CharTokenizer.from_text(TEXT + 'Z')
  with pytest.raises(ValueError) as e:
    packed_windows.prepared_lm_data(str(prepared), tokenizer=other, block_size=16,
                                    batch_size=2, seed=0)
  want = token_shards.load_prepared_tokenizer(str(prepared)).identity()
  assert one_line(e) == (
      f'{prepared}/train/manifest.json was tokenized with char tokenizer {want[5:17]} but '
      f'training uses char tokenizer {other.identity()[5:17]}; train with the prepared '
      f'tokenizer ({prepared}/tokenizer) or prepare the data again with this one.')
  # The same vocabulary is accepted, however it was built.
  same = tokenizers.CharTokenizer(token_shards.load_prepared_tokenizer(str(prepared)).chars)
  packed_windows.prepared_lm_data(str(prepared), tokenizer=same, block_size=16, batch_size=2,
                                  seed=0)
  with pytest.raises(FileNotFoundError) as e:
    packed_windows.prepared_lm_data(str(prepared), block_size=16, batch_size=2, seed=0,
                                    val_split='test')
  assert one_line(e) == (
      f"{prepared}/test/manifest.json does not exist: its complete splits are ['train', "
      f"'validation']; run python -m genai.data.prepare --out {prepared} ... --split test to "
      'prepare it.')
  with pytest.raises(FileNotFoundError, match='holds no complete split'):
    packed_windows.prepared_lm_data(str(tmp_path / 'nowhere'), block_size=16, batch_size=2,
                                    seed=0)
  (tmp_path / 'foreign/train').mkdir(parents=True)
  (tmp_path / 'foreign/train/manifest.json').write_text(json.dumps({'format': 'other'}))
  with pytest.raises(ValueError, match="has format 'other', not 'genai.tokens/1'"):
    token_shards.read_manifest(str(tmp_path / 'foreign'), 'train')


def test_block_size_against_documents(prepared, caplog):
  m = token_shards.read_manifest(str(prepared), 'train')
  longest = m['max_doc_tokens']
  assert longest < 60  # one line per document
  with caplog.at_level(logging.WARNING):
    _, _, info = packed_windows.prepared_lm_data(str(prepared), block_size=longest + 10,
                                                 batch_size=2, seed=0)
  assert (f'block_size={longest + 10} is longer than every document (longest {longest} '
          f'tokens of {m["num_docs"]} documents)') in caplog.text
  assert info.train_windows == (m['num_tokens'] - 1) // (longest + 10)
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    packed_windows.prepared_lm_data(str(prepared), block_size=longest - 1, batch_size=2, seed=0)
  assert 'longer than every document' not in caplog.text
  val_tokens = token_shards.read_manifest(str(prepared), 'validation')['num_tokens']
  with pytest.raises(ValueError) as e:
    packed_windows.prepared_lm_data(str(prepared), block_size=val_tokens, batch_size=2, seed=0)
  assert one_line(e) == (f'{prepared}/validation holds {val_tokens} tokens but one window needs '
                         f'data.block_size + 1 = {val_tokens + 1}; lower data.block_size or '
                         'prepare more text.')


def test_beam_runner_without_beam_is_one_line(prepared, tmp_path):
  try:
    import apache_beam  # pylint: disable=g-import-not-at-top,unused-import
    pytest.skip('apache_beam is installed: tests/data/test_prepare_beam.py runs the pipeline')
  except ImportError:
    pass
  with pytest.raises(ImportError) as e:
    prepare.prepare_text(str(tmp_path / 'b'), inputs=[str(prepared / '../in/a.txt')],
                         runner='DirectRunner')
  assert one_line(e).startswith('--runner needs Apache Beam, which is not installed: pip '
                                'install "apache-beam==2.77.0"')
