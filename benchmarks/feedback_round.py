"""One feedback round on the Tiny Shakespeare model, end to end over HTTP.

 1. Train the fast Shakespeare char recipe (or take --workdir), register it as v1 of a
    model registry (held-out text: the last 20k characters of the corpus).
 2. Serve it: `python -m genai.serve --registry R --feedback --reload_interval 1`.
 3. Simulated raters: for --prompts prompts, ask for two samples (n=2) and prefer the one
    with the larger share of capital letters (the stated rule: "more SHOUTING speaker
    names"); post the preference with `POST /v1/feedback/preference`.
 4. `python -m experiments.retrain run --root R` (timed): a DPO stage from v1 on those
    pairs, the held-out and moderation checks, promotion.
 5. The server hot-reloads the promoted version; the same --eval_prompts x seeds are
    sampled from v1 (before) and v2 (after) through the server, and the capital share
    (the rater's property) and the held-out loss are compared. Writes the result file
    (benchmarks/results.py).

  python -m benchmarks.feedback_round [--data ../shared/data/tinyshakespeare/input.txt]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import httpx
import numpy as np

from benchmarks import results as results_lib
from benchmarks import server_process
from benchmarks.serve_load import train

PROMPTS = ['ROMEO:\n', 'JULIET:\n', 'KING:\n', 'First:\n', 'MENENIUS:\n', 'Nurse:\n', 'All:\n',
           'BRUTUS:\n', 'The ', 'My lord', 'What ', 'I am ', 'O, ', 'Thou ', 'Good ', 'Why ']


def capital_share(text: str) -> float:
  letters = [c for c in text if c.isalpha()]
  return sum(c.isupper() for c in letters) / max(len(letters), 1)


def start(root: str, port: int) -> subprocess.Popen:
  return server_process.start([f'--registry={root}', '--feedback', '--reload_interval=1',
                               '--name=shakespeare'], port)


def sample_property(c: httpx.Client, seeds: range, tokens: int) -> tuple[float, str]:
  texts = []
  for p in PROMPTS:
    out = c.post('/v1/completions', json={'prompt': p, 'max_tokens': tokens, 'temperature': 0.8,
                                          'seed': seeds.start, 'n': len(seeds)}).json()
    texts += [ch['text'] for ch in out['choices']]
  return float(np.mean([capital_share(t) for t in texts])), out['system_fingerprint']


def headline(fig: dict) -> dict:
  return {'quality': f'capital share {fig["capital_share_before"]:.3f} -> '
                     f'{fig["capital_share_after"]:.3f} from {fig["pairs"]} preference pairs; '
                     f'held-out loss {fig["heldout_loss_before"]:.3f} -> '
                     f'{fig["heldout_loss_after"]:.3f}; {fig["status"]}',
          'speed': f'retrain {fig["retrain_wall_s"]:.0f} s wall'}


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument('--data', default='../shared/data/tinyshakespeare/input.txt')
  ap.add_argument('--workdir', default='')
  ap.add_argument('--rounds_per_prompt', type=int, default=8, help='rated pairs per prompt')
  ap.add_argument('--tokens', type=int, default=40)
  ap.add_argument('--dpo_steps', type=int, default=40)
  ap.add_argument('--lr', type=float, default=1e-4)
  ap.add_argument('--beta', type=float, default=0.1)
  ap.add_argument('--sft_weight', type=float, default=1.0)
  ap.add_argument('--tolerance', type=float, default=0.05)
  ap.add_argument('--port', type=int, default=8433)
  ap.add_argument('--out', default='runs/bench/feedback_round.json')
  results_lib.add_args(ap, 'feedback_round')
  args = ap.parse_args()
  with open(args.data, encoding='utf-8') as f:
    corpus = f.read()
  with tempfile.TemporaryDirectory() as tmp:
    workdir = args.workdir or os.path.join(tmp, 'shakespeare')
    if not args.workdir:
      train(args.data, workdir)
    root = os.path.join(tmp, 'registry')
    heldout = os.path.join(tmp, 'heldout.txt')
    with open(heldout, 'w', encoding='utf-8') as f:
      f.write(corpus[-20000:])
    subprocess.run([sys.executable, '-m', 'experiments.retrain', 'init', f'--root={root}',
                    f'--workdir={workdir}', f'--heldout={heldout}'], check=True,
                   stdout=subprocess.DEVNULL)
    proc = start(root, args.port)
    try:
      with httpx.Client(base_url=f'http://127.0.0.1:{args.port}', timeout=300) as c:
        before, v_before = sample_property(c, range(1000, 1008), args.tokens)
        # The raters: two samples per request, the one with more capitals wins.
        t0 = time.perf_counter()
        pairs = 0
        for p in PROMPTS:
          for r in range(args.rounds_per_prompt):
            out = c.post('/v1/completions', json={'prompt': p, 'max_tokens': args.tokens,
                                                  'temperature': 1.0, 'seed': 10 * r, 'n': 2}).json()
            a, b = (capital_share(ch['text']) for ch in out['choices'])
            if a == b:
              continue
            chosen = 0 if a > b else 1
            res = c.post('/v1/feedback/preference', json={
                'generation_id': out['id'], 'chosen': chosen, 'rejected': 1 - chosen})
            assert res.status_code == 200, res.text
            pairs += 1
        rate_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, '-m', 'experiments.retrain', 'run', f'--root={root}',
                            f'--dpo_steps={args.dpo_steps}', f'--lr={args.lr}',
                            f'--dpo_beta={args.beta}', f'--dpo_sft_weight={args.sft_weight}',
                            f'--tolerance={args.tolerance}'],
                           capture_output=True, text=True)
        retrain_s = time.perf_counter() - t0
        if r.returncode:
          raise RuntimeError(r.stderr[-3000:])
        entry = json.loads(r.stdout[r.stdout.index('{'):])
        if entry['status'] == 'promoted':
          deadline = time.monotonic() + 60
          while c.get('/healthz').json()['version'] != entry['version']:
            assert time.monotonic() < deadline, 'the server did not pick up the new version'
            time.sleep(0.5)
        after, v_after = sample_property(c, range(1000, 1008), args.tokens)
        stats = c.get('/v1/feedback/stats').json()
    finally:
      proc.terminate()
      proc.wait(timeout=30)
  m = entry['metrics']
  out = {
      'rule': 'prefer the sample with the larger share of capital letters',
      'pairs': pairs, 'rating_seconds': rate_s,
      'capital_share_before': before, 'capital_share_after': after,
      'served_before': v_before, 'served_after': v_after, 'status': entry['status'],
      'reasons': entry['reasons'], 'stages': entry['data']['stages'],
      'heldout_loss_before': m['current']['heldout_loss'],
      'heldout_loss_after': m['candidate']['heldout_loss'],
      'retrain_wall_s': retrain_s, 'retrain_train_s': entry['data']['train_seconds'],
      'store': stats, 'settings': vars(args),
  }
  print(json.dumps(out, indent=1))
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(out, f, indent=1)
  figures = results_lib.flatten({k: v for k, v in out.items() if k != 'settings'})
  results_lib.write(args.result_name, figures, headline=headline(figures),
                    config={k: v for k, v in vars(args).items()
                            if k not in ('results_dir', 'result_name')},
                    results_dir=args.results_dir)


if __name__ == '__main__':
  main()
