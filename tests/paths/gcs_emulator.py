"""The `gcs` fixture: fake_gcs.py (an in-memory Google Cloud Storage server) on a loopback
port, for the tests of the path layer: every `gs://` read and write of genai (etils epath
through fsspec's gcsfs, orbax's arrays through TensorStore's gcs driver) goes to it, offline."""
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

BUCKET = 'genai-test'


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module')
def gcs():
  """{'env': the environment a subprocess needs to reach the emulator, 'bucket': 'gs://...'}."""
  pytest.importorskip('gcsfs', reason='needs gcsfs (the `test` extra)')
  port = _free_port()
  url = f'http://127.0.0.1:{port}'
  proc = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), 'fake_gcs.py'),
                           f'--port={port}', f'--bucket={BUCKET}'])
  t0 = time.time()
  while True:
    try:
      urllib.request.urlopen(f'{url}/storage/v1/b/{BUCKET}', timeout=1).read()
      break
    except OSError:
      if proc.poll() is not None or time.time() - t0 > 30:
        proc.kill()
        pytest.fail(f'fake_gcs.py did not start on {url}')
      time.sleep(0.1)
  env = dict(os.environ, EPATH_USE_TF='false', STORAGE_EMULATOR_HOST=url,
             TENSORSTORE_GCS_HTTP_URL=url, GOOGLE_AUTH_TOKEN_FOR_TESTING='offline',
             TF_CPP_MIN_LOG_LEVEL='2', PYTHONUNBUFFERED='1', NO_GCE_CHECK='true')
  yield {'env': env, 'bucket': f'gs://{BUCKET}', 'url': url}
  proc.kill()
  proc.wait()


def list_objects(gcs, prefix: str) -> list[str]:
  """Object names under `prefix` (JSON API, no client library)."""
  import json  # pylint: disable=import-outside-toplevel
  import urllib.parse  # pylint: disable=import-outside-toplevel
  q = urllib.parse.urlencode({'prefix': prefix})
  with urllib.request.urlopen(f'{gcs["url"]}/storage/v1/b/{BUCKET}/o?{q}', timeout=10) as r:
    return [item['name'] for item in json.load(r).get('items', [])]
