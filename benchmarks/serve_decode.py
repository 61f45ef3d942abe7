"""Decode throughput of the HTTP server against HF transformers `generate`, same shape.

The shape is nanoGPT's Shakespeare char model (GPT-2 style, 6 layers x 384, 6 heads,
vocabulary 65, context 256), randomly initialised in both (speed does not depend on the
weights). Each side greedily generates `--new_tokens` tokens after a 1-token prompt:
  genai: `python -m genai.serve` in its own process, driven over loopback HTTP: one
         request alone (batch 1), then 8 concurrent requests (continuous batching).
  HF:    GPT2LMHeadModel.generate(do_sample=False, use_cache=True) at batch 1 and 8, in
         this process (torch threads = cores), the same weights copied from genai's params.
New tokens per second = tokens generated / wall time (HTTP included for genai). The sides
alternate: each round times genai then HF at the same batch size, so a change in the
machine's state (another tenant, clock) hits both; the figures are medians over the
rounds and the ratio's median and range over the per-round ratios. Writes the result file
(benchmarks/results.py).

  python -m benchmarks.serve_decode [--new_tokens 200] [--rounds 7]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import subprocess
import tempfile
import time

import httpx
import jax
import numpy as np

from benchmarks import results as results_lib
from benchmarks import server_process

from genai.models.transformer import TransformerConfig

SHAPE = dict(vocab_size=65, d_model=384, num_layers=6, num_heads=6, max_len=256)


def make_workdir(path: str) -> None:
  """A genai LM workdir holding a random 6x384 char model (checkpoint at step 0)."""
  from experiments import lm  # pylint: disable=import-outside-toplevel
  from configs.lm import shakespeare_char  # pylint: disable=import-outside-toplevel
  config = shakespeare_char.get_config()
  config.data.source = 'files'
  corpus = os.path.join(path, 'corpus.txt')
  os.makedirs(path, exist_ok=True)
  chars = ''.join(chr(32 + i) for i in range(64)) + '\n'  # 65 symbols, like Shakespeare's
  with open(corpus, 'w') as f:
    f.write(chars * 200)
  config.data.path = corpus
  config.data.block_size = SHAPE['max_len']
  config.model.update(num_layers=6, num_heads=6, d_model=384, dropout=0.0)
  config.optimizer.warmup_steps = 0
  config.train.update(num_steps=1, batch_size=1, steps_per_call=1, eval_every=1,
                      checkpoint_every=1, log_every=1)
  config.eval.update(num_batches=1, batch_size=1, sample_tokens=0)
  lm.train_and_evaluate(config, os.path.join(path, 'w'))


def serve(workdir: str, port: int) -> subprocess.Popen:
  return server_process.start([f'--workdir={workdir}', '--num_slots=8', '--reload_interval=0'],
                              port)


def genai_round(clients, port: int, new_tokens: int) -> float:
  """One round over HTTP: every client sends one request at once; new tokens/s."""
  body = {'prompt': 'A', 'max_tokens': new_tokens, 'temperature': 0.0}
  url = f'http://127.0.0.1:{port}/v1/completions'
  t0 = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(len(clients)) as pool:
    outs = list(pool.map(lambda c: c.post(url, json=body, timeout=300).json(), clients))
  dt = time.perf_counter() - t0
  got = sum(o['usage']['completion_tokens'] for o in outs)
  assert got == len(clients) * new_tokens, outs[0]
  return got / dt


class concurrent_clients:  # pylint: disable=invalid-name
  def __init__(self, n):
    self.clients = [httpx.Client() for _ in range(n)]

  def __enter__(self):
    return self.clients

  def __exit__(self, *exc):
    for c in self.clients:
      c.close()


def hf_model(params):
  """GPT2LMHeadModel holding genai's `params` (exported through genai.pretrained.hf)."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  from genai.pretrained import hf  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(os.cpu_count())
  with tempfile.TemporaryDirectory() as d:
    hf.export_hf(TransformerConfig(**SHAPE), params, d)
    return transformers.AutoModelForCausalLM.from_pretrained(d).eval()


def hf_round(model, batch: int, new_tokens: int) -> float:
  """One greedy `generate` of `new_tokens` at `batch`; new tokens/s."""
  import torch  # pylint: disable=import-outside-toplevel
  ids = torch.zeros((batch, 1), dtype=torch.long)
  with torch.inference_mode():
    t0 = time.perf_counter()
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, do_sample=False, use_cache=True,
                         pad_token_id=0)
    dt = time.perf_counter() - t0
  assert out.shape == (batch, 1 + new_tokens)
  return batch * new_tokens / dt


