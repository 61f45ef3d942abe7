"""VAE benchmark: test negative ELBO (nats) on dynamically binarised MNIST after a wall-clock
training budget, plus the importance-weighted NLL, steps, examples/s, wall time and peak RSS.

  python -m benchmarks.vae_mnist --budget_s 1200

Runs the real experiment (experiments/vae.py, configs/vae/mnist.py on the IDX files in
--data) through the shared loop in a fresh workdir. The budget covers everything up to the
end of training (data loading, compilation, a short step-time calibration, the training
steps): the calibration measures the step time and sets train.num_steps (so the cosine
schedule ends on time); a timer sends the process SIGTERM at the deadline as a safety net (the
loop then checkpoints and stops). --num_steps skips calibration and trains exactly that many
steps. The final evaluation (ELBO on the 10k test images, binarised once with a fixed seed,
and the IW-NLL with --iw_samples samples on --iw_examples of them) runs after the budget and
is timed separately. Prints one JSON object (also written to --out), writes a sample grid
and the result file (benchmarks/results.py).
"""
from __future__ import annotations

import time

_T0 = time.perf_counter()  # The budget starts before the heavy imports (jax, TensorFlow).

import json
import os
import platform
import resource
import signal
import tempfile
import threading

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags
import numpy as np

from benchmarks import results as results_lib
from experiments import vae
from genai.sample import image_files
from genai.train import loop
from genai.train import workdir as workdir_lib


def define_flags() -> None:
  config_flags.DEFINE_config_file('config', 'configs/vae/mnist.py', 'VAE config (its data '
                                  'source is replaced by the IDX files in --data).')
  flags.DEFINE_string('data', '../shared/data/mnist', 'Folder of MNIST IDX files.')
  flags.DEFINE_float('budget_s', 1200.0, 'Wall-clock seconds for everything up to the end '
                     'of training (20 minutes = the issue\'s budget).')
  flags.DEFINE_integer('num_steps', 0, '>0: train exactly this many steps (no calibration; '
                       'the budget timer still applies).')
  flags.DEFINE_integer('calibration_steps', 64, 'Steps timed to estimate the step time.')
  flags.DEFINE_float('safety', 0.95, 'Fraction of the estimated affordable steps to run.')
  flags.DEFINE_integer('iw_samples', 100, 'k of the importance-weighted NLL.')
  flags.DEFINE_integer('iw_examples', 0, 'Test images scored with the IW-NLL (0 = all 10k).')
  flags.DEFINE_integer('num_images', 64, 'Prior samples in the written grid.')
  flags.DEFINE_integer('fid_samples', 2000, 'Decoder means written to <samples_dir>/'
                       'fid_samples.npz for FID (0: none).')
  flags.DEFINE_string('workdir', '', 'Workdir (default: a fresh temporary folder).')
  flags.DEFINE_string('out', 'runs/bench/vae_mnist.json', 'Where to write the JSON.')
  flags.DEFINE_string('samples_dir', 'runs/bench/vae_mnist_samples', 'Where the grid goes.')
  results_lib.define_flags('vae_mnist')


def headline(fig: dict) -> dict:
  iw = fig.get('test_iw_nll_nats')
  rate = fig.get('examples_per_s')
  return {'quality': f'test -ELBO {fig["test_nelbo_nats"]:.2f} nats'
                     + (f', IW-NLL {iw:.2f} nats (k={fig["iw_samples"]})' if iw else ''),
          'speed': f'{fig["steps"]:,} steps ({fig["epochs"]:.1f} epochs), '
                   + (f'{rate:,.0f} examples/s' if rate else 'too short for a steady rate'),
          'memory': f'{fig["peak_rss_mb"]:,.0f} MiB'}


