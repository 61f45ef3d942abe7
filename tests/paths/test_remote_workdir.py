"""A run whose workdir and data live in a bucket (the GCS emulator of conftest.py):
train, SIGKILL, resume bit-identically, sample and export, every byte through gs://."""
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from gcs_emulator import BUCKET, gcs, list_objects  # pylint: disable=unused-import

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow  # training subprocesses against a local server

CORPUS = ('To be, or not to be, that is the question:\n'
          'Whether tis nobler in the mind to suffer\n') * 40
RUN = ['--config.train.num_steps=100', '--config.train.checkpoint_every=20',
       '--config.train.eval_every=1000', '--config.train.log_every=50']


def _upload(gcs, name: str, data: bytes) -> None:
  q = urllib.parse.urlencode({'uploadType': 'media', 'name': name})
  req = urllib.request.Request(f'{gcs["url"]}/upload/storage/v1/b/{BUCKET}/o?{q}', data=data,
                               method='POST', headers={'Content-Type': 'text/plain'})
  urllib.request.urlopen(req, timeout=10).read()


def _cmd(workdir, data_path, *overrides):
  return [sys.executable, '-m', 'experiments.lm', '--config',
          'configs/lm/pydoc_char.py:runlocal', f'--workdir={workdir}',
          '--config.data.source=files', f'--config.data.path={data_path}',
          '--config.model.d_model=64', '--config.model.num_layers=2',
          '--config.data.block_size=32', '--config.train.batch_size=16',
          '--config.eval.sample_tokens=0', *overrides]


def _committed_steps(gcs, prefix):
  """Steps whose checkpoint orbax finished (on GCS it marks them with commit_success.txt)."""
  pat = re.compile(re.escape(prefix) + r'checkpoints/(\d+)/commit_success\.txt$')
  return sorted(int(m.group(1)) for n in list_objects(gcs, prefix) if (m := pat.match(n)))


def test_train_kill_resume_sample_export_in_a_bucket(gcs, tmp_path):
  env = gcs['env']
  local_data = tmp_path / 'corpus.txt'
  local_data.write_text(CORPUS)
  _upload(gcs, 'data/corpus.txt', CORPUS.encode())
  remote = f'{gcs["bucket"]}/runs/lm'

  # An uninterrupted local run: the reference.
  ref = tmp_path / 'ref'
  subprocess.run(_cmd(ref, local_data, *RUN), cwd=REPO, env=env, check=True,
                 capture_output=True)

  # The same run in the bucket, with its data read from a glob in the bucket, killed after
  # its first committed checkpoint.
  cmd = _cmd(remote, f'{gcs["bucket"]}/data/*.txt', *RUN)
  log = tmp_path / 'killed.log'  # a file, not a pipe nobody reads while it runs
  with open(log, 'w') as f:
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
  t0 = time.time()
  while not _committed_steps(gcs, 'runs/lm/'):
    assert proc.poll() is None, log.read_text()[-3000:]
    assert time.time() - t0 < 300, 'no checkpoint appeared in the bucket'
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = _committed_steps(gcs, 'runs/lm/')[-1]
  assert killed_at < 100, killed_at

  out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
  assert out.returncode == 0, out.stdout + out.stderr
  assert f'Resumed from step {killed_at} in {remote}/checkpoints' in out.stdout

  # The bucket holds the whole workdir (only process 0 wrote), TensorBoard events included.
  names = list_objects(gcs, 'runs/lm/')
  for want in ('config.json', 'tokenizer.json', 'model_config.json', 'checkpoints/100/'):
    assert any(n.startswith(f'runs/lm/{want}') for n in names), (want, names[:20])
  assert any('events.out.tfevents' in n for n in names), names[:20]
  assert not any(n.startswith('runs/lm/gs:') for n in names)

  # Final params equal the uninterrupted local run's, bit for bit.
  compare = (
      'import sys, numpy as np, jax\n'
      'from genai.families import lm\n'
      'a = jax.tree.leaves(lm.load_workdir(sys.argv[1])[2])\n'
      'b = jax.tree.leaves(lm.load_workdir(sys.argv[2])[2])\n'
      'assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))\n'
      'print("identical", len(a))\n')
  out = subprocess.run([sys.executable, '-c', compare, str(ref), remote], cwd=REPO, env=env,
                       capture_output=True, text=True)
  assert out.returncode == 0 and 'identical' in out.stdout, out.stdout + out.stderr

  # Sampling and export read the bucket's workdir; the export goes to the bucket.
  out = subprocess.run([sys.executable, '-m', 'experiments.lm', f'--workdir={remote}', '--sample',
                        '--prompt=To be', '--num_tokens=12', '--temperature=0'],
                       cwd=REPO, env=env, capture_output=True, text=True)
  assert out.returncode == 0, out.stdout + out.stderr
  assert 'To be' in out.stdout
  exported = f'{gcs["bucket"]}/exports/lm'
  out = subprocess.run([sys.executable, '-m', 'genai.export', f'--workdir={remote}',
                        f'--out={exported}', '--format=saved_model', '--prompt_len=4',
                        '--num_tokens=4'], cwd=REPO, env=env, capture_output=True, text=True)
  assert out.returncode == 0, out.stdout + out.stderr
  names = list_objects(gcs, 'exports/lm/')
  assert 'exports/lm/export_info.json' in names, names
  assert 'exports/lm/saved_model/1/saved_model.pb' in names, names
