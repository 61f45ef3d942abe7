"""Preparation as an Apache Beam pipeline (DirectRunner) writes the same shards, byte for
byte, as the local process pool. Skipped where apache_beam is not installed (it is an
optional dependency; see docs/data_at_scale.md)."""
import filecmp

import pytest

from genai.data import image_shards
from genai.data import prepare
from genai.data import token_shards
from conftest import SHARED

try:
  import apache_beam  # pylint: disable=g-import-not-at-top,unused-import
  _SKIP = ''
except ImportError as e:
  _SKIP = f'apache_beam is not importable ({e}); pip install apache-beam==2.77.0 to run this'

pytestmark = pytest.mark.skipif(bool(_SKIP), reason=_SKIP or 'beam available')


def _same_split(a, b, split, kind=token_shards.FORMAT):
  ma, mb = token_shards.read_manifest(str(a), split, kind), token_shards.read_manifest(
      str(b), split, kind)
  assert ma['shards'] == mb['shards'] and ma.get('num_tokens') == mb.get('num_tokens')
  for s in ma['shards']:
    assert filecmp.cmp(a / split / s['file'], b / split / s['file'], shallow=False)


def test_beam_direct_runner_writes_what_the_local_pool_writes(tmp_path):
  text = (SHARED / 'data/tinyshakespeare/input.txt').read_text()[:80_000]
  (tmp_path / 'in.txt').write_text(text)
  kw = dict(inputs=[str(tmp_path / 'in.txt')], doc_split='paragraph', val_fraction=0.1,
            piece_bytes=10_000, chunk_tokens=512)
  prepare.prepare_text(str(tmp_path / 'local'), workers=2, **kw)
  beam = prepare.prepare_text(str(tmp_path / 'beam'), runner='DirectRunner', **kw)
  assert set(beam) == {'train', 'validation'}
  for split in beam:
    _same_split(tmp_path / 'local', tmp_path / 'beam', split)
  assert not list((tmp_path / 'beam').glob('.beam-results-*'))


def test_beam_images(tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for c in ('a', 'b'):
    (tmp_path / 'imgs' / c).mkdir(parents=True)
    for i in range(5):
      Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(
          tmp_path / 'imgs' / c / f'{i}.png')
  for runner, out in ((None, 'local'), ('DirectRunner', 'beam')):
    image_shards.prepare_images(str(tmp_path / out), folder=str(tmp_path / 'imgs'),
                                images_per_shard=4, runner=runner, workers=1)
  _same_split(tmp_path / 'local', tmp_path / 'beam', 'train', image_shards.FORMAT)
