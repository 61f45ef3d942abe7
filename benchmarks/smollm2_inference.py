"""Decoding speed of the imported SmolLM2-135M (genai, JAX) against transformers, same CPU.

  python -m genai.pretrained.fetch smollm2     # once
  python -m benchmarks.smollm2_inference [--batch_sizes 1,8] [--prompt_len 32] [--new_tokens 64]

Greedy generation of --new_tokens after a --prompt_len-token prompt, float32 on both sides:
genai's `generate` (prefill + the whole decode loop in one jitted function, KV cache) and
transformers' `generate` (eager PyTorch, its KV cache). Each is warmed up once (genai's
compile is excluded and reported separately), then timed --rounds times, alternating; the
best round is reported as new tokens per second (batch x new_tokens / seconds). Both
produce the same tokens (checked). Writes the result file (benchmarks/results.py).
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from benchmarks import results as results_lib
from genai.models.transformer import Transformer
from genai.pretrained import fetch
from genai.pretrained import gguf
from genai.sample.decode import generate


def headline(fig: dict) -> dict:
  batches = [int(k[5:].split('.')[0]) for k in fig if k.endswith('.genai_tok_s')]
  rate = lambda b, impl: fig[f'batch{b}.{impl}_tok_s']
  return {'speed': '; '.join(
      f'batch {b}: {rate(b, "genai")} tokens/s vs transformers {rate(b, "transformers")} '
      f'({rate(b, "genai") / rate(b, "transformers"):.2f}x)' for b in batches)}


def main():
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument('--batch_sizes', default='1,8')
  p.add_argument('--prompt_len', type=int, default=32)
  p.add_argument('--new_tokens', type=int, default=64)
  p.add_argument('--rounds', type=int, default=3)
  p.add_argument('--text', default='../shared/data/tinyshakespeare/input.txt')
  results_lib.add_args(p, 'smollm2_inference')
  a = p.parse_args()
  path = str(fetch.smollm2_path())
  cfg, params, tok, _ = gguf.load_gguf(path)
  model = Transformer(cfg)
  params = jax.device_put(params)
  try:
    with open(a.text) as f:
      text = f.read(20000)
  except OSError:
    text = 'The quick brown fox jumps over the lazy dog. ' * 200
  ids = tok.encode(text)

  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  import os  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(os.cpu_count())
  hf = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()

  rows = []
  for b in [int(x) for x in a.batch_sizes.split(',')]:
    prompt = np.stack([ids[i * 97:i * 97 + a.prompt_len] for i in range(b)]).astype(np.int32)

    def run_genai():
      out = generate(model, params, prompt, num_tokens=a.new_tokens, rng=jax.random.key(0),
                     temperature=0.0)
      return np.asarray(jax.block_until_ready(out))[:, a.prompt_len:]

    def run_hf():
      with torch.no_grad():
        out = hf.generate(torch.tensor(prompt, dtype=torch.long), max_new_tokens=a.new_tokens,
                          min_new_tokens=a.new_tokens, do_sample=False,
                          pad_token_id=tok.eos_id or 0)
      return out[:, a.prompt_len:].numpy()

    t0 = time.perf_counter()
    ours = run_genai()
    compile_s = time.perf_counter() - t0
    theirs = run_hf()
    times = {'genai': [], 'transformers': []}
    for _ in range(a.rounds):
      for name, fn in (('genai', run_genai), ('transformers', run_hf)):
        t0 = time.perf_counter()
        fn()
        times[name].append(time.perf_counter() - t0)
    row = {'batch': b, 'prompt_len': a.prompt_len, 'new_tokens': a.new_tokens,
           'genai_tok_s': round(b * a.new_tokens / min(times['genai']), 1),
           'transformers_tok_s': round(b * a.new_tokens / min(times['transformers']), 1),
           'genai_first_call_s': round(compile_s, 1),
           'same_tokens': bool((ours == theirs).all()),
           'same_token_fraction': float((ours == theirs).mean())}
    row['speedup'] = round(row['genai_tok_s'] / row['transformers_tok_s'], 2)
    rows.append(row)
    print(json.dumps(row), flush=True)
  title = (f'SmolLM2-135M float32, greedy, {jax.devices()[0].device_kind}, torch threads '
           f'{torch.get_num_threads()}')
  columns = ['batch', 'genai tok/s', 'transformers tok/s', 'speedup', 'same tokens']
  cells = [[str(r['batch']), str(r['genai_tok_s']), str(r['transformers_tok_s']),
            f'{r["speedup"]}x', f'{r["same_token_fraction"]:.3f}'] for r in rows]
  print(title)
  for line in (columns, ['---'] * len(columns), *cells):
    print('| ' + ' | '.join(line) + ' |')
  figures = {f'batch{r["batch"]}.{k}': v for r in rows for k, v in r.items()
             if k not in ('batch', 'prompt_len', 'new_tokens')}
  results_lib.write(a.result_name, figures, headline=headline(figures),
                    tables=[results_lib.table(title, columns, cells)],
                    config={k: v for k, v in vars(a).items()
                            if k not in ('results_dir', 'result_name')},
                    results_dir=a.results_dir)


if __name__ == '__main__':
  main()
