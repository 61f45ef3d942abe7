"""The same training command run twice from scratch, timed start to exit: the second run reads
its compiled steps from JAX's persistent compilation cache (genai/train/compile_cache.py).

  python -m benchmarks.lm_command_cache --steps 2000 \
      --config configs/lm/shakespeare_char.py:path=../shared/data/tinyshakespeare/input.txt

Each run gets a fresh workdir (so both train every step) and the same fresh cache folder
(the first run fills it). Prints and records the wall time of each run, their ratio, and each
run's own time breakdown (the `Time ...` line every run prints: start-up, compile, steps,
data wait, eval, checkpoints).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from benchmarks import results as results_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _breakdown(out: str) -> dict[str, float]:
  line = next((l for l in out.splitlines() if l.startswith('Time ')), '')
  return {k: float(v) for k, v in re.findall(r'([a-z][a-z -]*?) ([\d.]+)s \(', line)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default='configs/lm/shakespeare_char.py')
  parser.add_argument('--steps', type=int, default=2000)
  parser.add_argument('--runs', type=int, default=2)
  results_lib.add_args(parser, 'lm_command_cache')
  args = parser.parse_args()
  tmp = tempfile.mkdtemp(prefix='genai-cache-bench-')
  env = dict(os.environ, GENAI_COMPILATION_CACHE=os.path.join(tmp, 'cache'))
  walls, rows, figures = [], [], {}
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
      rows.append([i + 1, round(wall, 1)] + [parts.get(k) for k in
                   ('start-up', 'compile', 'steps', 'eval', 'checkpoints')])
      figures[f'run{i + 1}.wall_s'] = round(wall, 2)
      figures.update({f'run{i + 1}.{k}_s': v for k, v in parts.items()})
      print(f'run {i + 1}: {wall:.1f} s start to exit; ' +
            next((l for l in out.stdout.splitlines() if l.startswith('Time ')), ''))
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  ratio = walls[-1] / walls[0]
  figures['second_over_first'] = round(ratio, 3)
  print(f'second run / first run: {ratio:.2f} (target <= 0.8)')
  results_lib.write(
      args.result_name, figures,
      headline={'speed': f'second run {walls[-1]:.1f} s vs first {walls[0]:.1f} s '
                         f'({ratio:.2f}x) with the compilation cache'},
      tables=[results_lib.table('runs (seconds)', ['run', 'wall', 'start-up', 'compile',
                                                   'steps', 'eval', 'checkpoints'], rows)],
      config={'config': args.config, 'steps': args.steps}, results_dir=args.results_dir)


if __name__ == '__main__':
  main()
