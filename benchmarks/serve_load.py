"""A bounded loopback load test of `python -m genai.serve` on the Tiny Shakespeare model, or
on a real pretrained model (`--pretrained smollm2`: SmolLM2-135M-Instruct from the cache of
`python -m genai.pretrained.fetch smollm2`).

Trains the fast Shakespeare char recipe (configs/lm/shakespeare_char_fast.py, ~1 minute on
2 cores) unless --workdir names a trained LM workdir or --pretrained a pretrained model,
starts the server in its own process with an API key, then `--clients` concurrent clients
send `--requests` requests in all: a mix of completions and chat completions, a quarter of
them streamed, temperature 0.8, top_k 40; max_tokens 8-32 for the char model (its context
is 64), `--max_tokens` (16) short English prompts for a pretrained one. Reports requests/s,
generated tokens/s (the server's own count of new tokens over the load), p50/p90/p99
latency (to the last byte; for streams also time to first event), errors (any non-200:
must be 0) and 5xx, and writes the result file (benchmarks/results.py) when there were none
(serve_load, or serve_load_<pretrained>).

  python -m benchmarks.serve_load [--data ../shared/data/tinyshakespeare/input.txt]
      [--clients 32] [--requests 320] [--workdir W]
  python -m benchmarks.serve_load --pretrained smollm2 --requests 128 [--max_len 256]
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
# For a pretrained (instruct) model: short English prompts and questions.
PRETRAINED_PROMPTS = ['The capital of France is', 'Once upon a time,', 'Write a haiku about the sea.',
                      'def fibonacci(n):', 'The best way to learn a language is',
                      'Explain gravity in one sentence.', 'My favourite food is',
                      'What is 12 times 7?']


def train(data: str, workdir: str) -> None:
  from experiments import lm  # pylint: disable=import-outside-toplevel
  from configs.lm import shakespeare_char_fast  # pylint: disable=import-outside-toplevel
  lm.train_and_evaluate(shakespeare_char_fast.get_config(f'path={data}'), workdir)


def start_server(source: str, port: int, slots: int, max_len: int = 0) -> subprocess.Popen:
  """`source`: a workdir, or 'pretrained:SPEC' (served with context `max_len`)."""
  model = ([f'--pretrained={source.split(":", 1)[1]}', f'--max_len={max_len}']
           if source.startswith('pretrained:') else [f'--workdir={source}'])
  return server_process.start([*model, f'--api_keys={KEY}', f'--num_slots={slots}',
                               '--reload_interval=0', '--max_queue=1024'], port,
                              timeout_s=900)


def make_requests(n: int, seed: int = 0, prompts: list[str] | None = None,
                  max_tokens: int = 0) -> list[tuple[str, dict]]:
  """`max_tokens` 0: 8, 16, 24 or 32 at random (the char model)."""
  rng = random.Random(seed)
  out = []
  for i in range(n):
    prompt = rng.choice(prompts or PROMPTS)
    common = {'max_tokens': max_tokens or rng.choice([8, 16, 24, 32]), 'temperature': 0.8,
              'top_k': 40, 'seed': i, 'stream': i % 4 == 0}
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
  rps = fig['requests_per_s']
  return {'quality': f'{fig["errors"]} errors ({fig.get("server_errors_5xx", 0)} 5xx) in '
                     f'{fig["requests"]} requests',
          'speed': f'{rps:.{0 if rps >= 10 else 1}f} requests/s, {fig["tokens_per_s"]:,.0f} '
                   'tokens/s, '
                   f'latency p50 {1e3 * fig["latency_p50_s"]:.0f} ms, p99 '
                   f'{1e3 * fig["latency_p99_s"]:.0f} ms ({fig["clients"]} clients)'}


def _metric(port: int, name: str) -> float | None:
  text = httpx.get(f'http://127.0.0.1:{port}/metrics', timeout=10,
                   headers={'Authorization': f'Bearer {KEY}'}).text
  return next((float(l.split()[-1]) for l in text.splitlines() if l.startswith(name + ' ')),
              None)


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument('--data', default='../shared/data/tinyshakespeare/input.txt')
  ap.add_argument('--workdir', default='')
  ap.add_argument('--pretrained', default='', help='serve this pretrained model instead '
                  '(smollm2, hf:DIR, gguf:FILE): no training')
  ap.add_argument('--max_tokens', type=int, default=0,
                  help='per request; 0 = 8-32 at random (char model), 16 (--pretrained)')
  ap.add_argument('--max_len', type=int, default=256,
                  help='--pretrained: the context served (genai.serve --max_len); the '
                  'prompts here are short')
  ap.add_argument('--clients', type=int, default=32)
  ap.add_argument('--requests', type=int, default=320)
  ap.add_argument('--slots', type=int, default=16)
  ap.add_argument('--port', type=int, default=8432)
  ap.add_argument('--out', default='')
  results_lib.add_args(ap, 'serve_load')
  args = ap.parse_args()
  name = args.pretrained.replace(':', '_').replace('/', '_')
  if args.pretrained and args.result_name == 'serve_load':
    args.result_name = f'serve_load_{name}'
  out_path = args.out or f'runs/bench/{args.result_name}.json'
  prompts = PRETRAINED_PROMPTS if args.pretrained else PROMPTS
  max_tokens = args.max_tokens or (16 if args.pretrained else 0)
  with tempfile.TemporaryDirectory() as tmp:
    if args.pretrained:
      source = f'pretrained:{args.pretrained}'
    else:
      source = args.workdir or os.path.join(tmp, 'shakespeare')
      if not args.workdir:
        t0 = time.perf_counter()
        train(args.data, source)
        print(f'trained {source} in {time.perf_counter() - t0:.0f} s')
    t0 = time.perf_counter()
    proc = start_server(source, args.port, args.slots, args.max_len)
    startup_s = time.perf_counter() - t0
    try:
      asyncio.run(load(args.port, min(args.clients, 8),  # warm up
                       make_requests(16, seed=1, prompts=prompts, max_tokens=max_tokens)))
      before = _metric(args.port, 'genai_generated_tokens') or 0.0
      results, wall = asyncio.run(load(args.port, args.clients, make_requests(
          args.requests, prompts=prompts, max_tokens=max_tokens)))
      generated = (_metric(args.port, 'genai_generated_tokens') or 0.0) - before
      decode_rate = _metric(args.port, 'genai_decode_tokens_per_second')
    finally:
      proc.terminate()
      proc.wait(timeout=30)
  lat = np.array([r['latency'] for r in results if r['status'] == 200])
  ttfe = np.array([r['ttfe'] for r in results if r['ttfe'] is not None])
  errors = [r['status'] for r in results if r['status'] != 200]
  server_errors = [e for e in errors if isinstance(e, int) and e >= 500]
  # The server's count of new tokens over the load (exact, streams and early stops at EOS
  # included); the clients' count where the metric is missing.
  tokens = generated or sum(r['tokens'] for r in results)
  out = {
      'model': args.pretrained or 'shakespeare_char_fast',
      'requests': len(results), 'clients': args.clients, 'slots': args.slots,
      'max_tokens': max_tokens or '8-32',
      'context': args.max_len if args.pretrained else 64,
      'errors': len(errors), 'server_errors_5xx': len(server_errors),
      'error_statuses': sorted({str(e) for e in errors}), 'server_startup_s': startup_s,
      'wall_s': wall, 'requests_per_s': len(results) / wall, 'tokens_per_s': tokens / wall,
      'generated_tokens': tokens,
      'latency_p50_s': float(np.percentile(lat, 50)), 'latency_p90_s': float(np.percentile(lat, 90)),
      'latency_p99_s': float(np.percentile(lat, 99)),
      'stream_first_event_p50_s': float(np.percentile(ttfe, 50)) if len(ttfe) else None,
      'server_decode_tokens_per_s': decode_rate,
      'machine': f'{platform.machine()}, {os.cpu_count()} cores',
  }
  print(json.dumps(out, indent=1))
  os.makedirs(os.path.dirname(out_path) or '.', exist_ok=True)
  with open(out_path, 'w') as f:
    json.dump(out, f, indent=1)
  if errors:
    sys.exit(f'{len(errors)} requests failed: {out["error_statuses"]}')
  figures = results_lib.flatten({k: v for k, v in out.items() if k != 'machine'})
  results_lib.write(args.result_name, figures, headline=headline(figures),
                    config={'data': None if args.pretrained else args.data,
                            'workdir': args.workdir, 'pretrained': args.pretrained,
                            'max_tokens': max_tokens or '8-32',
                            'max_len': args.max_len if args.pretrained else None},
                    results_dir=args.results_dir)


if __name__ == '__main__':
  main()
