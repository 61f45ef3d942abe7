"""The model registry on a bucket path (etils epath): the same calls as on a local folder.

No bucket is reachable here, so `gs://bucket/...` is served by epath's own test double
(`epath.testing.mock_epath`) that maps it onto a local folder: this checks that every read
and write of the registry goes through epath (an `open` or `os.path` call would miss the
mock and fail on the gs:// path), not a real bucket's consistency."""
import json
import os

from etils import epath
from etils.epath import testing as epath_testing

from genai.feedback.registry import Registry
from genai.serve import reload


def _to_local(tmp_path):
  def local(path):
    path = os.fspath(path)
    return str(tmp_path / path[len('gs://'):]) if path.startswith('gs://') else path
  return local


def test_registry_in_a_bucket(tmp_path, lm_workdir, monkeypatch):
  # With TensorFlow installed epath sends gs:// to tf.io.gfile, past the mock.
  monkeypatch.setattr(epath.gpath, '_is_tf_installed', lambda: False)
  local = _to_local(tmp_path / 'bucket')
  calls = []

  def through(name):
    def fn(original, path, *args, **kw):
      calls.append((name, os.fspath(path)))
      return original(local(path), *args, **kw)
    return fn

  with epath_testing.mock_epath(**{n: through(n) for n in (
      'open', 'exists', 'makedirs', 'mkdir', 'isdir', 'replace', 'rename', 'remove')}):
    reg = Registry('gs://models/registry')
    assert reg.root == 'gs://models/registry' and not reg.exists()
    v1 = reg.init(lm_workdir)
    assert v1['workdir'] == lm_workdir and reg.served_version() == 'v1'
    reg.add(lm_workdir, parent='v1', metrics={}, data={}, promote=True, reasons=[])
    version_fn, _ = reload.registry_fns('gs://models/registry')
    assert version_fn(None) == 'v2' and reg.rollback()['version'] == 'v1'
    assert version_fn(None) == 'v1'
  assert {name for name, path in calls if path.startswith('gs://models/registry')} >= {
      'open', 'exists'}
  on_disk = json.loads((tmp_path / 'bucket/models/registry/registry.json').read_text())
  assert on_disk['current'] == 'v1' and [v['version'] for v in on_disk['versions']] == ['v1', 'v2']
  assert os.listdir(tmp_path / 'bucket/models/registry') == ['registry.json']  # no lock, no temp