def interleaved(port: int, model, new_tokens: int, rounds: int) -> dict:
  """Per batch size, `rounds` rounds of (genai over HTTP, HF generate) back to back, after
  one warm-up round of each, so both sides meet the same machine state; figures are the
  medians and the spread of the per-round ratios."""
  fig = {}
  for batch in (1, 8):
    with concurrent_clients(batch) as clients:
      genai_round(clients, port, new_tokens)  # warms connections and the server's ticks
      hf_round(model, batch, new_tokens)
      g, h = [], []
      for _ in range(rounds):
        g.append(genai_round(clients, port, new_tokens))
        h.append(hf_round(model, batch, new_tokens))
    ratios = [a / b for a, b in zip(g, h)]
    fig.update({f'genai_server_batch{batch}': float(np.median(g)),
                f'hf_generate_batch{batch}': float(np.median(h)),
                f'ratio_batch{batch}': float(np.median(ratios)),
                f'ratio_batch{batch}_min': min(ratios), f'ratio_batch{batch}_max': max(ratios),
                f'genai_server_batch{batch}_rounds': [round(x, 1) for x in g],
                f'hf_generate_batch{batch}_rounds': [round(x, 1) for x in h]})
  return fig


def headline(fig: dict) -> dict:
  return {'speed': f'server (HTTP) {fig["genai_server_batch1"]:.0f} / '
                   f'{fig["genai_server_batch8"]:.0f} new tokens/s at batch 1 / 8; HF generate '
                   f'{fig["hf_generate_batch1"]:.0f} / {fig["hf_generate_batch8"]:.0f} '
                   f'({fig["ratio_batch1"]:.2f}x / {fig["ratio_batch8"]:.2f}x, rounds '
                   f'{fig["ratio_batch1_min"]:.2f}-{fig["ratio_batch1_max"]:.2f}x / '
                   f'{fig["ratio_batch8_min"]:.2f}-{fig["ratio_batch8_max"]:.2f}x; medians)'}


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument('--new_tokens', type=int, default=200)
  ap.add_argument('--rounds', type=int, default=7,
                  help='timed rounds per batch size, genai and HF back to back in each')
  ap.add_argument('--port', type=int, default=8431)
  ap.add_argument('--out', default='runs/bench/serve_decode.json')
  results_lib.add_args(ap, 'serve_decode')
  args = ap.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    make_workdir(tmp)
    workdir = os.path.join(tmp, 'w')
    from experiments import lm  # pylint: disable=import-outside-toplevel
    _, _, params, _ = lm.load_workdir(workdir)
    model = hf_model(params)
    proc = serve(workdir, args.port)
    try:
      results = interleaved(args.port, model, args.new_tokens, args.rounds)
    finally:
      proc.terminate()
      proc.wait(timeout=30)
  results.update(shape=SHAPE, new_tokens=args.new_tokens,
                 machine=f'{platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} cpu')
  print(json.dumps(results))
  title = f'new tokens/s, median of {args.rounds} rounds (genai and HF back to back in each)'
  columns = ['implementation', 'batch 1', 'batch 8']
  cells = [['genai server (HTTP)', *(f'{results[f"genai_server_batch{b}"]:.0f}' for b in (1, 8))],
           ['HF transformers generate', *(f'{results[f"hf_generate_batch{b}"]:.0f}' for b in (1, 8))],
           ['ratio (median of rounds)', *(f'{results[f"ratio_batch{b}"]:.2f}x' for b in (1, 8))],
           ['ratio (range of rounds)', *(f'{results[f"ratio_batch{b}_min"]:.2f}-'
                                         f'{results[f"ratio_batch{b}_max"]:.2f}x' for b in (1, 8))]]
  print(f'\n{title}\n')
  for line in (columns, ['---'] * len(columns), *cells):
    print('| ' + ' | '.join(line) + ' |')
  figures = {k: v for k, v in results.items() if k not in ('shape', 'new_tokens', 'machine')
             and not k.endswith('_rounds')}
  results_lib.write(args.result_name, figures, headline=headline(figures),
                    tables=[results_lib.table(title, columns, cells)],
                    notes=[f'per-round new tokens/s, batch {b}: genai '
                           f'{results[f"genai_server_batch{b}_rounds"]}, HF '
                           f'{results[f"hf_generate_batch{b}_rounds"]}' for b in (1, 8)],
                    config={'shape': SHAPE, 'new_tokens': args.new_tokens,
                            'rounds': args.rounds},
                    results_dir=args.results_dir)
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(results, f, indent=1)


if __name__ == '__main__':
  main()
