"""Step time and tokens/s of the char GPT on 1, 2, 4 and 8 fake CPU devices, per mesh layout.

A correctness-of-scaling check, not a speed claim: fake devices share this machine's
cores, so more devices cannot be faster here. What it shows: every layout compiles and
runs through the shared loop at a fixed global batch, and ends at the same loss as one
device (the last column), with the communication overhead each layout adds on top.

  python -m benchmarks.sharding_scaling [--devices 1,2,4,8] [--steps 60] [--batch 32]

Each device count runs in its own subprocess (the fake-device count is fixed at start-up).
Prints a table and writes the result file (benchmarks/results.py).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from benchmarks import results as results_lib

LAYOUTS = {  # name -> parallel overrides (the device count fills the -1 axis)
    'data': {'data': -1},
    'fsdp': {'data': 1, 'fsdp': -1},
    'tensor': {'data': 1, 'tensor': -1},
}


def child(args):
  os.environ['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={args.devices}'
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  sys.path.insert(0, os.getcwd())
  from configs.lm import pydoc_char  # pylint: disable=import-outside-toplevel
  from experiments import lm  # pylint: disable=import-outside-toplevel
  from genai.train import workdir as workdir_lib  # pylint: disable=import-outside-toplevel

  results = {}
  for name, overrides in LAYOUTS.items():
    c = pydoc_char.get_config('')
    c.model.num_heads = 8  # tensor (up to 8) must divide the heads
    c.train.batch_size = args.batch
    c.train.num_steps = args.steps
    c.train.steps_per_call = 1
    c.optimizer.warmup_steps = 10
    c.train.log_every = args.steps // 3
    c.train.eval_every = 0
    c.train.checkpoint_every = 0
    c.eval.sample_tokens = 0
    c.eval.num_batches = 4
    for k, v in overrides.items():
      c.parallel[k] = v
    lines = []
    with tempfile.TemporaryDirectory() as wd:
      t0 = time.perf_counter()
      workdir_lib.run(c, wd, lm.build_task, print_fn=lines.append)
      wall = time.perf_counter() - t0
    steps = [l for l in lines if l.startswith('step ')]
    last = steps[-1].split(' | ')  # the last window: compiled, steady state
    ms = float(last[2].split()[0])
    loss = float(last[1].split()[1])
    results[name] = {'ms_per_step': ms, 'tokens_per_sec': args.batch * c.data.block_size * 1e3 / ms,
                     'final_window_loss': loss, 'wall_s': wall}
  print('RESULT ' + json.dumps(results))


def headline(fig: dict) -> dict:
  runs = [k.rsplit('.', 1)[0].split('.') for k in fig if k.endswith('.ms_per_step')]
  layouts = list(dict.fromkeys(layout for layout, _ in runs))
  lo, hi = min(int(n[:-3]) for _, n in runs), max(int(n[:-3]) for _, n in runs)
  losses = sorted({f'{v:.4f}' for k, v in fig.items() if k.endswith('.final_window_loss')})
  ms = lambda layout, n: (f'{fig[f"{layout}.{n}dev.ms_per_step"]:.1f}'
                          if f'{layout}.{n}dev.ms_per_step' in fig else '-')
  return {'quality': f'{len(runs)} device x layout runs, final loss {" / ".join(losses)} '
                     f'(identical: {len(losses) == 1})',
          'speed': f'ms/step on {lo} / {hi} fake devices: ' + ', '.join(
              f'{layout} {ms(layout, lo)} / {ms(layout, hi)}' for layout in layouts)}


def main():
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument('--devices', default='1,2,4,8')
  p.add_argument('--steps', type=int, default=60)
  p.add_argument('--batch', type=int, default=32)
  p.add_argument('--child', action='store_true')
  results_lib.add_args(p, 'sharding_scaling')
  args = p.parse_args()
  if args.child:
    args.devices = int(args.devices)
    return child(args)
  rows = []
  for n in [int(x) for x in args.devices.split(',')]:
    out = subprocess.run([sys.executable, '-m', 'benchmarks.sharding_scaling', '--child',
                          '--devices', str(n), '--steps', str(args.steps), '--batch',
                          str(args.batch)], capture_output=True, text=True, check=False)
    line = [l for l in out.stdout.splitlines() if l.startswith('RESULT ')]
    if out.returncode or not line:
      sys.exit(f'{n} devices failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}')
    for name, r in json.loads(line[0][7:]).items():
      rows.append((n, name, r))
  title = (f'char GPT 4 layers x 128, 8 heads (pydoc_char), global batch {args.batch} x 64 '
           f'tokens, {args.steps} steps; fake CPU devices sharing one machine')
  columns = ['devices', 'layout', 'ms/step', 'tokens/s', 'tokens/s/device', 'loss (last window)']
  cells = [[str(n), name, f'{r["ms_per_step"]:.1f}', f'{r["tokens_per_sec"]:,.0f}',
            f'{r["tokens_per_sec"] / n:,.0f}', f'{r["final_window_loss"]:.4f}']
           for n, name, r in rows]
  print(title)
  for line in (columns, ['---'] * len(columns), *cells):
    print('| ' + ' | '.join(line) + ' |')
  figures = {f'{name}.{n}dev.{k}': v for n, name, r in rows for k, v in r.items()}
  results_lib.write(args.result_name, figures, headline=headline(figures),
                    tables=[results_lib.table(title, columns, cells)],
                    config={'devices': args.devices, 'steps': args.steps, 'batch': args.batch},
                    results_dir=args.results_dir)


if __name__ == '__main__':
  main()
