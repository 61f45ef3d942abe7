"""A non-editable install of genai (the wheel's files only: no experiments/, no configs/)
serves and exports trained workdirs: the library reads every family's workdir itself."""
import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import REPO, load_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
  """A folder holding only the installed genai package, and a cwd outside the repo."""
  root = tmp_path_factory.mktemp('installed')
  target, cwd = root / 'site', root / 'cwd'
  cwd.mkdir()
  r = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps',
                      '--no-build-isolation', '--target', str(target), str(REPO)],
                     capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  assert not (target / 'experiments').exists() and (target / 'genai/families').is_dir()
  return target, cwd


def _run(installed, *args, **kw):
  target, cwd = installed
  env = dict(os.environ, PYTHONPATH=str(target), TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def test_the_installed_copy_is_the_one_imported(installed):
  p = _run(installed, '-c', 'import genai, importlib.util as u; print(genai.__file__); '
           'print(u.find_spec("experiments"))')
  out, _ = p.communicate(timeout=60)
  assert str(installed[0]) in out.splitlines()[0] and out.splitlines()[1] == 'None', out


def test_serves_an_lm_workdir(installed, lm_workdir):
  sys.path.insert(0, str(REPO / 'tests/serve'))
  from serving_helpers import free_port  # pylint: disable=g-import-not-at-top
  port = free_port()
  server = _run(installed, '-m', 'genai.serve', f'--workdir={lm_workdir}', f'--port={port}',
                '--num_slots=2')
  try:
    url = f'http://127.0.0.1:{port}'
    deadline = time.time() + 240
    while True:
      assert server.poll() is None, server.stdout.read()[-3000:]
      try:
        with urllib.request.urlopen(f'{url}/healthz', timeout=2):
          break
      except OSError:
        assert time.time() < deadline, 'the server did not come up in 240 s'
        time.sleep(1)
    body = json.dumps({'prompt': 'The ', 'max_tokens': 5, 'temperature': 0}).encode()
    req = urllib.request.Request(f'{url}/v1/completions', body,
                                 {'Content-Type': 'application/json'})
    with urllib.request.urlopen(req, timeout=60) as r:
      reply = json.load(r)
    assert reply['usage']['completion_tokens'] == 5 and reply['choices'][0]['text']
  finally:
    server.terminate()
    server.wait(timeout=30)


def test_exports_a_gan_workdir(installed, tmp_path):
  from experiments import gan  # pylint: disable=g-import-not-at-top
  config = load_config(REPO / 'configs/gan/digits.py')
  config.train.num_steps = config.train.checkpoint_every = 2
  config.train.steps_per_call = 1
  workdir = str(tmp_path / 'gan')
  gan.train_and_evaluate(config, workdir)
  p = _run(installed, '-m', 'genai.export', f'--workdir={workdir}', f'--out={tmp_path}/out',
           '--format=tflite', '--batch_size=2')
  out, _ = p.communicate(timeout=600)
  assert p.returncode == 0, out[-3000:]
  info = json.loads((tmp_path / 'out/export_info.json').read_text())
  assert info['family'] == 'gan' and 'sample.tflite' in info['files']
