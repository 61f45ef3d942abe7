"""A bounded loopback load test of `python -m genai.serve` on the Tiny Shakespeare model.

Trains the fast Shakespeare char recipe (configs/lm/shakespeare_char_fast.py, ~1 minute on
2 cores) unless --workdir names a trained LM workdir, starts the server in its own process
with an API key, then `--clients` concurrent clients send `--requests` requests in all:
a mix of completions and chat completions, a quarter of them streamed, max_tokens 8-32 (the model's context is 64),
temperature 0.8, top_k 40. Reports requests/s, generated tokens/s, p50/p90/p99 latency
(to the last byte; for streams also time to first event) and errors (any non-200: must be 0),
and writes the result file (benchmarks/results.py) when there were none.

  python -m benchmarks.serve_load [--data ../shared/data/tinyshakespeare/input.txt]
      [--clients 32] [--requests 320] [--workdir W]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time

import httpx
import numpy as np

from benchmarks import results as results_lib
from benchmarks import server_process

KEY = 'bench-key'
# Short prompts: the model's context is 64 characters (prompt + max_tokens must fit).
PROMPTS = ['ROMEO:\n', 'JULIET:\nO ', 'KING HENRY:\n', 'Thou art', 'What say you', 'My lord, ',
           'First:\n', 'Enter\n']


def train(data: str, workdir: str) -> None:
  from experiments import lm  # pylint: disable=import-outside-toplevel
  from configs.lm import shakespeare_char_fast  # pylint: disable=import-outside-toplevel
  lm.train_and_evaluate(shakespeare_char_fast.get_config(f'path={data}'), workdir)


def start_server(workdir: str, port: int, slots: int) -> subprocess.Popen:
  return server_process.start([f'--workdir={workdir}', f'--api_keys={KEY}',
                               f'--num_slots={slots}', '--reload_interval=0',
                               '--max_queue=1024'], port)


def make_requests(n: int, seed: int = 0) -> list[tuple[str, dict]]:
  rng = random.Random(seed)
  out = []
  for i in range(n):
    prompt = rng.choice(PROMPTS)
    common = {'max_tokens': rng.choice([8, 16, 24, 32]), 'temperature': 0.8, 'top_k': 40,
              'seed': i, 'stream': i % 4 == 0}
    if i % 3 == 0:
      out.append(('/v1/chat/completions',
                  {'messages': [{'role': 'user', 'content': prompt}], **common}))
    else:
      out.append(('/v1/completions', {'prompt': prompt, **common}))
  return out


async def one(client: httpx.AsyncClient, path: str, body: dict) -> dict:
  t0 = time.perf_counter()
  if body['stream']:
    first, status = None, 0
    async with client.stream('POST', path, json=body) as r:
      status = r.status_code
      async for line in r.aiter_lines():
        if line.startswith('data: ') and first is None:
          first = time.perf_counter() - t0
        if line == 'data: [DONE]':
          break
    return {'status': status, 'latency': time.perf_counter() - t0, 'ttfe': first,
            'tokens': body['max_tokens'] if status == 200 else 0}
  r = await client.post(path, json=body)
  tokens = r.json()['usage']['completion_tokens'] if r.status_code == 200 else 0
  return {'status': r.status_code, 'latency': time.perf_counter() - t0, 'ttfe': None,
          'tokens': tokens}


async def load(port: int, clients: int, requests: list) -> tuple[list[dict], float]:
  queue: asyncio.Queue = asyncio.Queue()
  for item in requests:
    queue.put_nowait(item)
  results: list[dict] = []

  async def worker():
    async with httpx.AsyncClient(base_url=f'http://127.0.0.1:{port}', timeout=300,
                                 headers={'Authorization': f'Bearer {KEY}'}) as c:
      while not queue.empty():
        path, body = queue.get_nowait()
        try:
          results.append(await one(c, path, body))
        except httpx.HTTPError as e:
          results.append({'status': repr(e), 'latency': float('nan'), 'ttfe': None, 'tokens': 0})

  t0 = time.perf_counter()
  await asyncio.gather(*(worker() for _ in range(clients)))
  return results, time.perf_counter() - t0


def headline(fig: dict) -> dict:
  return {'quality': f'{fig["errors"]} errors in {fig["requests"]} requests',
          'speed': f'{fig["requests_per_s"]:.0f} requests/s, {fig["tokens_per_s"]:,.0f} tokens/s, '
                   f'latency p50 {1e3 * fig["latency_p50_s"]:.0f} ms, p99 '
                   f'{1e3 * fig["latency_p99_s"]:.0f} ms ({fig["clients"]} clients)'}


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument('--data', default='../shared/data/tinyshakespeare/input.txt')
  ap.add_argument('--workdir', default='')
  ap.add_argument('--clients', type=int, default=32)
  ap.add_argument('--requests', type=int, default=320)
  ap.add_argument('--slots', type=int, default=16)
  ap.add_argument('--port', type=int, default=8432)
  ap.add_argument('--out', default='runs/bench/serve_load.json')
  results_lib.add_args(ap, 'serve_load')
  args = ap.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    workdir = args.workdir or os.path.join(tmp, 'shakespeare')
    if not args.workdir:
      t0 = time.perf_counter()
      train(args.data, workdir)
      print(f'trained {workdir} in {time.perf_counter() - t0:.0f} s')
    proc = start_server(workdir, args.port, args.slots)
    try:
      asyncio.run(load(args.port, min(args.clients, 8), make_requests(16, seed=1)))  # warm up
      results, wall = asyncio.run(load(args.port, args.clients, make_requests(args.requests)))
      metrics = httpx.get(f'http://127.0.0.1:{args.port}/metrics', timeout=10,
                          headers={'Authorization': f'Bearer {KEY}'}).text
    finally:
      proc.terminate()
      proc.wait(timeout=30)
  lat = np.array([r['latency'] for r in results if r['status'] == 200])
  ttfe = np.array([r['ttfe'] for r in results if r['ttfe'] is not None])
  errors = [r['status'] for r in results if r['status'] != 200]
  tokens = sum(r['tokens'] for r in results)
  out = {
      'requests': len(results), 'clients': args.clients, 'slots': args.slots,
      'errors': len(errors), 'error_statuses': sorted({str(e) for e in errors}),
      'wall_s': wall, 'requests_per_s': len(results) / wall, 'tokens_per_s': tokens / wall,
      'latency_p50_s': float(np.percentile(lat, 50)), 'latency_p90_s': float(np.percentile(lat, 90)),
      'latency_p99_s': float(np.percentile(lat, 99)),
      'stream_first_event_p50_s': float(np.percentile(ttfe, 50)) if len(ttfe) else None,
      'server_decode_tokens_per_s': next((float(l.split()[-1]) for l in metrics.splitlines()
                                          if l.startswith('genai_decode_tokens_per_second ')), None),
      'machine': f'{platform.machine()}, {os.cpu_count()} cores',
  }
  print(json.dumps(out, indent=1))
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(out, f, indent=1)
  if errors:
    sys.exit(f'{len(errors)} requests failed: {out["error_statuses"]}')
  figures = results_lib.flatten({k: v for k, v in out.items() if k != 'machine'})
  results_lib.write(args.result_name, figures, headline=headline(figures),
                    config={'data': args.data, 'workdir': args.workdir},
                    results_dir=args.results_dir)


if __name__ == '__main__':
  main()
