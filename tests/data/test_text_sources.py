"""Tests for genai.data.text_sources."""

import types

import pytest

from genai.data import text_sources


def cfg(**kw):
  return types.SimpleNamespace(**kw)


def test_embedded_nonempty_and_deterministic():
  a = text_sources.load_text(cfg(source='embedded'))
  b = text_sources.load_text(cfg(source='embedded'))
  assert a == b
  assert len(a) > 100_000
  assert 'the' in a


def test_files_single_glob_and_comma_list(tmp_path):
  (tmp_path / 'b.txt').write_text('bravo\n', encoding='utf-8')
  (tmp_path / 'a.txt').write_text('alpha\n', encoding='utf-8')
  (tmp_path / 'c.md').write_text('charlie\n', encoding='utf-8')
  single = text_sources.load_text(cfg(source='files', path=str(tmp_path / 'a.txt')))
  assert single == 'alpha\n'
  # Globs expand in sorted order regardless of creation order.
  globbed = text_sources.load_text(cfg(source='files', path=str(tmp_path / '*.txt')))
  assert globbed == 'alpha\nbravo\n'
  listed = text_sources.load_text(cfg(
      source='files', path=f'{tmp_path / "c.md"}, {tmp_path / "*.txt"}'))
  assert listed == 'alpha\nbravo\ncharlie\n'


def test_files_missing_and_empty(tmp_path):
  with pytest.raises(ValueError, match='matches no file'):
    text_sources.load_text(cfg(source='files', path=str(tmp_path / 'nope.txt')))
  with pytest.raises(ValueError, match='matches no file'):
    text_sources.load_text(cfg(source='files', path=str(tmp_path / '*.zzz')))
  with pytest.raises(ValueError, match='needs data.path'):
    text_sources.load_text(cfg(source='files'))
  (tmp_path / 'empty.txt').write_text('', encoding='utf-8')
  with pytest.raises(ValueError, match='holds no text: .*empty.txt is empty'):
    text_sources.load_text(cfg(source='files', path=str(tmp_path / 'empty.txt')))


def test_unknown_source():
  with pytest.raises(ValueError, match="'web' is not a known text source"):
    text_sources.load_text(cfg(source='web'))


@pytest.mark.parametrize('name', ['tiny_shakespeare', 'lm1b'])
def test_tfds_mock(name):
  tfds = pytest.importorskip('tensorflow_datasets')
  with tfds.testing.mock_data(num_examples=6):
    full = text_sources.load_text(cfg(source='tfds', tfds_name=name))
    few = text_sources.load_text(cfg(source='tfds', tfds_name=name,
                                     max_examples=2, tfds_split='train'))
    with pytest.raises(ValueError, match="no feature 'nope'"):
      text_sources.load_text(cfg(source='tfds', tfds_name=name,
                                 tfds_text_key='nope'))
  assert isinstance(full, str) and full
  assert full.count('\n') == 5  # 6 examples joined with newlines.
  assert few.count('\n') == 1 and full.startswith(few)


def test_tfds_unknown_name():
  pytest.importorskip('tensorflow_datasets')
  with pytest.raises(ValueError, match="'no_such_dataset_xyz' is not a known "
                     'TFDS dataset.*list_builders'):
    text_sources.load_text(cfg(source='tfds', tfds_name='no_such_dataset_xyz'))
  with pytest.raises(ValueError, match="cannot be built.*only: 1.0.0"):
    text_sources.load_text(cfg(source='tfds', tfds_name='tiny_shakespeare:9.9.9'))


def test_tfds_not_prepared(tmp_path):
  pytest.importorskip('tensorflow_datasets')
  with pytest.raises(ValueError, match="'tiny_shakespeare' is not prepared.*"
                     'tfds build tiny_shakespeare'):
    text_sources.load_text(cfg(source='tfds', tfds_name='tiny_shakespeare',
                               tfds_data_dir=str(tmp_path)))
