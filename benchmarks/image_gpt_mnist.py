"""Autoregressive image transformer benchmark on full MNIST: test bits/dim after a fixed step
budget, then samples for FID.

  python -m benchmarks.image_gpt_mnist --out_dir runs/bench/image_gpt_mnist \
    --config configs/image_gpt/mnist.py:path=../shared/data/mnist \
    --config.train.num_steps=1200 --num_samples 2000

Runs the real experiment (experiments/image_gpt.py) through the shared loop in
<out_dir>/workdir (wiped first, kept after: `python -m experiments.image_gpt --workdir
<out_dir>/workdir --sample` works). Then scores the 10,000 test images (binarised once with
the VAE benchmark's fixed seed, so the bits/dim compare with vae_mnist's -ELBO), draws
--num_samples class-conditional samples (classes in turn) with the KV-cache decoder and
writes <out_dir>/samples.npz (uint8 [N, 28, 28, 1], for benchmarks.fid_score),
<out_dir>/grid.png, <out_dir>/binarised_train.npz (real train images binarised as in
training: the FID floor of binary pixels) and <out_dir>/result.json; prints the JSON and
writes the result file (benchmarks/results.py).
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
from benchmarks.gan_mnist import last_logged
from experiments import image_gpt
from genai.data import images as images_lib
from genai.sample import image_files
from genai.train import loop
from genai.train import workdir as workdir_lib

DEFAULT_CONFIG = 'configs/image_gpt/mnist.py:path=../shared/data/mnist'


def define_flags() -> None:
  config_flags.DEFINE_config_file('config', DEFAULT_CONFIG, 'image_gpt config to benchmark.')
  flags.DEFINE_string('out_dir', 'runs/bench/image_gpt_mnist', 'JSON, grid and .npz go here.')
  flags.DEFINE_integer('num_samples', 2000, 'Samples written for FID.')
  flags.DEFINE_integer('sample_batch', 250, 'Images per decoding call.')
  flags.DEFINE_integer('num_floor_images', 2000, 'Binarised MNIST train images written to '
                       '<out_dir>/binarised_train.npz: the FID floor of binary images.')
  results_lib.define_flags('image_gpt_mnist')


def headline(fig: dict) -> dict:
  return {'quality': f'test {fig["test_bits_per_dim"]:.4f} bits/dim '
                     f'({fig["test_nll_nats"]:.2f} nats) on binarised MNIST after '
                     f'{fig["steps"]:,} steps ({fig["epochs"]:.2f} epochs); '
                     f'{fig["samples.count"]:,} samples for FID',
          'speed': f'{fig["examples_per_sec_last_log_window"]:,} examples/s, sampling '
                   f'{fig["samples.images_per_sec"]:,} images/s',
          'memory': f'{fig["peak_rss_mib"]:,} MiB'}


def write_binarised_train(config, out_dir: str, n: int) -> str:
  """The first n training images, binarised as the training batches are (Bernoulli(value),
  seed 0): real binary digits, so FID can tell the binarisation's cost from the model's."""
  x, _ = images_lib.load_images(config.data, config.data.get('train_split', 'train'))
  x = images_lib.preprocess(x[:n], value_range='[0,1]')
  binary = np.random.default_rng(0).random(x.shape, dtype=np.float32) < x
  path = os.path.join(out_dir, 'binarised_train.npz')
  np.savez_compressed(path, images=binary.astype(np.uint8) * 255)
  return path


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  config = f.config
  tc = config.train
  tc.eval_every = 0                   # Evaluated once, below, after training.
  tc.checkpoint_every = tc.num_steps  # Only the final checkpoint.
  config.eval.num_examples = 0        # The whole test split.
  workdir = workdir_lib.fresh_workdir(config, f.out_dir)

  t0 = time.perf_counter()
  task = image_gpt.build_task(config, workdir)
  setup_seconds = time.perf_counter() - t0
  evaluate, task.evaluate = task.evaluate, None
  t_train = time.perf_counter()
  state = loop.train(task, workdir=workdir, num_steps=tc.num_steps, seed=config.seed,
                     log_every=tc.log_every, eval_every=0, checkpoint_every=tc.checkpoint_every,
                     steps_per_call=tc.steps_per_call, print_fn=print)
  train_seconds = time.perf_counter() - t_train

  t = time.perf_counter()
  config.eval.num_samples = 0  # the grid is written below from the FID samples
  results = evaluate(state, tc.num_steps)
  eval_seconds = time.perf_counter() - t

  t = time.perf_counter()
  images, labels, value_range = image_gpt.sample(workdir, f.num_samples, seed=1,
                                                 batch_size=f.sample_batch)
  sample_seconds = time.perf_counter() - t
  u8 = image_files.to_uint8(images, value_range)
  npz = os.path.join(f.out_dir, 'samples.npz')
  np.savez_compressed(npz, images=u8, labels=labels)
  png = os.path.join(f.out_dir, 'grid.png')
  image_files.write_png(png, image_files.make_grid(u8[:100], ncols=10))

  floor_npz = (write_binarised_train(config, f.out_dir, f.num_floor_images)
               if f.num_floor_images else None)
  final = last_logged(workdir)
  examples = tc.num_steps * tc.batch_size
  result = {
      'test_nll_nats': results['eval/nll_nats'],
      'test_bits_per_dim': results['eval/bits_per_dim'],
      'steps': tc.num_steps,
      'batch_size': tc.batch_size,
      'epochs': round(examples / 60000, 3),
      'setup_seconds': round(setup_seconds, 1),
      'train_seconds': round(train_seconds, 1),
      'ms_per_step_incl_compile': round(1e3 * train_seconds / tc.num_steps, 1),
      'ms_per_step_last_log_window': round(1e3 / final['steps_per_sec'], 1),
      'examples_per_sec_last_log_window': round(final['examples_per_sec'], 1),
      'final_train_loss_nats_per_token': final.get('loss'),
      'eval_seconds': round(eval_seconds, 1),
      'samples': {'path': npz, 'count': int(len(u8)), 'seconds': round(sample_seconds, 1),
                  'images_per_sec': round(len(u8) / sample_seconds, 1),
                  'temperature': config.sample.temperature},
      'sample_grid': png,
      'binarised_train_images': floor_npz,
      'peak_rss_mib': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
      'workdir': workdir,
  }
  cfg = {'tokens': config.tokens.to_dict(), 'model': config.model.to_dict(),
         'optimizer': config.optimizer.to_dict(), 'sample': config.sample.to_dict(),
         'machine': f'{platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}'}
  with open(os.path.join(f.out_dir, 'result.json'), 'w') as fh:
    json.dump({**result, 'config': cfg}, fh, indent=1)
  print(json.dumps(result, indent=1))
  figures = results_lib.flatten(result)
  results_lib.write(f.result_name, figures, headline=headline(figures), config=cfg,
                    results_dir=f.results_dir)


if __name__ == '__main__':
  define_flags()
  app.run(main)
