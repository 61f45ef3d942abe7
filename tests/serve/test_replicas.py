"""Two `python -m genai.serve --registry ROOT` processes on their own loopback ports, one
PostgreSQL feedback database and one registry: a promotion switches both without dropping
a request in flight, every response names the version that made it, and feedback given on
either replica lands in the one database (benchmarks/serve_replicas.py's helpers)."""
import concurrent.futures
import os
import shutil
import subprocess
import sys
import threading
import time

import httpx
import pytest

from benchmarks import serve_replicas
from genai.feedback import local_postgres
from genai.feedback.registry import Registry
from genai.feedback.store import FeedbackStore


@pytest.mark.slow
def test_two_replicas_follow_one_registry_and_share_one_database(tmp_path, lm_workdir):
  reason = local_postgres.missing()
  if reason:
    pytest.skip(reason + '; .ci/run installs it')
  pg = local_postgres.shared()
  db_url = pg.create_database('replicas')
  for v in ('v1', 'v2'):
    shutil.copytree(lm_workdir, tmp_path / v)
  reg = Registry(str(tmp_path / 'registry'))
  reg.init(str(tmp_path / 'v1'))
  ports = serve_replicas.free_ports(2)
  procs = serve_replicas.start_replicas(reg.root, db_url, ports, slots=2,
                                        reload_interval=0.3, log_dir=str(tmp_path),
                                        extra=('--steps_per_tick=4',))
  rows, stop, lock = [], threading.Event(), threading.Lock()

  def client(k: int) -> None:
    with httpx.Client(timeout=120) as c:
      i = 0
      while not stop.is_set() and i < 200:  # bounded either way
        port, other = ports[(k + i) % 2], ports[(k + i + 1) % 2]
        r = c.post(f'http://127.0.0.1:{port}/v1/completions',
                   json={'prompt': 'The ', 'max_tokens': 40, 'seed': i})
        row = {'port': port, 'status': r.status_code, 'body': r.json(), 't': time.monotonic()}
        if r.status_code == 200:  # rated on the other replica
          row['rating'] = c.post(f'http://127.0.0.1:{other}/v1/feedback',
                                 json={'generation_id': r.json()['id'], 'rating': 'up'}
                                 ).status_code
        with lock:
          rows.append(row)
        i += 1

  try:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
      futures = [pool.submit(client, k) for k in range(4)]
      time.sleep(3)  # requests on v1 on both replicas
      promoted = time.monotonic()
      reg.add(str(tmp_path / 'v2'), parent='v1', metrics={}, data={}, promote=True,
              reasons=[])
      deadline = time.monotonic() + 90
      while time.monotonic() < deadline:
        with lock:
          switched = {r['port'] for r in rows
                      if r['status'] == 200 and r['body']['system_fingerprint'] == 'v2'}
        if switched == set(ports):
          break
        time.sleep(0.2)
      time.sleep(1)  # a few more requests on v2
      stop.set()
      for f in futures:
        f.result()
    ready = [httpx.get(f'http://127.0.0.1:{p}/readyz', timeout=10).json() for p in ports]
  finally:
    serve_replicas.stop_replicas(procs)
  failed = [r for r in rows if r['status'] != 200]
  assert rows and not failed, failed[:3]
  assert all(r['rating'] == 200 for r in rows)
  assert [(r['status'], r['version']) for r in ready] == [('ready', 'v2')] * 2
  for port in ports:  # each replica: v1 until it switched, then only v2
    versions = [r['body']['system_fingerprint'] for r in rows if r['port'] == port]
    assert versions[0] == 'v1' and versions[-1] == 'v2', versions
    assert versions == sorted(versions), versions
  assert any(r['t'] > promoted and r['body']['system_fingerprint'] == 'v1' for r in rows), (
      'no request was in flight on v1 across the promotion')
  with FeedbackStore(db_url) as store:  # one database: every row, with its version
    for r in rows:
      got = store.get_generation(r['body']['id'])
      assert got is not None and got['version'] == r['body']['system_fingerprint']
      assert [x['rating'] for x in store.feedback_for(r['body']['id'])['ratings']] == [1]
    assert store.stats()['generations'] == len(rows)


@pytest.mark.slow  # a start of the command line
def test_command_line_bad_database_url_is_one_line_before_loading(tmp_path):
  env = {**os.environ, 'GENAI_FEEDBACK_DB': 'postgres://genai:secret@db/feedback'}
  r = subprocess.run([sys.executable, '-m', 'genai.serve', f'--workdir={tmp_path}'],
                     cwd=serve_replicas.results_lib.REPO, env=env, capture_output=True,
                     text=True, timeout=120)
  lines = r.stderr.strip().splitlines()
  assert r.returncode == 1 and lines[-1].startswith("error: feedback database URL 'postgres://...'")
  assert 'postgresql+psycopg://' in lines[-1] and 'secret' not in r.stderr
  assert 'Traceback' not in r.stderr and 'a genai workdir' not in r.stderr  # before the model
