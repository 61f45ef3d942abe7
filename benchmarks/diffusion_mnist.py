"""Diffusion benchmark on full MNIST: train on the shared loop for a fixed step budget, then
sample with the EMA weights for FID.

  python -m benchmarks.diffusion_mnist --out runs/bench/diffusion_mnist \
    --config configs/diffusion/mnist.py:path=../shared/data/mnist \
    --config.train.num_steps=2000 --num_samples 10000 --sample_steps 50

Runs the real experiment (experiments/diffusion.py) in `<out>/workdir` (wiped first; kept
afterwards, so `python -m experiments.diffusion --workdir <out>/workdir --sample ...` works),
evaluating the held-out loss every --eval_every steps. Then draws --num_samples images with
the EMA params (--sampler, --sample_steps, --eta; compile timed apart) and writes
`<out>/samples.npz` (uint8 [N, 28, 28, 1], for FID), `<out>/grid.png` (the first 64) and
`<out>/result.json`. Prints the JSON: steps, wall time, examples/s, ms/step, peak RSS,
final train and held-out losses, sampling seconds per image; writes the result file
(benchmarks/results.py).
"""
from __future__ import annotations

import json
import os
import platform
import re
import resource
import time

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np
from ml_collections import config_flags

from benchmarks import results as results_lib
from experiments import diffusion
from genai.objectives import diffusion as dfn
from genai.sample import image_files
from genai.train import loop
from genai.train import workdir as workdir_lib

_LOG_LINE = re.compile(r'step (\d+)/\d+ \| loss ([0-9.eE+-]+) \| ([0-9.]+) ms/step')


def define_flags() -> None:
  config_flags.DEFINE_config_file(
      'config', 'configs/diffusion/mnist.py:path=../shared/data/mnist',
      'Diffusion config to benchmark (any --config.x=y override applies).')
  flags.DEFINE_string('out', 'runs/bench/diffusion_mnist', 'Output folder.')
  flags.DEFINE_integer('eval_every', 500, 'Steps between held-out loss evaluations.')
  flags.DEFINE_integer('num_samples', 1000, 'EMA samples written to samples.npz (FID).')
  flags.DEFINE_enum('sampler', 'ddim', ['ddim', 'ddpm'], 'Sampler for the FID samples.')
  flags.DEFINE_integer('sample_steps', 50, 'DDIM steps (ddpm always runs all T).')
  flags.DEFINE_float('eta', 0.0, 'DDIM eta.')
  flags.DEFINE_float('guidance', 0.0, 'Guidance scale (class-conditional configs).')
  flags.DEFINE_integer('sample_batch', 500, 'Images per jitted sampling call.')
  results_lib.define_flags('diffusion_mnist')


def headline(fig: dict) -> dict:
  s = lambda key: fig[f'sampling.{key}']
  return {'quality': f'{fig["steps"]:,} steps; held-out loss (EMA) '
                     f'{fig["final_eval_loss_ema"]:.4f}; {s("num_samples"):,} samples',
          'speed': f'{fig["examples_per_sec"]:,} examples/s training; {s("sampler")}-'
                   f'{s("steps")} sampling {s("ms_per_image")} ms/image',
          'memory': f'{fig["peak_rss_mib"]:,} MiB'}


