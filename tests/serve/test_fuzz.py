"""A schemathesis fuzz pass over the OpenAPI schema of a running server: no 5xx, every
response documented (status, content type, body schema), 405s with Allow headers.

`positive_data_acceptance` is left out: a schema-valid request can still be refused with a
422 by limits the schema cannot state (prompt + max_tokens within the model context, a
prompt the tokenizer cannot read)."""
import os
import shutil
import subprocess
import sys

import pytest

from genai.serve import api
from genai.serve import limits as limits_lib
from genai.serve import models
from serving_helpers import make_engine, running_server

pytestmark = pytest.mark.slow  # a fuzz pass over the schema (minutes)


def test_schemathesis_finds_no_server_errors(lm_workdir, tmp_path):
  served = models.load(lm_workdir)
  engine = make_engine(served)
  cli = shutil.which('schemathesis', path=os.path.dirname(sys.executable)) or 'schemathesis'
  app = api.make_app(served, engine=engine,
                     limits=limits_lib.Limits(api_keys=frozenset({'k'}), max_new_tokens=32))
  try:
    with running_server(app) as base:
      r = subprocess.run(
          [cli, 'run', f'{base}/openapi.json', '--checks', 'all', '--exclude-checks',
           'positive_data_acceptance', '--max-examples', '60', '--seed', '0', '--workers', '1',
           '--generation-database', 'none', '-H', 'Authorization: Bearer k'],
          cwd=tmp_path, capture_output=True, text=True, timeout=600)
  finally:
    engine.stop()
  assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
  assert ' passed' in r.stdout
