"""GAN training benchmark on full MNIST: steps, wall time, examples/s, peak RSS, final losses,
a sample grid and 10,000 EMA samples (.npz, uint8 [N, 28, 28, 1]) for FID.

  python -m benchmarks.gan_mnist --out_dir runs/bench/gan_mnist \
    --config configs/gan/mnist.py:path=../shared/data/mnist

Runs the real experiment (experiments/gan.py) through the shared loop in <out_dir>/workdir
(wiped first, kept after: `python -m experiments.gan --workdir <out_dir>/workdir --sample`)
for `config.train.num_steps` generator steps (the budget: override with
--config.train.num_steps=N), then samples from the EMA generator. Prints one JSON object
(also written to <out_dir>/gan_mnist.json) and writes the result file (benchmarks/results.py).
"""
from __future__ import annotations

import json
import os
import platform
import resource
import time

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np
from ml_collections import config_flags

from benchmarks import results as results_lib
from experiments import gan
from genai.sample import image_files
from genai.train import loop
from genai.train import workdir as workdir_lib

DEFAULT_CONFIG = 'configs/gan/mnist.py:path=../shared/data/mnist'


def define_flags() -> None:
  config_flags.DEFINE_config_file('config', DEFAULT_CONFIG, 'GAN config to benchmark.')
  flags.DEFINE_string('out_dir', 'runs/bench/gan_mnist', 'JSON, sample grid and .npz go here.')
  flags.DEFINE_integer('num_fid_samples', 10_000, 'EMA samples written for FID.')
  flags.DEFINE_integer('evals', 5, 'Sample grids written during training.')
  results_lib.define_flags('gan_mnist')


def headline(fig: dict) -> dict:
  prefix = 'final_train_metrics.'
  losses = ', '.join(f'{k[len(prefix):]} {v:.3f}' for k, v in sorted(fig.items())
                     if k.startswith(prefix) and k.endswith('loss') and isinstance(v, float))
  return {'quality': f'{fig["steps"]:,} G steps; final {losses}; '
                     f'{fig["fid_samples.count"]:,} EMA samples for FID',
          'speed': f'{fig["examples_per_sec_last_log_window"]:,} examples/s',
          'memory': f'{fig["peak_rss_mib"]:,} MiB'}


def last_logged(workdir: str) -> dict[str, float]:
  """The last logged value of every train/ scalar (each a mean over `log_every` steps)."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  acc = event_accumulator.EventAccumulator(workdir, size_guidance={'tensors': 0})
  acc.Reload()
  out = {}
  for tag in acc.Tags()['tensors']:
    if tag.startswith('train/'):
      event = acc.Tensors(tag)[-1]
      out[tag[len('train/'):]] = round(float(tf.make_ndarray(event.tensor_proto)), 4)
  return out


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  config = f.config
  tc = config.train
  tc.eval_every = max(tc.num_steps // max(f.evals, 1), 1)
  tc.checkpoint_every = tc.num_steps  # Only the final checkpoint.
  workdir = workdir_lib.fresh_workdir(config, f.out_dir)  # Kept after (sampling, TB).

  t0 = time.perf_counter()
  task = gan.build_task(config, workdir)
  setup_seconds = time.perf_counter() - t0
  eval_seconds = [0.0]
  evaluate = task.evaluate

  def timed_evaluate(state, step):
    t = time.perf_counter()
    out = evaluate(state, step)
    eval_seconds[0] += time.perf_counter() - t
    return out

  task.evaluate = timed_evaluate
  t_train = time.perf_counter()
  state = loop.train(task, workdir=workdir, num_steps=tc.num_steps, seed=config.seed,
                     log_every=tc.log_every, eval_every=tc.eval_every,
                     checkpoint_every=tc.checkpoint_every, steps_per_call=tc.steps_per_call,
                     print_fn=print)
  train_wall = time.perf_counter() - t_train
  train_seconds = train_wall - eval_seconds[0]

  t = time.perf_counter()
  nets = gan.GanNets(config, tuple(workdir_lib.load_image_info(workdir, 'gan')['image_shape']))
  images = gan.generate_images(nets, state, f.num_fid_samples, seed=config.seed + 100,
                               standing=config.eval.standing_stats)
  sample_seconds = time.perf_counter() - t
  u8 = image_files.to_uint8(images, '[-1,1]')
  npz = os.path.join(f.out_dir, 'ema_samples.npz')
  np.savez_compressed(npz, images=u8)
  png = os.path.join(f.out_dir, 'ema_samples_grid.png')
  image_files.write_png(png, image_files.make_grid(u8[:100], ncols=10))

  examples = tc.num_steps * tc.batch_size * tc.n_critic
  final = last_logged(workdir)  # Means over the last `log_every` steps (steady state).
  result = {
      'config': {'model': config.model.to_dict(), 'loss': config.loss,
                 'gp': config.gp.to_dict(), 'batch_size': tc.batch_size,
                 'n_critic': tc.n_critic, 'steps_per_call': tc.steps_per_call,
                 'optimizer_g': config.optimizer_g.to_dict(),
                 'optimizer_d': config.optimizer_d.to_dict(), 'ema': config.ema.to_dict()},
      'steps': tc.num_steps,
      'epochs': round(examples / 60000, 2),
      'train_seconds': round(train_seconds, 1),
      'wall_seconds_train_loop': round(train_wall, 1),
      'eval_seconds': round(eval_seconds[0], 1),
      'setup_seconds': round(setup_seconds, 1),
      'ms_per_step_incl_compile': round(1e3 * train_seconds / tc.num_steps, 1),
      'examples_per_sec_incl_compile': round(examples / train_seconds, 1),
      'ms_per_step_last_log_window': round(1e3 / final['steps_per_sec'], 1),
      'examples_per_sec_last_log_window': round(final['examples_per_sec'], 1),
      'final_train_metrics': final,
      'fid_samples': {'path': npz, 'count': int(len(u8)), 'seconds': round(sample_seconds, 1)},
      'sample_grid': png,
      'peak_rss_mib': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
      'machine': f'{platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} '
                 f'{jax.devices()[0].platform}',
  }
  result['workdir'] = workdir
  with open(os.path.join(f.out_dir, 'gan_mnist.json'), 'w') as fh:
    json.dump(result, fh, indent=1)
  print(json.dumps(result, indent=1))
  figures = results_lib.flatten({k: v for k, v in result.items() if k not in ('config', 'machine')})
  results_lib.write(f.result_name, figures, headline=headline(figures), config=result['config'],
                    results_dir=f.results_dir)


if __name__ == '__main__':
  define_flags()
  app.run(main)
