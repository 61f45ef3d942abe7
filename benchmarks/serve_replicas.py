"""A bounded loopback load test through 1 and 2 replicas of `python -m genai.serve` that
share one PostgreSQL feedback database and one model registry.

Trains a small char LM on the text that ships with Python (configs/lm/pydoc_char.py: 4
layers, d_model 128, context 128, 100 steps; about half a minute on 2 cores) unless
--workdir names one, registers it as v1 of a registry, starts a throwaway PostgreSQL
server (genai.feedback.local_postgres), then for each replica count: a fresh database,
that many servers (`--registry ROOT`, the database URL in GENAI_FEEDBACK_DB, each on its own
loopback port), and `--clients` concurrent clients sending `--requests` completions in all,
spread round-robin over the replicas (what a load balancer does), each followed by a
rating of one of its choices, sent to the *next* replica (any replica can take feedback on
any generation: the database is shared). Halfway through, v2 (a copy of the same weights)
is promoted in the registry; every replica switches to it (--reload_interval 0.5) while the
load goes on.

Reports per replica count: completions/s, generated tokens/s (the completions' usage),
p50/p99 latency of the completions, errors (any non-200, must be 0) and 5xx, the responses
per served version, and whether every generation and rating acknowledged during the load
is in the database afterwards (must be all). Writes benchmarks/results/serve_replicas.json
(benchmarks/results.py) when there were no errors and no row was missing.

  python -m benchmarks.serve_replicas [--replicas 1,2] [--requests 240] [--clients 16]

Two replicas on one 2-core machine share its two cores: expect no speed-up there (each
replica's decode already uses both); on separate machines each brings its own.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import httpx
import numpy as np

from benchmarks import results as results_lib

PROMPTS = ['The ', 'It is ', 'In the ', 'A list ', 'This module ', 'When ', 'If you ', 'Python ']


def train(workdir: str, steps: int = 100) -> None:
  from configs.lm import pydoc_char  # pylint: disable=import-outside-toplevel
  from experiments import lm  # pylint: disable=import-outside-toplevel
  config = pydoc_char.get_config(f'steps={steps}')
  config.data.block_size = 128
  config.optimizer.warmup_steps = steps // 5
  config.train.checkpoint_every = config.train.eval_every = steps
  config.eval.sample_tokens = 40
  lm.train_and_evaluate(config, workdir)


# =========================== Replicas ===================================================

def start_replicas(registry: str, db_url: str, ports: list[int], *, slots: int = 8,
                   reload_interval: float = 0.5, log_dir: str | None = None,
                   extra: tuple[str, ...] = ()) -> list[subprocess.Popen]:
  """One `python -m genai.serve --registry REGISTRY` per port, the feedback database in
  GENAI_FEEDBACK_DB; returns once every one answers 200 on /readyz."""
  env = {**os.environ, 'GENAI_FEEDBACK_DB': db_url}
  procs = []
  for port in ports:
    log = (open(os.path.join(log_dir, f'replica-{port}.log'), 'w') if log_dir
           else subprocess.DEVNULL)
    procs.append(subprocess.Popen(
        [sys.executable, '-m', 'genai.serve', f'--registry={registry}', f'--port={port}',
         f'--num_slots={slots}', f'--reload_interval={reload_interval}', '--max_queue=1024',
         *extra], env=env, stdout=log, stderr=subprocess.STDOUT))
  try:
    wait_ready(ports, procs)
  except BaseException:
    stop_replicas(procs)
    raise
  return procs


def wait_ready(ports: list[int], procs: list[subprocess.Popen], timeout_s: float = 600.0
               ) -> None:
  deadline = time.monotonic() + timeout_s
  waiting = set(ports)
  while waiting:
    for port, proc in zip(ports, procs):
      if port not in waiting:
        continue
      if proc.poll() is not None:
        raise RuntimeError(f'the replica on port {port} exited ({proc.returncode})')
      try:
        if httpx.get(f'http://127.0.0.1:{port}/readyz', timeout=2).status_code == 200:
          waiting.discard(port)
      except httpx.TransportError:
        pass
    if waiting and time.monotonic() > deadline:
      raise RuntimeError(f'replicas on ports {sorted(waiting)} not ready in {timeout_s:.0f} s')
    time.sleep(0.3)


def stop_replicas(procs: list[subprocess.Popen]) -> None:
  """SIGTERM (uvicorn finishes the requests in flight), then SIGKILL after 30 s."""
  for p in procs:
    if p.poll() is None:
      p.send_signal(signal.SIGTERM)
  for p in procs:
    try:
      p.wait(timeout=30)
    except subprocess.TimeoutExpired:
      p.kill()
      p.wait()


def free_ports(n: int) -> list[int]:
  import socket  # pylint: disable=import-outside-toplevel
  socks = [socket.socket() for _ in range(n)]
  try:
    for s in socks:
      s.bind(('127.0.0.1', 0))
    return [s.getsockname()[1] for s in socks]
  finally:
    for s in socks:
      s.close()


# =========================== Load =======================================================

async def run_load(ports: list[int], n_requests: int, clients: int, max_tokens: int,
                   on_half=None) -> tuple[list[dict], float]:
  """`n_requests` completions round-robin over `ports` by `clients` concurrent clients,
  each followed by a rating on the next port; `on_half()` runs (in a thread) once half
  of them were sent. Returns one dict per completion and the wall time."""
  results: list[dict] = []
  counter = iter(range(n_requests))
  half = asyncio.Event()

  async def worker(c: httpx.AsyncClient):
    for i in counter:
      if i == n_requests // 2:
        half.set()
      port = ports[i % len(ports)]
      body = {'prompt': PROMPTS[i % len(PROMPTS)], 'max_tokens': max_tokens,
              'temperature': 0.8, 'seed': i}
      row = {'i': i, 'port': port, 'status': None, 'rating_status': None}
      t0 = time.perf_counter()
      try:
        r = await c.post(f'http://127.0.0.1:{port}/v1/completions', json=body)
        row.update(status=r.status_code, latency=time.perf_counter() - t0)
        if r.status_code == 200:
          out = r.json()
          row.update(id=out['id'], version=out['system_fingerprint'],
                     tokens=out['usage']['completion_tokens'])
          other = ports[(i + 1) % len(ports)]
          f = await c.post(f'http://127.0.0.1:{other}/v1/feedback',
                           json={'generation_id': out['id'], 'rating': 'up' if i % 2 else 'down'})
          row['rating_status'] = f.status_code
      except httpx.HTTPError as e:
        row['status'] = repr(e)
      results.append(row)

  async def promoter():
    await half.wait()
    if on_half is not None:
      await asyncio.to_thread(on_half)

  t0 = time.perf_counter()
  limits = httpx.Limits(max_connections=clients * 2)
  async with httpx.AsyncClient(timeout=300, limits=limits) as c:
    task = asyncio.ensure_future(promoter())
    await asyncio.gather(*(worker(c) for _ in range(clients)))
    wall = time.perf_counter() - t0
    half.set()
    await task
  return results, wall


def summarize(rows: list[dict], wall: float, replicas: int) -> dict:
  ok = [r for r in rows if r['status'] == 200]
  lat = np.array([r['latency'] for r in ok]) if ok else np.array([float('nan')])
  errors = [r['status'] for r in rows if r['status'] != 200]
  rating_errors = [r['rating_status'] for r in ok if r['rating_status'] != 200]
  statuses = [s for s in errors + rating_errors if isinstance(s, int)]
  versions: dict[str, int] = {}
  for r in ok:
    versions[r['version']] = versions.get(r['version'], 0) + 1
  return {'replicas': replicas, 'requests': len(rows), 'wall_s': wall,
          'requests_per_s': len(rows) / wall,
          'tokens_per_s': sum(r['tokens'] for r in ok) / wall,
          'latency_p50_s': float(np.percentile(lat, 50)),
          'latency_p99_s': float(np.percentile(lat, 99)),
          'errors': len(errors) + len(rating_errors),
          'server_errors_5xx': sum(s >= 500 for s in statuses),
          'error_statuses': sorted({str(e) for e in errors + rating_errors}),
          'versions': versions}


def check_rows(db_url: str, rows: list[dict]) -> dict:
  """Every generation and rating acknowledged during the load, looked up in the database."""
  from genai.feedback.store import FeedbackStore  # pylint: disable=import-outside-toplevel
  ok = [r for r in rows if r['status'] == 200]
  with FeedbackStore(db_url) as store:
    missing_gen = [r['id'] for r in ok if store.get_generation(r['id']) is None]
    rated = [r for r in ok if r['rating_status'] == 200]
    missing_rating = [r['id'] for r in rated if len(store.feedback_for(r['id'])['ratings']) != 1]
    wrong_version = [r['id'] for r in ok if r['id'] not in missing_gen and
                     store.get_generation(r['id'])['version'] != r['version']]
    stats = store.stats()
  return {'generations_acked': len(ok), 'ratings_acked': len(rated),
          'generations_in_db': stats['generations'], 'ratings_in_db': stats['ratings'],
          'generations_missing': len(missing_gen), 'ratings_missing': len(missing_rating),
          'version_mismatches': len(wrong_version)}


# =========================== Main =======================================================

def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('--workdir', default='', help='a trained LM workdir (default: train one)')
  ap.add_argument('--replicas', default='1,2', help='replica counts to measure, in order')
  ap.add_argument('--requests', type=int, default=240)
  ap.add_argument('--clients', type=int, default=16)
  ap.add_argument('--max_tokens', type=int, default=32)
  ap.add_argument('--slots', type=int, default=8)
  ap.add_argument('--no_promote', action='store_true', help='no promotion halfway')
  results_lib.add_args(ap, 'serve_replicas')
  args = ap.parse_args()
  from genai.feedback import local_postgres  # pylint: disable=import-outside-toplevel
  from genai.feedback.registry import Registry  # pylint: disable=import-outside-toplevel
  reason = local_postgres.missing()
  if reason:
    sys.exit(f'error: {reason}; this benchmark runs a local PostgreSQL server')
  counts = [int(n) for n in args.replicas.split(',')]
  summaries, checks, startup = [], [], {}
  with tempfile.TemporaryDirectory() as tmp, local_postgres.LocalPostgres() as pg:
    workdir = args.workdir
    if not workdir:
      workdir = os.path.join(tmp, 'lm')
      t0 = time.perf_counter()
      train(workdir)
      print(f'trained {workdir} in {time.perf_counter() - t0:.0f} s', flush=True)
    for n in counts:
      root = os.path.join(tmp, f'registry{n}')
      reg = Registry(root)
      for v in ('v1', 'v2'):
        shutil.copytree(workdir, os.path.join(tmp, f'{v}-{n}'))
      reg.init(os.path.join(tmp, f'v1-{n}'))
      db_url = pg.create_database(f'feedback_{n}')
      ports = free_ports(n)
      t0 = time.perf_counter()
      procs = start_replicas(root, db_url, ports, slots=args.slots, log_dir=tmp)
      startup[n] = time.perf_counter() - t0
      try:
        asyncio.run(run_load(ports, 4 * n, n, 8))  # warm-up (not counted: rows checked too)

        def promote(n=n, reg=reg):
          reg.add(os.path.join(tmp, f'v2-{n}'), parent='v1', metrics={}, data={},
                  promote=True, reasons=[])
        rows, wall = asyncio.run(run_load(ports, args.requests, args.clients, args.max_tokens,
                                          None if args.no_promote else promote))
      finally:
        stop_replicas(procs)
      s = summarize(rows, wall, n)
      s['startup_s'] = startup[n]
      c = check_rows(db_url, rows)
      print({**s, **c}, flush=True)
      summaries.append(s)
      checks.append(c)
  bad = [f'{s["replicas"]} replicas: {s["errors"]} errors {s["error_statuses"]}, '
         f'{c["generations_missing"]} generations and {c["ratings_missing"]} ratings missing'
         for s, c in zip(summaries, checks)
         if s['errors'] or c['generations_missing'] or c['ratings_missing']]
  if bad:
    sys.exit('; '.join(bad))
  figures = {}
  for s, c in zip(summaries, checks):
    key = f'replicas_{s["replicas"]}'
    figures[key] = {k: v for k, v in {**s, **c}.items() if k not in ('replicas', 'versions',
                                                                       'error_statuses')}
    figures[key]['responses_per_version'] = ', '.join(f'{v}: {k}' for v, k in
                                                      sorted(s['versions'].items()))
  rows = [[s['replicas'], f'{s["requests_per_s"]:.1f}', f'{s["tokens_per_s"]:.0f}',
           f'{1e3 * s["latency_p50_s"]:.0f}', f'{1e3 * s["latency_p99_s"]:.0f}', s['errors'],
           s['server_errors_5xx'], f'{c["generations_in_db"]}/{c["ratings_in_db"]}',
           ', '.join(f'{v}: {k}' for v, k in sorted(s['versions'].items()))]
          for s, c in zip(summaries, checks)]
  headline = {
      'quality': '0 errors, 0 5xx, every acknowledged generation and rating in the shared '
                 f'PostgreSQL database ({", ".join(str(s["replicas"]) for s in summaries)} '
                 'replicas, a promotion halfway)',
      'speed': '; '.join(f'{s["replicas"]} replica{"s" * (s["replicas"] > 1)}: '
                         f'{s["requests_per_s"]:.1f} req/s, {s["tokens_per_s"]:.0f} tok/s, '
                         f'p50 {1e3 * s["latency_p50_s"]:.0f} ms, p99 '
                         f'{1e3 * s["latency_p99_s"]:.0f} ms' for s in summaries)}
  results_lib.write(
      args.result_name, figures, headline=headline,
      tables=[results_lib.table(
          f'{args.requests} completions (max_tokens {args.max_tokens}) + a rating each, '
          f'{args.clients} clients, round-robin over the replicas',
          ['replicas', 'req/s', 'tok/s', 'p50 ms', 'p99 ms', 'errors', '5xx',
           'rows in db (generations/ratings; + warm-up)', 'responses per version'], rows)],
      notes=['Every replica runs on this machine and shares its cores: on 2 cores two '
             'replicas are not faster than one.',
             'Warm-up requests (4 per replica) are not counted in the figures but are in the '
             'database.'],
      config={'workdir': args.workdir or 'pydoc_char, 100 steps, context 128',
              'requests': args.requests, 'clients': args.clients,
              'max_tokens': args.max_tokens, 'slots': args.slots,
              'promote_halfway': not args.no_promote, 'replicas': counts},
      results_dir=args.results_dir)


if __name__ == '__main__':
  main()
