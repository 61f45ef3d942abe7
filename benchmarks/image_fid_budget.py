"""Image quality within a CPU training budget (issue 26): FID against training minutes.

Train (optional, resumable: re-running the same command continues from the newest
checkpoint and appends to the log), then for checkpoints along the run sample N images
with the EMA weights and score FID, KID and precision/recall against the full MNIST test
set (the project's Inception, reference statistics cached with their provenance):

  python -m benchmarks.image_fid_budget --family diffusion --workdir runs/diff_fid \
    --config configs/diffusion/mnist_fid.py:path=../shared/data/mnist --train_minutes 90 \
    --data_path ../shared/data/mnist --curve_samples 2000 --num_samples 10000 \
    --result_name fid_budget_diffusion
  python -m benchmarks.image_fid_budget --family gan --workdir runs/gan_fid \
    --config configs/gan/mnist_fid.py:path=../shared/data/mnist --train_minutes 90 ...
  python -m benchmarks.image_fid_budget --plot docs/images/fid_budget.png \
    --plot_results fid_budget_diffusion,fid_budget_gan

Training minutes of a checkpoint are the sum of the training loop's logged windows
(steps x ms/step, which exclude evaluation and checkpoint writes) up to its step, read from
the run's log (`--train_log`, default <workdir>/train.log, which --train_minutes writes).
On a shared machine those minutes stretch with the load; the result records `uptime`.
The curve points are every checkpoint (or --steps) at --curve_samples samples, and the last
one also at --num_samples (the headline figure: 10,000 samples vs the 10,000 test images).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from benchmarks import results as results_lib
from genai import errors
from genai.evaluation import fid as fid_lib
from genai.parallel import cpu_devices
from genai.evaluation import reference_stats as ref_lib
from genai.sample import image_files
from genai.train import checkpoints as checkpoints_lib

_LOG_LINE = re.compile(r'step (\d+)/\d+ \| loss [^|]*\| ([0-9.]+) ms/step')
_END_LINE = re.compile(r'Trained steps \d+\.\.(\d+) in')
FAMILIES = ('diffusion', 'gan')


def define_flags() -> None:
  flags.DEFINE_enum('family', 'diffusion', list(FAMILIES), 'Which model family.')
  flags.DEFINE_string('workdir', None, 'The training run (created by --train_minutes).')
  flags.DEFINE_string('config', '', 'Config for --train_minutes (with its :args).')
  flags.DEFINE_multi_string('override', [], "A config field for --train_minutes, e.g. "
                            "'model.unet.features=48' (repeatable): a pilot's variant.")
  flags.DEFINE_float('train_minutes', 0.0, 'Train (resumably) until this many training '
                     'minutes, then evaluate; 0 = evaluate the workdir as it is.')
  flags.DEFINE_string('train_log', '', 'The run\'s log (default <workdir>/train.log).')
  flags.DEFINE_string('data_path', '../shared/data/mnist', 'MNIST IDX folder ('' = TFDS).')
  flags.DEFINE_string('ref', 'mnist:test', 'Reference split.')
  flags.DEFINE_integer('ref_count', 0, 'Reference images: the first N of the split (0 = all).')
  flags.DEFINE_integer('curve_samples', 2000, 'Samples per curve point (0 = no curve).')
  flags.DEFINE_string('curve_features', 'inception', "Features of the curve points: "
                      "'inception', or 'domain:WORKDIR' (FID-domain, ~100x cheaper on CPU; "
                      'the last point is always Inception).')
  flags.DEFINE_integer('num_samples', 10_000, 'Samples at the last point (the headline); '
                       '0 = train only (--train_minutes), evaluate later.')
  flags.DEFINE_list('steps', [], 'Checkpoint steps for the curve (default: all kept).')
  flags.DEFINE_string('sampler', '', "Diffusion sampler ('' = the config's sample block).")
  flags.DEFINE_integer('sample_steps', 0, 'Diffusion sampler steps (0 = the config).')
  flags.DEFINE_float('eta', None, "DDIM's noise (0 deterministic, 1 = DDPM-like; default: "
                     'the config).')
  flags.DEFINE_integer('seed', 0, 'Sampling seed.')
  flags.DEFINE_integer('batch_size', 500, 'Images per sampling call.')
  flags.DEFINE_string('plot', '', 'Write a PNG of FID vs training minutes from the result '
                      'files in --plot_results, and exit.')
  flags.DEFINE_list('plot_results', [], 'Result names (benchmarks/results/<name>.json).')
  results_lib.define_flags('fid_budget')


# ----------------------------------------------------------------- training minutes.


def train_seconds_by_step(lines) -> dict[int, float]:
  """{step: cumulative training seconds} from the loop's log lines `step N/M | loss .. |
  X ms/step` (each a window since the previous line) and `Trained steps a..b in ..` (the
  steps after the last window, e.g. a SIGTERM stop, at that window's speed). A resumed run
  whose log restarts at a lower step continues from the seconds counted at that step."""
  out: dict[int, float] = {}
  last, ms = 0, 0.0
  for line in lines:
    end = _END_LINE.search(line)
    if end and int(end.group(1)) > last and ms:
      # Steps after the last logged window (a SIGTERM stop): at that window's speed.
      out[int(end.group(1))] = out.get(last, 0.0) + (int(end.group(1)) - last) * ms / 1e3
      last = int(end.group(1))
      continue
    m = _LOG_LINE.search(line)
    if not m:
      continue
    step, ms = int(m.group(1)), float(m.group(2))
    if step <= last:  # a resumed run: forget what was trained after its checkpoint
      out = {s: v for s, v in out.items() if s < step}
      last = max(out, default=0)
    out[step] = out.get(last, 0.0) + (step - last) * ms / 1e3
    last = step
  return out


def minutes_at(step: int, seconds: dict[int, float]) -> float:
  """Training minutes at `step`, interpolated between logged steps."""
  if not seconds:
    return float('nan')
  steps = np.array(sorted(seconds))
  return float(np.interp(step, np.append(0, steps),
                         np.append(0.0, [seconds[s] for s in steps]))) / 60.0


def train(f) -> None:
  """Runs the experiment's command line until --train_minutes of training, resumable."""
  log_path = f.train_log or os.path.join(f.workdir, 'train.log')
  os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
  poll_s = 10.0

  def done(margin=False):
    """Training minutes in the log; with `margin`, plus what may pass before the next
    look (a poll and a log window), so that the run stops inside its budget."""
    seconds = sorted(train_seconds_by_step(open(log_path)).values())
    window = seconds[-1] - seconds[-2] if len(seconds) > 1 else 0.0
    return ((seconds[-1] if seconds else 0.0) + (poll_s + window if margin else 0.0)) / 60.0

  if os.path.exists(log_path) and done() >= f.train_minutes:
    print(f'already trained {done():.1f} >= {f.train_minutes} minutes.', flush=True)
    return
  cmd = [sys.executable, '-m', f'experiments.{f.family}', '--workdir', f.workdir,
         '--config', f.config] + [f'--config.{o}' for o in f.override]
  with open(log_path, 'a') as log:
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    while proc.poll() is None:
      time.sleep(poll_s)
      if done(margin=True) >= f.train_minutes:
        proc.send_signal(signal.SIGTERM)  # the loop saves a checkpoint at this step, exits
        proc.wait()
  print(f'trained {done():.1f} minutes (log {log_path}).', flush=True)


# ----------------------------------------------------------------- sampling.


def make_sampler(family: str, workdir: str, f):
  """(fn(step, n, seed) -> uint8 [n, H, W, C], description) for the family's EMA weights."""
  if family == 'diffusion':
    from genai.families import diffusion  # pylint: disable=import-outside-toplevel

    def fn(step, n, seed):
      config, model, params, info = diffusion.load_workdir(workdir, step)
      sc = config.sample
      gen = diffusion._make_sampler(config, model, info)  # pylint: disable=protected-access
      x = gen(params, jax.random.key(seed), n, diffusion.sample_labels(n, info['num_classes']),
              sampler=f.sampler or sc.sampler, steps=f.sample_steps or sc.steps,
              eta=sc.eta if f.eta is None else f.eta,
              guidance=sc.guidance if info['num_classes'] else 0.0,
              batch_size=min(n, f.batch_size))
      return image_files.to_uint8(x, info['value_range'])
    return fn
  from genai.families import gan  # pylint: disable=import-outside-toplevel

  def gan_fn(step, n, seed):
    config, nets, state, value_range = gan.load_workdir(workdir, step)
    x = gan.generate_images(nets, state, n, seed=seed, use_ema=config.eval.use_ema,
                            standing=config.eval.standing_stats)
    return image_files.to_uint8(x, value_range)
  return gan_fn


def checkpoint_steps(workdir: str) -> list[int]:
  ckpt = checkpoints_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), read_only=True)
  try:
    return sorted(int(s) for s in ckpt.all_steps())
  finally:
    ckpt.close()


def score(images, ref, extractor, ref_count: int) -> dict[str, Any]:
  """FID, KID, precision/recall (un-suffixed keys, whatever the features)."""
  r = fid_lib.evaluate(images, None, ref, extractor, ref_count=ref_count,
                       print_fn=lambda s: print(s, flush=True))
  key = extractor.key
  out = {k: r[key(k)] for k in ('fid', 'kid_mean', 'kid_std', 'precision', 'recall')}
  return {**out, **{k: r[k] for k in ('n_samples', 'n_ref', 'ref_stats_file')}}


def _uptime() -> str:
  try:
    return open('/proc/loadavg').read().split(' ')[:3]
  except OSError:
    return ''


# ----------------------------------------------------------------- plot.


def plot(path: str, names: list[str], results_dir: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
  for name in names:
    res = results_lib.load(os.path.join(results_dir, f'{name}.json'))
    curve = next(t for t in res['tables'] if t['title'].startswith('FID vs training minutes'))
    cols = curve['columns']
    rows = [dict(zip(cols, r)) for r in curve['rows']]
    for feats, n in sorted({(r['features'], r['samples']) for r in rows}):
      pts = [(r['train_minutes'], r['fid']) for r in rows
             if (r['features'], r['samples']) == (feats, n)]
      what = 'FID' if feats == 'inception' else 'FID-domain'
      ax.plot(*zip(*pts), marker='o' if len(pts) > 1 else '*', markersize=6 if len(pts) > 1
              else 12, label=f'{res["name"]}: {what}, {n:,} samples vs '
              f'{pts and [r["n_ref"] for r in rows if r["features"] == feats][0]:,} test')
  ax.set_xlabel('training minutes (2-core AMD EPYC: 2dev on both cores, the others on one)')
  ax.set_ylabel('FID (Inception) / FID-domain')
  ax.set_yscale('log')
  ax.grid(True, which='both', alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path)
  print(f'wrote {path}')


# ----------------------------------------------------------------- main.


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)
  f = flags.FLAGS
  if f.plot:
    plot(f.plot, f.plot_results, f.results_dir)
    return
  if not f.workdir:
    raise app.UsageError('--workdir is required.')
  load_before = _uptime()
  if not f.num_samples and not f.train_minutes:
    raise app.UsageError('--num_samples 0 trains only: give --train_minutes and --config.')
  if f.train_minutes:
    if not f.config:
      raise app.UsageError('--train_minutes needs --config (the recipe to train).')
    train(f)
    if not f.num_samples:
      return
  # Sampling and Inception: the host laid out for convolutional inference (split_for).
  cpu_devices.split_for([f.batch_size, 100])
  log_path = f.train_log or os.path.join(f.workdir, 'train.log')
  seconds = train_seconds_by_step(open(log_path)) if os.path.exists(log_path) else {}
  steps = [int(s) for s in f.steps] or checkpoint_steps(f.workdir)
  if not steps:
    raise errors.CheckpointError(f'{f.workdir} has no checkpoints',
                                 'train first (--train_minutes with --config)')
  ref = ref_lib.parse_dataset_spec(f.ref, f.data_path or None)
  extractor = ref_lib.load_extractor('inception')
  curve_extractor = (extractor if f.curve_features == 'inception'
                     else ref_lib.load_extractor(f.curve_features))
  sampler = make_sampler(f.family, f.workdir, f)
  rows, final = [], None
  points = [(s, f.curve_samples, curve_extractor) for s in steps if f.curve_samples]
  points.append((steps[-1], f.num_samples, extractor))
  for step, n, ex in points:
    t0 = time.perf_counter()
    images = sampler(step, n, f.seed)
    t_sample = time.perf_counter() - t0
    r = score(images, ref, ex, f.ref_count if ex is extractor else 0)
    minutes = minutes_at(step, seconds)
    label = 'inception' if ex is extractor else 'domain'
    rows.append([step, round(minutes, 1), n, label, round(r['fid'], 2), r['n_ref'],
                 round(100 * r['kid_mean'], 3), round(r['precision'], 3), round(r['recall'], 3),
                 round(t_sample, 1), round(time.perf_counter() - t0 - t_sample, 1)])
    print(f'step {step:>6}  {minutes:6.1f} training minutes  {n:>6,} samples  '
          f'{"FID" if ex is extractor else "FID-domain"} {r["fid"]:7.2f} (vs {r["n_ref"]:,})  '
          f'KIDx100 {100 * r["kid_mean"]:.3f}  precision {r["precision"]:.3f}  recall '
          f'{r["recall"]:.3f}', flush=True)
    if n == f.num_samples and step == steps[-1] and ex is extractor:
      final = {**r, 'step': step, 'train_minutes': round(minutes, 1)}
      np.savez_compressed(os.path.join(f.workdir, f'fid_samples_{step}.npz'), images=images)
  figures = {'family': f.family, 'workdir': f.workdir, **final,
             'load_avg_before': ' '.join(load_before), 'load_avg_after': ' '.join(_uptime())}
  target = {'diffusion': 5.0, 'gan': 10.0}[f.family]
  headline = {'quality': f'FID {final["fid"]:.2f} (target <= {target:g}), KID x 100 '
                         f'{100 * final["kid_mean"]:.2f}, precision {final["precision"]:.2f}, '
                         f'recall {final["recall"]:.2f}: {final["n_samples"]:,} samples vs '
                         f'{final["n_ref"]:,} MNIST test images after {final["train_minutes"]} '
                         f'training minutes ({final["step"]:,} steps)'}
  table = results_lib.table(
      'FID vs training minutes', ['step', 'train_minutes', 'samples', 'features', 'fid',
                                  'n_ref', 'kid_x100', 'precision', 'recall', 'sample_s',
                                  'score_s'], rows)
  results_lib.write(f.result_name, figures, headline=headline, tables=[table],
                    notes=['training minutes: the loop\'s own step timing, on one core of a '
                           'shared 2-core CPU (load averages recorded)'],
                    results_dir=f.results_dir)
  print(json.dumps(headline))


if __name__ == '__main__':
  define_flags()
  errors.run_absl(main)
