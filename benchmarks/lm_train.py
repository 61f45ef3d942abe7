"""LM training benchmark: step speed, tokens/s, peak RSS, wall time, time to a target val loss.

  python -m benchmarks.lm_train \
    --config configs/lm/shakespeare_char.py:path=../shared/data/tinyshakespeare/input.txt

Runs the real experiment (experiments/lm.py) through the shared loop in a fresh workdir,
evaluating on the whole validation split every --eval_every steps, then times the jitted
train step in isolation. Prints one JSON object (also written to --out, with the validation
curve) and writes the result file (benchmarks/results.py).
"""
from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np
from ml_collections import config_flags

from benchmarks import results as results_lib
from benchmarks import sharded_step
from experiments import lm
from genai.train import loop

def define_flags() -> None:
  config_flags.DEFINE_config_file('config', None, 'LM config to benchmark.')
  flags.DEFINE_float('target_loss', 1.89, 'Report the training time to reach this.')
  flags.DEFINE_integer('eval_every', 100, 'Steps between validation passes.')
  flags.DEFINE_integer('timing_steps', 96, 'Steps timed in isolation.')
  flags.DEFINE_string('out', 'runs/bench/lm_train.json', 'Where to write the JSON.')
  results_lib.define_flags('lm_train')


def headline(fig: dict) -> dict:
  reached = (f'reached {fig["target_val_loss"]} at step {fig["steps_to_target"]} after '
             f'{fig["train_seconds_to_target"]} s of training' if fig.get('steps_to_target')
             else f'{fig["target_val_loss"]} not reached')
  return {'quality': f'val loss {fig["final_val_loss"]:.4f} ({reached})',
          'speed': f'{fig["ms_per_step_isolated"]} ms/step, '
                   f'{fig["tokens_per_sec_isolated"]:,.0f} tokens/s (isolated); '
                   f'{fig["wall_seconds_total"]:.0f} s wall',
          'memory': f'{fig["peak_rss_mib"]:,} MiB'}


def time_step(task: loop.Task, steps: int, steps_per_call: int, devices: int = 0) -> float:
  """Median-of-3 seconds per train step on real batches, compile excluded, run exactly as
  the loop runs it (`steps_per_call` steps per jitted call), on a data-parallel mesh of
  the first `devices` devices (0 = all)."""
  calls = max(steps // steps_per_call, 1)
  step = sharded_step.build(task, [next(task.train_iter) for _ in range(calls * steps_per_call)],
                            steps_per_call, devices)
  step.run(1)  # compile
  runs = []
  for _ in range(3):
    t0 = time.perf_counter()
    step.run(calls)
    runs.append((time.perf_counter() - t0) / (calls * steps_per_call))
  return float(np.median(runs))


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = flags.FLAGS.config
  config.train.eval_every = flags.FLAGS.eval_every
  config.train.checkpoint_every = config.train.num_steps  # Only the final checkpoint.
  config.eval.num_batches = 0                              # The whole validation split.
  config.eval.sample_tokens = 0
  workdir = tempfile.mkdtemp(prefix='genai_bench_')
  task = lm.build_task(config, workdir)

  # Clock training time net of evaluation, and record the validation curve.
  curve, eval_seconds = [], [0.0]
  evaluate = task.evaluate
  t_start = time.perf_counter()

  def timed_evaluate(state, step):
    t0 = time.perf_counter()
    train_seconds = t0 - t_start - eval_seconds[0]
    results = evaluate(state, step)
    eval_seconds[0] += time.perf_counter() - t0
    curve.append((step, train_seconds, results['val/loss']))
    return results

  task.evaluate = timed_evaluate
  loop.train(task, workdir=workdir, num_steps=config.train.num_steps, seed=config.seed,
             log_every=config.train.log_every, eval_every=config.train.eval_every,
             checkpoint_every=config.train.checkpoint_every,
             steps_per_call=config.train.steps_per_call, print_fn=print)
  wall = time.perf_counter() - t_start
  hit = next(((s, t) for s, t, l in curve if l <= flags.FLAGS.target_loss), None)

  sec_per_step = time_step(lm.build_task(config, workdir), flags.FLAGS.timing_steps,
                           config.train.steps_per_call)
  tokens_per_step = config.train.batch_size * config.data.block_size
  result = {
      'config': {'model': config.model.to_dict(), 'batch_size': config.train.batch_size,
                 'steps_per_call': config.train.steps_per_call,
                 'block_size': config.data.block_size, 'num_steps': config.train.num_steps,
                 'optimizer': config.optimizer.to_dict()},
      'final_val_loss': curve[-1][2],
      'best_val_loss': min(l for _, _, l in curve),
      'target_val_loss': flags.FLAGS.target_loss,
      'steps_to_target': hit[0] if hit else None,
      'train_seconds_to_target': round(hit[1], 2) if hit else None,
      'wall_seconds_total': round(wall, 2),
      'eval_seconds_total': round(eval_seconds[0], 2),
      'ms_per_step_isolated': round(sec_per_step * 1e3, 2),
      'tokens_per_sec_isolated': round(tokens_per_step / sec_per_step),
      'peak_rss_mib': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
      'val_curve': [(s, round(t, 2), round(l, 4)) for s, t, l in curve],
      'machine': f'{platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} '
                 f'{jax.devices()[0].platform}',
  }
  shutil.rmtree(workdir, ignore_errors=True)
  os.makedirs(os.path.dirname(flags.FLAGS.out) or '.', exist_ok=True)
  with open(flags.FLAGS.out, 'w') as f:
    json.dump(result, f, indent=1)
  print(json.dumps({k: v for k, v in result.items() if k != 'val_curve'}, indent=1))
  figures = {k: v for k, v in result.items() if k not in ('config', 'val_curve', 'machine')}
  results_lib.write(flags.FLAGS.result_name, figures, headline=headline(figures),
                    config=result['config'], results_dir=flags.FLAGS.results_dir)


if __name__ == '__main__':
  define_flags()
  flags.mark_flag_as_required('config')
  app.run(main)
