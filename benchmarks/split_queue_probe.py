"""How deep a queue of all-reduce calls a CPU host split into devices survives.

On a host split into 2 CPU devices (genai/parallel/cpu_devices.py), XLA:CPU deadlocks when
many jitted calls with an in-process all-reduce are dispatched before any is awaited: one
device's share of the all-reduce waits for the other's and XLA aborts the process
(`Termination timeout for all reduce`). This probe runs the char LM's 1-step train call
(configs/lm/shakespeare_char.py, batch split over 2 devices) `--calls` times in a child
process per setting, waiting for the results every N calls, and reports whether each child
finished. XLA's abort timeout is lowered to `--abort_s` so a hung child ends quickly. The
train loop waits after every call (genai/train/loop.py): N = 1.

  python -m benchmarks.split_queue_probe --data ../shared/data/tinyshakespeare/input.txt
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

from benchmarks import results as results_lib


def child(data: str, calls: int, every: int) -> None:
  """One probe (in its own process: the split is set before JAX starts)."""
  from genai.parallel import cpu_devices  # pylint: disable=import-outside-toplevel
  cpu_devices.set_count(2)
  import tempfile  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from benchmarks import sharded_step  # pylint: disable=import-outside-toplevel
  from configs.lm import shakespeare_char  # pylint: disable=import-outside-toplevel
  from experiments import lm  # pylint: disable=import-outside-toplevel
  if jax.device_count() != 2:
    raise SystemExit(f'expected 2 CPU devices, got {jax.device_count()}')
  config = shakespeare_char.get_config(f'path={data}')
  task = lm.build_task(config, tempfile.mkdtemp(prefix='split_queue_'))
  step = sharded_step.build(task, [next(task.train_iter) for _ in range(8)], 1)
  jax.block_until_ready(step.call())
  for i in range(calls):
    metrics = step.call(i)
    if (i + 1) % every == 0:
      jax.block_until_ready(metrics)
  jax.block_until_ready(metrics)


def probe(data: str, calls: int, every: int, abort_s: int) -> bool:
  """Whether a child process finished (False: XLA aborted a stuck all-reduce)."""
  env = dict(os.environ)
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') +
                      f' --xla_cpu_collective_call_terminate_timeout_seconds={abort_s}').strip()
  proc = subprocess.run([sys.executable, '-m', 'benchmarks.split_queue_probe', '--child',
                         f'--data={data}', f'--calls={calls}', f'--every={every}'],
                        env=env, capture_output=True, text=True, check=False,
                        timeout=600)
  hung = 'Termination timeout for' in proc.stderr
  if proc.returncode and not hung:
    raise RuntimeError(f'probe every={every} failed:\n{proc.stderr[-3000:]}')
  return not hung


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument('--data', default='../shared/data/tinyshakespeare/input.txt')
  ap.add_argument('--calls', type=int, default=256)
  ap.add_argument('--every', default='1,2,32,64,256', help='waits every N calls, each N')
  ap.add_argument('--repeats', type=int, default=3)
  ap.add_argument('--abort_s', type=int, default=15)
  ap.add_argument('--child', action='store_true')
  results_lib.add_args(ap, 'split_queue_probe')
  args = ap.parse_args()
  if args.child:
    child(args.data, args.calls, int(args.every))
    return
  rows, figures = [], {'calls': args.calls, 'repeats': args.repeats}
  for every in (int(n) for n in args.every.split(',')):
    done = [probe(args.data, args.calls, every, args.abort_s) for _ in range(args.repeats)]
    figures[f'every_{every}.finished'] = sum(done)
    rows.append([str(every), f'{sum(done)}/{len(done)}'])
    print(f'wait every {every} calls: {sum(done)}/{len(done)} finished', flush=True)
  headline = (f'{args.calls} 1-step LM calls on 2 CPU devices, runs that finished when '
              'waiting every N calls: ' + ', '.join(f'N={n} {f}' for n, f in rows))
  results_lib.write(args.result_name, figures, headline={'speed': headline},
                    tables=[results_lib.table(
                        'runs that finished (the rest: XLA aborted a stuck all-reduce)',
                        ['wait every N calls', 'finished'], rows)],
                    results_dir=args.results_dir)


if __name__ == '__main__':
  main()
