"""Fine-tune the real SmolLM2-135M-Instruct on Tiny Shakespeare, full and LoRA, on this CPU.

  python -m genai.pretrained.fetch smollm2     # once
  python -m benchmarks.smollm2_finetune [--steps 40] [--modes full,lora] \
      [--text ../shared/data/tinyshakespeare/input.txt]

Each mode runs configs/lm/smollm2_shakespeare.py (block 256, batch 8, packed blocks)
through the shared loop in its own subprocess, for --steps steps, and prints: validation
perplexity (8 batches = 16k tokens of the last 10% of the text) of the pretrained model
and after fine-tuning, trainable parameters, training tokens/s (steady-state windows),
wall time and peak RSS. One JSON line per mode, then a table; writes the result file
(benchmarks/results.py).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from benchmarks import results as results_lib


def headline(fig: dict) -> dict:
  modes = [k.split('.')[0] for k in fig if k.endswith('.val_ppl_after')]
  f = lambda m, key: fig[f'{m}.{key}']
  return {'quality': '; '.join(f'{m}: val ppl {f(m, "val_ppl_before")} -> '
                               f'{f(m, "val_ppl_after")}' for m in modes),
          'speed': '; '.join(f'{m}: {f(m, "train_tokens_per_s")} tokens/s, '
                             f'{f(m, "ms_per_step"):,.0f} ms/step' for m in modes),
          'memory': '; '.join(f'{m}: {f(m, "peak_rss_gb")} GB' for m in modes)}


def child(a):
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from configs.lm import smollm2_shakespeare  # pylint: disable=import-outside-toplevel
  from experiments import lm  # pylint: disable=import-outside-toplevel
  from genai.models import lora as lora_lib  # pylint: disable=import-outside-toplevel
  from genai.parallel import mesh as mesh_lib  # pylint: disable=import-outside-toplevel
  from genai.parallel import sharding  # pylint: disable=import-outside-toplevel
  from genai.train import workdir as workdir_lib  # pylint: disable=import-outside-toplevel

  arg = f'path={a.text}' + (',lora' if a.mode == 'lora' else '')
  c = smollm2_shakespeare.get_config(arg)
  c.train.num_steps = a.steps
  c.train.log_every = max(a.steps // 4, 1)
  c.train.eval_every = a.steps
  c.train.checkpoint_every = a.steps
  c.optimizer.warmup_steps = min(c.optimizer.warmup_steps, a.steps // 4)
  c.eval.sample_tokens = 0
  with tempfile.TemporaryDirectory() as wd:
    # Before: the pretrained weights, evaluated exactly as the run evaluates.
    task = lm.build_task(c, wd)
    init, _ = sharding.sharded_init(task.init_state, mesh_lib.make_mesh(), sharding.DEFAULT_RULES,
                                    *task.init_args)
    state = init(jax.random.key(0), *task.init_args)
    before = task.evaluate(state, 0)['val/perplexity']
    trainable = (lora_lib.num_params(state['lora']) if 'lora' in state else
                 sum(x.size for x in jax.tree.leaves(state['params'])))
    total = sum(x.size for x in jax.tree.leaves(state['params']))
    del state, task, init
    lines = []
    t0 = time.perf_counter()
    workdir_lib.run(c, os.path.join(wd, 'run'), lm.build_task, print_fn=lines.append)
    wall = time.perf_counter() - t0
  after = [float(l.split('val/perplexity ')[1].split(',')[0]) for l in lines if 'val/perplexity' in l][-1]
  windows = [l for l in lines if l.startswith('step ')]
  ms = [float(l.split(' | ')[2].split(' ms')[0]) for l in windows[1:]]  # skip the compile window
  tok_s = [c.train.batch_size * c.data.block_size * 1e3 / m for m in ms]
  print('RESULT ' + json.dumps({
      'mode': a.mode, 'steps': a.steps, 'tokens_per_step': c.train.batch_size * c.data.block_size,
      'val_ppl_before': round(before, 3), 'val_ppl_after': round(after, 3),
      'trainable_params': int(trainable), 'total_params': int(total),
      'train_tokens_per_s': round(float(np.median(tok_s)), 1), 'ms_per_step': round(float(np.median(ms)), 1),
      'wall_s': round(wall, 1), 'peak_rss_gb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
      'lr': c.optimizer.learning_rate}), flush=True)


def main():
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument('--steps', type=int, default=40)
  p.add_argument('--modes', default='full,lora')
  p.add_argument('--mode', default='')
  p.add_argument('--text', default='../shared/data/tinyshakespeare/input.txt')
  results_lib.add_args(p, 'smollm2_finetune')
  a = p.parse_args()
  if a.mode:
    return child(a)
  rows = []
  for mode in a.modes.split(','):
    out = subprocess.run([sys.executable, '-m', 'benchmarks.smollm2_finetune', '--mode', mode,
                          '--steps', str(a.steps), '--text', a.text], capture_output=True, text=True)
    line = [l for l in out.stdout.splitlines() if l.startswith('RESULT ')]
    if out.returncode or not line:
      sys.exit(f'{mode} failed:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}')
    rows.append(json.loads(line[0][7:]))
    print(json.dumps(rows[-1]), flush=True)
  columns = ['mode', 'trainable params', 'val ppl before', 'val ppl after', 'train tok/s',
             'ms/step', 'wall', 'peak RSS']
  cells = [[r['mode'], f'{r["trainable_params"]:,} of {r["total_params"]:,}',
            str(r['val_ppl_before']), str(r['val_ppl_after']), f'{r["train_tokens_per_s"]:,.0f}',
            str(r['ms_per_step']), f'{r["wall_s"]:.0f} s', f'{r["peak_rss_gb"]} GB'] for r in rows]
  for line in (columns, ['---'] * len(columns), *cells):
    print('| ' + ' | '.join(line) + ' |')
  figures = {f'{r["mode"]}.{k}': v for r in rows for k, v in r.items() if k != 'mode'}
  results_lib.write(a.result_name, figures, headline=headline(figures),
                    tables=[results_lib.table('', columns, cells)],
                    config={'steps': a.steps, 'modes': a.modes, 'text': a.text},
                    results_dir=a.results_dir)


if __name__ == '__main__':
  main()
