"""Two jax processes (gloo on localhost) read prepared windows: together they read every
window of an epoch exactly once, and still do after both are killed (SIGKILL) and resumed
from their saved iterator states; each host's batches equal an uninterrupted run's."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from genai.data import packed_windows
from genai.data import prepare

SCRIPT = os.path.join(os.path.dirname(__file__), 'packed_host_run.py')
BLOCK, BATCH = 16, 8


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _hosts(tmp_path, root, phase, batches):
  port = _free_port()
  procs = []
  for pid in (0, 1):
    cmd = [sys.executable, SCRIPT, '--root', root, '--process_id', str(pid),
           '--coordinator', f'127.0.0.1:{port}', '--phase', str(phase),
           '--batches', str(batches), '--block', str(BLOCK), '--batch', str(BATCH),
           '--state', str(tmp_path / f'state{pid}.json'),
           '--out', str(tmp_path / f'phase{phase}_{pid}.json')]
    procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env={**os.environ, 'JAX_PLATFORMS': 'cpu'}))
  return procs


def _result(tmp_path, phase, pid):
  return json.loads((tmp_path / f'phase{phase}_{pid}.json').read_text())


@pytest.mark.slow  # jax processes killed and resumed
def test_two_hosts_read_each_window_once_across_a_kill(tmp_path):
  rng = np.random.default_rng(0)
  letters = np.array(list('abcdefghijklmnopqrstuvwxyz'))
  docs = [''.join(rng.choice(letters, rng.integers(10, 80))) for _ in range(150)]
  (tmp_path / 'docs.txt').write_text('\n'.join(docs))
  root = str(tmp_path / 'prepared')
  prepare.prepare_text(root, inputs=[str(tmp_path / 'docs.txt')], doc_split='line',
                       chunk_tokens=64, workers=1)
  n = len(packed_windows.PackedWindows(root, 'train', block_size=BLOCK))
  share = [len(range(p, n, 2)) for p in (0, 1)]
  first = 3  # batches before the checkpoint

  procs = _hosts(tmp_path, root, 1, first)
  deadline = time.time() + 120
  while not all((tmp_path / f'phase1_{p}.json').exists() for p in (0, 1)):
    for p in procs:
      assert p.poll() is None, p.communicate()[1][-3000:]
    assert time.time() < deadline, 'hosts did not reach their checkpoint'
    time.sleep(0.1)
  time.sleep(0.3)  # both read on past the checkpoint
  for p in procs:
    p.send_signal(signal.SIGKILL)
  for p in procs:
    p.communicate(timeout=30)
    assert p.returncode == -signal.SIGKILL

  rest = max(-(-(s - first * BATCH) // BATCH) for s in share)
  procs = _hosts(tmp_path, root, 2, rest)
  for p in procs:
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-3000:]

  epoch = []
  for pid in (0, 1):
    r1, r2 = _result(tmp_path, 1, pid), _result(tmp_path, 2, pid)
    assert (r1['process_index'], r1['process_count']) == (pid, 2)
    ids = r1['ids'] + r2['ids']
    epoch += ids[:share[pid]]
    # The same windows, in the same order, as one uninterrupted iterator of this host.
    it = iter(packed_windows.make_train_dataset(
        packed_windows.PackedWindows(root, 'train', block_size=BLOCK), batch_size=BATCH,
        seed=11, shard_index=pid, shard_count=2))
    windows = packed_windows.PackedWindows(root, 'train', block_size=BLOCK)
    every = windows.gather(np.arange(n))
    index = {every['inputs'][i].tobytes() + every['targets'][i][-1:].tobytes(): i
             for i in range(n)}
    straight = [index[b['inputs'][i].tobytes() + b['targets'][i][-1:].tobytes()]
                for b in (next(it) for _ in range(first + rest)) for i in range(BATCH)]
    assert ids == straight
  assert sorted(epoch) == list(range(n))  # every window once: none twice, none missing
