"""The baby recipe's whole command, start to exit, against the PyTorch reference's run with
the same evaluation work; and the same command again, reading its compiled steps from JAX's
persistent compilation cache (genai/train/compile_cache.py).

  python -m benchmarks.lm_command_cache --steps 2000 \
      --config configs/lm/shakespeare_char.py:path=../shared/data/tinyshakespeare/input.txt

Runs, in this order, each timed from process start to exit: `experiments.lm` with a fresh
workdir and an empty cache folder; `benchmarks/nanogpt_reference.py` (PyTorch eager, when
torch is installed) at the config's model and batch shape and steps, doing the config's
evaluation work (every `train.eval_every` steps and at the end: `eval.num_batches` val
batches of `eval.batch_size`, `eval.sample_tokens` generated, a checkpoint written); then
`experiments.lm` again with a fresh workdir and the cache the first run filled. Records the
wall time of each, the ratios (first / reference, second / first), and each genai run's own
time breakdown (the `Time ...` line every run prints: start-up, compile, steps, data wait,
eval, checkpoints).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from benchmarks import results as results_lib
from genai.train import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _breakdown(out: str) -> dict[str, float]:
  line = next((l for l in out.splitlines() if l.startswith('Time ')), '')
  return {k: float(v) for k, v in re.findall(r'([a-z][a-z -]*?) ([\d.]+)s \(', line)}


def load_config(spec: str):
  """The ml-collections config of 'path.py[:arg]', the path relative to the repository."""
  return cli.load_config_spec(os.path.join(REPO, spec))


def reference_command(config, steps: int, out_dir: str) -> list[str] | None:
  """nanogpt_reference's command doing the config's training and evaluation work."""
  if importlib.util.find_spec('torch') is None or config.data.source != 'files':
    return None
  m, tc, ec, oc = config.model, config.train, config.eval, config.optimizer
  return [sys.executable, '-m', 'benchmarks.nanogpt_reference', '--data', config.data.path,
          '--seeds', '0', '--steps', str(steps), '--batch_size', str(tc.batch_size),
          '--block_size', str(config.data.block_size), '--layers', str(m.num_layers),
          '--heads', str(m.num_heads), '--width', str(m.d_model),
          '--weight_decay', str(oc.weight_decay), '--grad_clip', str(oc.grad_clip_norm),
          '--eval_interval', str(tc.eval_every), '--eval_iters', str(ec.num_batches),
          '--eval_batch_size', str(ec.batch_size), '--sample_tokens', str(ec.sample_tokens),
          '--out_dir', out_dir, '--results_dir', out_dir]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default='configs/lm/shakespeare_char.py')
  parser.add_argument('--steps', type=int, default=2000)
  parser.add_argument('--runs', type=int, default=2)
  parser.add_argument('--reference', action=argparse.BooleanOptionalAction, default=True,
                      help='Also run the PyTorch reference (needs torch and a files corpus).')
  results_lib.add_args(parser, 'lm_command_cache')
  args = parser.parse_args()
  tmp = tempfile.mkdtemp(prefix='genai-cache-bench-')
  env = dict(os.environ, GENAI_COMPILATION_CACHE=os.path.join(tmp, 'cache'))
  walls, rows, figures = [], [], {}
  config = load_config(args.config)
  ref_dir = os.path.join(tmp, 'reference')
  ref_cmd = reference_command(config, args.steps, ref_dir) if args.reference else None
  ref_wall = None
  try:
    for i in range(args.runs):
      cmd = [sys.executable, '-m', 'experiments.lm', '--config', args.config,
             f'--workdir={os.path.join(tmp, f"w{i}")}', f'--config.train.num_steps={args.steps}']
      t0 = time.perf_counter()
      out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
      wall = time.perf_counter() - t0
      if out.returncode:
        sys.exit(f'run {i + 1} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}')
      parts = _breakdown(out.stdout)
      walls.append(wall)
      rows.append([f'genai run {i + 1}', round(wall, 1)] + [parts.get(k) for k in
                   ('start-up', 'compile', 'steps', 'eval', 'checkpoints')])
      figures[f'run{i + 1}.wall_s'] = round(wall, 2)
      figures.update({f'run{i + 1}.{k}_s': v for k, v in parts.items()})
      print(f'run {i + 1}: {wall:.1f} s start to exit; ' +
            next((l for l in out.stdout.splitlines() if l.startswith('Time ')), ''), flush=True)
      if i == 0 and ref_cmd:  # between the two genai runs: the same load as the first
        os.makedirs(ref_dir, exist_ok=True)
        t0 = time.perf_counter()
        out = subprocess.run(ref_cmd, cwd=REPO, capture_output=True, text=True)
        ref_wall = time.perf_counter() - t0
        if out.returncode:
          sys.exit(f'the reference failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}')
        r = next(json.loads(l) for l in out.stdout.splitlines() if '"seed"' in l)
        rows.append(['PyTorch reference', round(ref_wall, 1), None, None, r['train_seconds'],
                     r['eval_seconds'], None])
        figures.update({'reference.wall_s': round(ref_wall, 2),
                        'reference.steps_s': r['train_seconds'],
                        'reference.eval_s': r['eval_seconds']})
        print(f'PyTorch reference: {ref_wall:.1f} s start to exit (steps {r["train_seconds"]} s'
              f', eval {r["eval_seconds"]} s)', flush=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  ratio = walls[-1] / walls[0]
  figures['second_over_first'] = round(ratio, 3)
  print(f'second run / first run: {ratio:.2f} (target <= 0.8)')
  speed = (f'second run {walls[-1]:.1f} s vs first {walls[0]:.1f} s ({ratio:.2f}x) with the '
           'compilation cache')
  if ref_wall:
    figures['first_over_reference'] = round(walls[0] / ref_wall, 3)
    figures['second_over_reference'] = round(walls[-1] / ref_wall, 3)
    print(f'genai first run / PyTorch reference: {walls[0] / ref_wall:.2f}, second run / '
          f'reference: {walls[-1] / ref_wall:.2f} (target <= 1.0)')
    speed = (f'whole command {walls[0]:.1f} s (first run), {walls[-1]:.1f} s (second, cached) '
             f'vs PyTorch reference {ref_wall:.1f} s ({walls[0] / ref_wall:.2f}x / '
             f'{walls[-1] / ref_wall:.2f}x); second/first {ratio:.2f}x')
  results_lib.write(
      args.result_name, figures, headline={'speed': speed},
      tables=[results_lib.table('runs (seconds)', ['run', 'wall', 'start-up', 'compile',
                                                   'steps', 'eval', 'checkpoints'], rows)],
      config={'config': args.config, 'steps': args.steps}, results_dir=args.results_dir)


if __name__ == '__main__':
  main()
