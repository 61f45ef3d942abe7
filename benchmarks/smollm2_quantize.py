"""Weight-only int8 / int4 quantization of SmolLM2-135M: perplexity change and kernel bytes.

  python -m genai.pretrained.fetch smollm2     # once
  python -m benchmarks.smollm2_quantize [--text ../shared/data/tinyshakespeare/input.txt]

Perplexity on the first 512 tokens of Tiny Shakespeare, scored exactly as
benchmarks/smollm2_perplexity.py does (no BOS), for the float32 model and for every dense
kernel quantized (`genai.compress.quantize`: int8 per output channel; int4 with groups of
32/64/192 input rows). Embeddings (tied with the output head) and norms stay float32.
Targets: int8 within 1% of float, int4 within 5%. Writes the result file
(benchmarks/results.py).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from smollm2_perplexity import nll_per_token, tokens_for  # noqa: E402  pylint: disable=wrong-import-position

from benchmarks import results as results_lib  # noqa: E402
from genai.compress import quantize as qz  # noqa: E402
from genai.models.transformer import Transformer  # noqa: E402
from genai.pretrained import fetch, gguf  # noqa: E402


def headline(fig: dict) -> dict:
  models = list(dict.fromkeys(k.rsplit('.', 1)[0] for k in fig if k.endswith('.ppl')))
  return {'quality': '; '.join(
      f'{m}: ppl {fig[m + ".ppl"]} ({fig[m + ".ppl_change_pct"]:+.2f}%), '
      f'{fig[m + ".kernel_bytes"] / 2**20:.1f} MiB' for m in models)}


def main():
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument('--text', default='../shared/data/tinyshakespeare/input.txt')
  p.add_argument('--num_tokens', type=int, default=512)
  results_lib.add_args(p, 'smollm2_quantize')
  a = p.parse_args()
  cfg, params, tok, _ = gguf.load_gguf(str(fetch.smollm2_path()))
  model = Transformer(cfg)
  ids = tokens_for(tok, Path(a.text), a.num_tokens)
  x = jnp.asarray(ids[None])
  rows = []
  float_fn = jax.jit(lambda p: model.apply({'params': p}, x)[0][0])
  t0 = time.perf_counter()
  ppl = math.exp(nll_per_token(np.asarray(float_fn(params)), ids))
  kernels = qz.quantize_params(params, 'int8')['shapes']
  float_bytes = sum(4 * math.prod(s) for s in kernels.values())
  rows.append({'model': 'float32', 'ppl': ppl, 'kernel_bytes': float_bytes,
               'first_call_s': time.perf_counter() - t0})
  q_fn = jax.jit(lambda q: qz.apply_quantized(model, q, x)[0][0])
  for kind, group, sym in (('int8', 0, True), ('int4', 32, True), ('int4', 32, False),
                           ('int4', 64, False), ('int4', 192, False)):
    qp = qz.quantize_params(params, kind, group_size=group or 32, symmetric=sym)
    t0 = time.perf_counter()
    q_ppl = math.exp(nll_per_token(np.asarray(q_fn(qp)), ids))
    name = kind + (f' g{group}' if group else '') + (' sym' if sym and group else '')
    rows.append({'model': name, 'ppl': q_ppl,
                 'kernel_bytes': qz.num_bytes(qp['quantized']),
                 'first_call_s': time.perf_counter() - t0})
  base = rows[0]['ppl']
  for r in rows:
    r['ppl_change_pct'] = 100 * (r['ppl'] / base - 1)
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}))
  title = (f'SmolLM2-135M, {a.num_tokens} tokens of {a.text}; dense kernels only '
           f'({len(kernels)} kernels, {float_bytes / 2**20:.1f} MiB in float32)')
  columns = ['weights', 'perplexity', 'change', 'kernel MiB']
  cells = [[r['model'], f'{r["ppl"]:.3f}', f'{r["ppl_change_pct"]:+.2f}%',
            f'{r["kernel_bytes"] / 2**20:.1f}'] for r in rows]
  print(title)
  for line in (columns, ['---'] * len(columns), *cells):
    print('| ' + ' | '.join(line) + ' |')
  figures = {f'{r["model"]}.{k}': round(v, 4) if isinstance(v, float) else v
             for r in rows for k, v in r.items() if k != 'model'}
  results_lib.write(a.result_name, figures, headline=headline(figures),
                    tables=[results_lib.table(title, columns, cells)],
                    config={'text': a.text, 'num_tokens': a.num_tokens},
                    results_dir=a.results_dir)


if __name__ == '__main__':
  main()
