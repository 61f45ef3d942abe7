"""genai.paths, the one path layer: local behaviour (fast) and the same calls on a bucket of
the fake GCS server (slow: a subprocess with the emulator's environment)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from genai import paths
from gcs_emulator import gcs  # pylint: disable=unused-import

REPO = Path(__file__).resolve().parents[2]


def _tree(root: Path):
  (root / 'a' / 'b').mkdir(parents=True)
  (root / 'x.txt').write_text('x')
  (root / 'a' / 'y.txt').write_text('yy')
  (root / 'a' / 'b' / 'z.bin').write_bytes(b'zzz')


def test_local_paths_are_absolute_and_uris_are_kept(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert os.fspath(paths.path('w')) == str(tmp_path / 'w')
  assert paths.join('w', 'checkpoints') == str(tmp_path / 'w' / 'checkpoints')
  assert os.fspath(paths.path('~/w')) == os.path.expanduser('~/w')
  assert paths.join('gs://bucket/run', 'checkpoints', '10') == 'gs://bucket/run/checkpoints/10'
  assert paths.is_remote('gs://b/x') and paths.is_remote('s3://b/x')
  assert not paths.is_remote('/tmp/x') and not paths.is_remote('runs/x')


def test_walk_files_glob_and_sizes_match_os(tmp_path):
  _tree(tmp_path)
  want = [(str(r), sorted(d), sorted(f)) for r, d, f in os.walk(tmp_path)]
  got = [(os.fspath(r), d, f) for r, d, f in paths.walk(tmp_path)]
  assert sorted(got) == sorted(want)
  assert [os.fspath(p) for p in paths.files_under(tmp_path)] == sorted(
      os.path.join(r, n) for r, _, f in os.walk(tmp_path) for n in f)
  assert paths.tree_bytes(tmp_path) == 6
  assert paths.glob_files(f'{tmp_path}/*.txt') == [str(tmp_path / 'x.txt')]
  assert paths.glob_files(f'{tmp_path}/a/*') == [str(tmp_path / 'a' / 'y.txt')]  # files only
  assert paths.glob_files(f'{tmp_path}/none*') == []
  assert paths.glob_files(str(tmp_path / 'x.txt')) == [str(tmp_path / 'x.txt')]


def test_json_copy_and_upload_round_trip(tmp_path):
  paths.write_json(tmp_path / 'new' / 'c.json', {'a': [1, 2]})
  assert paths.read_json(tmp_path / 'new' / 'c.json') == {'a': [1, 2]}
  _tree(tmp_path / 'src')
  with paths.local_copy(tmp_path / 'src') as local:  # a local path is itself
    assert local == str(tmp_path / 'src')
  paths.upload_tree(str(tmp_path / 'src'), tmp_path / 'dst')
  assert (tmp_path / 'dst' / 'a' / 'b' / 'z.bin').read_bytes() == b'zzz'
  assert paths.tree_bytes(tmp_path / 'dst') == paths.tree_bytes(tmp_path / 'src')


REMOTE = r'''
import os, sys, tempfile
from genai import paths
b = sys.argv[1]
paths.write_json(f'{b}/t/c.json', {'a': 1})
assert paths.read_json(f'{b}/t/c.json') == {'a': 1}
src = tempfile.mkdtemp()
os.makedirs(f'{src}/a/b')
for name, data in (('x.txt', b'x'), ('a/y.txt', b'yy'), ('a/b/z.bin', b'zzz')):
  open(f'{src}/{name}', 'wb').write(data)
paths.upload_tree(src, f'{b}/t/tree')
assert paths.tree_bytes(f'{b}/t/tree') == 6
walked = [(os.fspath(r), d, f) for r, d, f in paths.walk(f'{b}/t/tree')]
assert walked == [(f'{b}/t/tree', ['a'], ['x.txt']), (f'{b}/t/tree/a', ['b'], ['y.txt']),
                  (f'{b}/t/tree/a/b', [], ['z.bin'])], walked
assert [os.fspath(p) for p in paths.files_under(f'{b}/t/tree')] == [
    f'{b}/t/tree/a/b/z.bin', f'{b}/t/tree/a/y.txt', f'{b}/t/tree/x.txt']
assert paths.glob_files(f'{b}/t/tree/*.txt') == [f'{b}/t/tree/x.txt']
assert paths.glob_files(f'{b}/t/tree/a/*') == [f'{b}/t/tree/a/y.txt']
with paths.local_copy(f'{b}/t/tree') as local:
  assert not paths.is_remote(local)
  assert open(f'{local}/a/b/z.bin', 'rb').read() == b'zzz'
with paths.local_copy(f'{b}/t/tree/a/y.txt') as local:
  assert open(local, 'rb').read() == b'yy'
print('ok')
'''


@pytest.mark.slow  # a subprocess against the fake GCS server
def test_the_same_calls_on_a_bucket(gcs):
  out = subprocess.run([sys.executable, '-c', REMOTE, gcs['bucket']], cwd=REPO, env=gcs['env'],
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and out.stdout.strip().endswith('ok'), out.stderr[-3000:]