def calibrate(task: loop.Task, steps: int, steps_per_call: int) -> float:
  """Seconds per train step, compile excluded, run as the loop runs it."""
  state = jax.jit(task.init_state)(jax.random.key(0))
  multi_step = loop.make_multi_step(task.train_step, jax.random.key(1))
  calls = max(steps // steps_per_call, 1)
  batches = [loop.stack_batches([next(task.train_iter) for _ in range(steps_per_call)])
             for _ in range(calls + 1)]
  state, m = multi_step(state, batches[0], np.int32(0))  # compile
  jax.block_until_ready(m)
  t0 = time.perf_counter()
  for b in batches[1:]:
    state, m = multi_step(state, b, np.int32(0))
  jax.block_until_ready(m)
  return (time.perf_counter() - t0) / (calls * steps_per_call)


class TimedIterator:
  """Delegates to a grain iterator, recording when each batch is taken (resume-safe)."""

  def __init__(self, it):
    self._it = it
    self.times: list[float] = []

  def __iter__(self):
    return self

  def __next__(self):
    self.times.append(time.perf_counter())
    return next(self._it)

  def get_state(self):
    return self._it.get_state()

  def set_state(self, state):
    self._it.set_state(state)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  t_start = _T0
  deadline = t_start + f.budget_s
  config = f.config
  config.data.source, config.data.path = 'idx', f.data
  config.data.max_examples = 0
  config.data.eval_examples = 0
  config.train.eval_every = 0                      # Evaluate once, at the end.
  config.train.checkpoint_every = 0                # Only the final checkpoint.
  config.eval.iw_samples = f.iw_samples
  config.eval.iw_examples = f.iw_examples
  os.makedirs('runs/bench', exist_ok=True)
  workdir = f.workdir or tempfile.mkdtemp(prefix='vae_mnist_', dir='runs/bench')
  spc = config.train.steps_per_call

  step_s = None
  if f.num_steps > 0:
    num_steps = f.num_steps
  else:
    step_s = calibrate(vae.build_task(config, workdir), f.calibration_steps, spc)
    # Leave time for the second compile and the final checkpoint (measured: ~1x calibration).
    overhead = time.perf_counter() - t_start
    affordable = (deadline - time.perf_counter() - overhead) / step_s * f.safety
    num_steps = max(spc, int(affordable) // spc * spc)
  config.train.num_steps = num_steps
  config.optimizer.warmup_steps = min(config.optimizer.warmup_steps, num_steps // 10)

  # Safety net: from the deadline on, SIGTERM every second until training ends; the loop's
  # pre-emption handler checkpoints and stops. Outside the loop the signal is ignored.
  training_done = threading.Event()
  signal.signal(signal.SIGTERM, lambda *_: None)

  def stop_at_deadline():
    wait = max(deadline - time.perf_counter(), 0.0)
    while not training_done.wait(wait):
      os.kill(os.getpid(), signal.SIGTERM)
      wait = 1.0

  threading.Thread(target=stop_at_deadline, daemon=True).start()

  captured = {}

  def build(c, w):
    task = vae.build_task(c, w)
    captured['evaluate'] = task.evaluate
    task.evaluate = None  # Evaluated below, after the budget, and timed on its own.
    task.train_iter = captured['iter'] = TimedIterator(task.train_iter)
    return task

  t_train = time.perf_counter()
  state = workdir_lib.run(config, workdir, build)
  t_end = time.perf_counter()
  training_done.set()
  signal.signal(signal.SIGTERM, signal.SIG_DFL)
  steps_done = int(state['step'])
  # Steady state: from the batches of the second call (the first one compiles) to the end.
  fetched = captured['iter'].times
  steady = None
  if len(fetched) > 2 * spc:
    steady = (len(fetched) - spc) * config.train.batch_size / (t_end - fetched[spc])

  results = captured['evaluate'](state, steps_done)
  eval_s = time.perf_counter() - t_end
  images, value_range = vae.sample(workdir, f.num_images, seed=0)
  png, _ = image_files.write_samples(f.samples_dir, f'samples_step{steps_done}', images,
                                     value_range)
  fid_npz = None
  if f.fid_samples:
    fid_images, _ = vae.sample(workdir, f.fid_samples, seed=1)
    _, fid_npz = image_files.write_samples(f.samples_dir, 'fid_samples', fid_images,
                                           value_range)
  report = {
      'benchmark': 'vae_mnist',
      'test_nelbo_nats': results['eval/nelbo_nats'],
      'test_nelbo_bits_per_dim': results['eval/nelbo_bits_per_dim'],
      'test_recon_nll_nats': results['eval/recon_nll_nats'],
      'test_kl_nats': results['eval/kl_nats'],
      'test_iw_nll_nats': results.get('eval/iw_nll_nats'),
      'iw_samples': f.iw_samples,
      'iw_examples': f.iw_examples or 10000,
      'active_units': results['eval/active_units'],
      'steps': steps_done,
      'planned_steps': num_steps,
      'stopped_at_deadline': steps_done < num_steps,
      'batch_size': config.train.batch_size,
      'epochs': steps_done * config.train.batch_size / 60000,
      'calibrated_step_ms': None if step_s is None else 1e3 * step_s,
      'train_loop_s': t_end - t_train,
      'examples_per_s': steady,  # steady state, compilation excluded
      'examples_per_s_incl_setup': steps_done * config.train.batch_size / (t_end - t_train),
      'wall_to_end_of_training_s': t_end - t_start,
      'budget_s': f.budget_s,
      'final_eval_s': eval_s,
      'total_wall_s': time.perf_counter() - t_start,
      'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      'sample_grid': png,
      'fid_samples': fid_npz,
      'workdir': workdir,
      'model': config.model.to_dict(),
      'optimizer': config.optimizer.to_dict(),
      'machine': f'{platform.machine()} {os.cpu_count()} cores, jax {jax.__version__} '
                 f'{jax.default_backend()}',
  }
  report['model']['channels'] = list(report['model']['channels'])
  text = json.dumps(report, indent=2)
  print(text)
  os.makedirs(os.path.dirname(os.path.abspath(f.out)), exist_ok=True)
  with open(f.out, 'w') as fh:
    fh.write(text + '\n')
  figures = {k: v for k, v in report.items()
             if k not in ('benchmark', 'model', 'optimizer', 'machine')}
  results_lib.write(f.result_name, figures, headline=headline(figures),
                    config={'model': report['model'], 'optimizer': report['optimizer']},
                    results_dir=f.results_dir)


if __name__ == '__main__':
  define_flags()
  app.run(main)