def _peak_rss_mib() -> int:
  return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  config = f.config
  config.train.eval_every = f.eval_every
  config.train.checkpoint_every = config.train.num_steps  # Only the final checkpoint.
  workdir = workdir_lib.fresh_workdir(config, f.out)
  task = diffusion.build_task(config, workdir)

  curve, eval_seconds, logged = [], [0.0], []
  evaluate = task.evaluate
  t_start = time.perf_counter()

  def timed_evaluate(state, step):
    t0 = time.perf_counter()
    trained = t0 - t_start - eval_seconds[0]
    results = evaluate(state, step)
    eval_seconds[0] += time.perf_counter() - t0
    curve.append({'step': step, 'train_seconds': round(trained, 1),
                  'eval_loss_ema': round(results['eval/loss'], 5),
                  'eval_loss_raw': round(results['eval/loss_raw_params'], 5)})
    return results

  def print_fn(line):
    m = _LOG_LINE.match(line)
    if m:
      logged.append((int(m.group(1)), float(m.group(2)), float(m.group(3))))
    print(line, flush=True)

  task.evaluate = timed_evaluate
  state = loop.train(task, workdir=workdir, num_steps=config.train.num_steps, seed=config.seed,
                     log_every=config.train.log_every, eval_every=config.train.eval_every,
                     checkpoint_every=config.train.checkpoint_every,
                     steps_per_call=config.train.steps_per_call, print_fn=print_fn)
  wall = time.perf_counter() - t_start
  train_seconds = wall - eval_seconds[0]
  rss_after_training = _peak_rss_mib()

  # --- Samples for FID from the EMA params. -------------------------------------------
  info = json.load(open(os.path.join(workdir, 'image_info.json')))
  model = diffusion.make_backbone(config.model, info['image_shape'], info['num_classes'])
  sampler = diffusion.ImageSampler(
      model, dfn.make_schedule(config.diffusion), image_shape=info['image_shape'],
      num_classes=info['num_classes'], prediction=config.diffusion.prediction,
      value_range=info['value_range'], clip=config.sample.clip)
  labels = diffusion.sample_labels(f.num_samples, info['num_classes'])
  kw = dict(sampler=f.sampler, steps=f.sample_steps, eta=f.eta,
            guidance=f.guidance if info['num_classes'] else 0.0,
            batch_size=min(f.sample_batch, f.num_samples))
  t0 = time.perf_counter()  # Compile plus one batch, with another seed.
  sampler(state['ema_params'], jax.random.key(12345), kw['batch_size'],
          None if labels is None else labels[:kw['batch_size']], **kw)
  warmup = time.perf_counter() - t0
  t0 = time.perf_counter()
  x = sampler(state['ema_params'], jax.random.key(0), f.num_samples, labels, **kw)
  sample_seconds = time.perf_counter() - t0
  image_files.write_samples(f.out, 'samples', x, info['value_range'], labels)
  os.remove(os.path.join(f.out, 'samples.png'))  # A 10k-image grid; grid.png has 64.
  image_files.write_png(os.path.join(f.out, 'grid.png'), image_files.make_grid(
      image_files.to_uint8(x[:64], info['value_range'])))

  bs = config.train.batch_size
  n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state['params']))
  result = {
      'config': {'model': config.model.to_dict(), 'diffusion': config.diffusion.to_dict(),
                 'batch_size': bs, 'num_steps': config.train.num_steps,
                 'steps_per_call': config.train.steps_per_call,
                 'optimizer': config.optimizer.to_dict(), 'ema_decay': config.ema.decay},
      'num_params': n_params,
      'steps': int(state['step']),
      'wall_seconds_total': round(wall, 1),
      'train_seconds': round(train_seconds, 1),
      'eval_seconds_total': round(eval_seconds[0], 1),
      'examples_per_sec': round(int(state['step']) * bs / train_seconds, 1),
      'ms_per_step_last_window': logged[-1][2] if logged else None,
      'final_train_loss_last_window': logged[-1][1] if logged else None,
      'final_eval_loss_ema': curve[-1]['eval_loss_ema'] if curve else None,
      'final_eval_loss_raw_params': curve[-1]['eval_loss_raw'] if curve else None,
      'peak_rss_mib_training': rss_after_training,
      'sampling': {'sampler': f.sampler, 'steps': f.sample_steps if f.sampler == 'ddim'
                   else config.diffusion.num_timesteps, 'eta': f.eta,
                   'guidance': kw['guidance'], 'num_samples': f.num_samples,
                   'batch': kw['batch_size'], 'compile_plus_one_batch_seconds': round(warmup, 1),
                   'seconds': round(sample_seconds, 1),
                   'ms_per_image': round(1e3 * sample_seconds / f.num_samples, 2)},
      'peak_rss_mib': _peak_rss_mib(),
      'samples_npz': os.path.join(f.out, 'samples.npz'),
      'eval_curve': curve,
      'train_loss_log': [(s, l) for s, l, _ in logged],
      'machine': f'{platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} '
                 f'{jax.devices()[0].platform}',
  }
  with open(os.path.join(f.out, 'result.json'), 'w') as fh:
    json.dump(result, fh, indent=1)
  print(json.dumps({k: v for k, v in result.items() if k not in ('train_loss_log',)},
                   indent=1))
  figures = results_lib.flatten({k: v for k, v in result.items() if k not in (
      'config', 'eval_curve', 'train_loss_log', 'machine')})
  results_lib.write(f.result_name, figures, headline=headline(figures), config=result['config'],
                    results_dir=f.results_dir)


if __name__ == '__main__':
  define_flags()
  app.run(main)
