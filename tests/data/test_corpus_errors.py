"""Unreadable text corpora (genai/data/text_sources.py) name the file, the position and the
fix: a binary file, a file in another encoding, an empty corpus."""
import types

import pytest

from genai import errors
from genai.data import text_sources


def _cfg(path):
  return types.SimpleNamespace(source='files', path=str(path))


def test_a_binary_file_is_named_with_the_offset(tmp_path):
  f = tmp_path / 'model.bin'
  f.write_bytes(b'ELF\x00\x01\x02' + bytes(range(128, 256)))
  with pytest.raises(errors.DataError) as e:
    text_sources.load_text(_cfg(f))
  assert str(e.value) == (
      f'{f} looks like a binary file, not text (a NUL byte at offset 3; byte 0x80 at offset '
      '6, line 1, column 7 is not UTF-8); point data.path at text files only (check the glob)')


def test_another_encoding_names_line_and_column(tmp_path):
  f = tmp_path / 'latin1.txt'
  f.write_bytes('first line\nna\u00efve caf\u00e9\n'.encode('latin-1'))
  with pytest.raises(errors.DataError) as e:
    text_sources.load_text(_cfg(tmp_path / '*.txt'))
  assert str(e.value) == (
      f'{f} is not UTF-8 text: byte 0xef at offset 13 (line 2, column 3) cannot be decoded '
      f'(invalid continuation byte); convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8 {f} > '
      'fixed.txt), or drop it from data.path')


def test_an_empty_corpus_names_its_files(tmp_path):
  (tmp_path / 'a.txt').write_text('')
  with pytest.raises(errors.DataError, match=r"data.path='\S+/a.txt' holds no text: \S+/a.txt "
                     r'is empty \(0 bytes\); point data.path at non-empty UTF-8 text'):
    text_sources.load_text(_cfg(tmp_path / 'a.txt'))
  (tmp_path / 'b.txt').write_text('')
  with pytest.raises(errors.DataError, match='all 2 files it matches are empty'):
    text_sources.load_text(_cfg(tmp_path / '*.txt'))
  assert errors.is_user_error(errors.DataError('x')) and issubclass(errors.DataError, ValueError)
