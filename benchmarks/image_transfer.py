"""Image transfer learning: fine-tuning from a pretrained start vs training from scratch.

For each case, a model is pretrained on the 8x8 digits of classes 0-4 (`data.classes`), then
trained on classes 5-9 for the same number of steps twice, with the same seed and data:
from scratch, and from the pretrained workdir (`model.init_from`; for a class-conditional
model the class table grows from 5 to 10 classes: rows 0-4 and the null row are loaded,
5-9 start fresh). Optionally a third run fine-tunes a DiT with LoRA (`lora.rank`). Reported:
the held-out loss on the test digits 5-9 at every eval, the final loss of each run, and the
steps (and seconds) each run needs to reach the scratch run's final loss.

  python -m benchmarks.image_transfer                      # vae and diffusion (UNet)
  python -m benchmarks.image_transfer --cases dit --pretrain_steps 600 --steps 300

Cases: 'vae' (Bernoulli VAE, loss = -ELBO nats), 'diffusion' (class-conditional UNet DDPM,
loss = the eps-MSE at fixed t and noise), 'dit' (class-conditional DiT: scratch, full
fine-tune and LoRA rank 8).

FID at a small sample count (`--fid_samples`, default 500; 0 = off) is FID-domain: the
features of a digits classifier trained here (configs/classifier/digits.py), not Inception
(~3 images/s on a 2-core CPU), so the numbers compare only with each other. Reference: the
train and test digits of classes 5-9; samples: decoder means (VAE), or DDIM-50 with the
config's guidance for labels 5-9 cycled (diffusion). `fid_real_subset` is that many of the
reference images themselves against the reference: a lower bound at that count.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
import time

import jax
import ml_collections
import numpy as np

from benchmarks import results as results_lib
from configs.diffusion import digits as diffusion_digits
from configs.diffusion import dit_digits
from configs.vae import digits as vae_digits
from configs.classifier import digits as classifier_digits
from experiments import classifier, diffusion, vae
from genai.data import images as images_lib
from genai.evaluation import image_metrics
from genai.families import classifier as classifier_family
from genai.families import diffusion as diffusion_family
from genai.objectives import diffusion as dfn
from genai.train import workdir as workdir_lib

CASES = {
    # name: (build_task, config fn, eval metric, lower is better)
    'vae': (vae.build_task, lambda: vae_digits.get_config(), 'eval/nelbo_nats'),
    'diffusion': (diffusion.build_task, lambda: diffusion_digits.get_config('cond'),
                  'eval/loss'),
    'dit': (diffusion.build_task, lambda: dit_digits.get_config('cond'), 'eval/loss'),
}


def _config(case: str, *, steps: int, eval_every: int, classes: str, seed: int,
            init_from: str = '', lora_rank: int = 0) -> ml_collections.ConfigDict:
  c = CASES[case][1]()
  c.seed = seed
  c.data.classes = classes
  c.train.num_steps = steps
  c.train.eval_every = eval_every
  c.train.checkpoint_every = steps
  c.train.log_every = eval_every
  c.train.steps_per_call = 1
  c.optimizer.warmup_steps = min(20, steps - 1)
  c.model.init_from = init_from
  if case == 'vae':
    c.eval.iw_samples = 0
    c.eval.num_samples = c.eval.num_reconstructions = 8
  else:
    c.eval.num_samples = 0
    c.lora.rank = lora_rank
    if lora_rank:
      c.optimizer.learning_rate = 2e-3  # adapters: the usual higher LoRA learning rate
  return c


def _run(case: str, config, workdir: str) -> dict:
  """Trains; returns {'curve': [(step, loss, seconds since start)], 'train_s', 'report'}."""
  metric = CASES[case][2]
  curve, t0 = [], time.perf_counter()

  def capture(line: str) -> None:
    print(line, flush=True)
    m = re.match(r'eval @ (\d+): .*?' + re.escape(metric) + r' ([-0-9.eE+na]+)', line)
    if m:
      curve.append((int(m.group(1)), float(m.group(2)), time.perf_counter() - t0))

  workdir_lib.run(config, workdir, CASES[case][0], print_fn=capture)
  return {'curve': curve, 'train_s': time.perf_counter() - t0}


def _reference(feature_fn):
  """Features of the real digits 5-9 (train and test): the reference."""
  cfg = ml_collections.ConfigDict({'source': 'embedded'})
  parts = {}
  for split in ('train', 'test'):
    x, y = images_lib.load_images(cfg, split)
    parts[split] = x[y >= 5]
  return feature_fn(np.concatenate([parts['train'], parts['test']]))['pool']


def _samples(case: str, workdir: str, n: int, seed: int):
  """n float samples (and their value range) of a trained workdir, for labels 5-9."""
  if case == 'vae':
    return vae.sample(workdir, n, seed=seed)
  config, model, params, info = diffusion_family.load_workdir(workdir)
  sampler = diffusion_family.ImageSampler(
      model, dfn.make_schedule(config.diffusion), image_shape=info['image_shape'],
      num_classes=info['num_classes'], prediction=config.diffusion.prediction,
      value_range=info['value_range'], clip=config.sample.clip)
  labels = (5 + np.arange(n) % 5).astype(np.int32)
  x = sampler(params, jax.random.key(seed), n, labels, sampler='ddim', steps=config.sample.steps,
              eta=0.0, guidance=config.sample.guidance)
  return x, info['value_range']


def _steps_to(curve, target: float):
  for step, loss, seconds in curve:
    if loss <= target:
      return step, seconds
  return None, None


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--cases', default='vae,diffusion', help=f'comma list of {sorted(CASES)}')
  p.add_argument('--pretrain_steps', type=int, default=600)
  p.add_argument('--steps', type=int, default=300, help='steps of each run on classes 5-9')
  p.add_argument('--eval_every', type=int, default=50)
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--fid_samples', type=int, default=500, help='0 = no FID-domain')
  p.add_argument('--classifier_steps', type=int, default=600)
  p.add_argument('--workdir', default='', help='default: a temporary folder, removed after')
  results_lib.add_args(p, 'image_transfer')
  args = p.parse_args()
  root = args.workdir or tempfile.mkdtemp(prefix='image_transfer_')
  load_before = os.getloadavg()
  figures, rows, curves = {}, [], []
  try:
    feature_fn = None
    if args.fid_samples:
      clf_cfg = classifier_digits.get_config(f'steps={args.classifier_steps}')
      clf_dir = os.path.join(root, 'classifier')
      workdir_lib.run(clf_cfg, clf_dir, classifier.build_task)
      feature_fn = classifier_family.make_feature_fn(classifier_family.load_classifier(clf_dir))
      ref = _reference(feature_fn)
      pick = np.random.default_rng(args.seed).choice(len(ref), min(args.fid_samples, len(ref)),
                                                     replace=False)
      figures['fid_real_subset'] = image_metrics.fid_from_features(ref, ref[pick])
      figures['fid_reference_images'] = len(ref)
    for case in [c for c in args.cases.split(',') if c]:
      if case not in CASES:
        raise SystemExit(f'error: --cases: unknown case {case!r}; use {sorted(CASES)}')
      src = os.path.join(root, f'{case}_pretrained')
      kw = dict(eval_every=args.eval_every, seed=args.seed)
      pre = _run(case, _config(case, steps=args.pretrain_steps, classes='0-4', **kw), src)
      runs = {'scratch': _run(case, _config(case, steps=args.steps, classes='5-9', **kw),
                              os.path.join(root, f'{case}_scratch')),
              'finetune': _run(case, _config(case, steps=args.steps, classes='5-9',
                                             init_from=f'workdir:{src}', **kw),
                               os.path.join(root, f'{case}_finetune'))}
      if case == 'dit':
        runs['lora'] = _run(case, _config(case, steps=args.steps, classes='5-9',
                                          init_from=f'workdir:{src}', lora_rank=8, **kw),
                            os.path.join(root, f'{case}_lora'))
      target = runs['scratch']['curve'][-1][1]
      figures[f'{case}.pretrain_final_loss_classes_0_4'] = pre['curve'][-1][1]
      figures[f'{case}.target_loss'] = target
      for name, r in runs.items():
        step, seconds = _steps_to(r['curve'], target)
        first = r['curve'][0]
        fid = None
        if feature_fn is not None:
          x, value_range = _samples(case, os.path.join(root, f'{case}_{name}'),
                                    args.fid_samples, args.seed)
          fid = image_metrics.fid_from_features(ref, feature_fn(x, value_range)['pool'])
          figures[f'{case}.{name}.fid_domain'] = fid
        figures.update({f'{case}.{name}.first_eval_loss': first[1],
                        f'{case}.{name}.final_loss': r['curve'][-1][1],
                        f'{case}.{name}.steps_to_target': step,
                        f'{case}.{name}.seconds_to_target': seconds,
                        f'{case}.{name}.train_s': r['train_s']})
        rows.append([case, name, args.steps, f'{first[1]:.4f} @ {first[0]}',
                     f"{r['curve'][-1][1]:.4f}", step, None if seconds is None
                     else round(seconds, 1), None if fid is None else round(fid, 2)])
        curves.append([case, name, ' '.join(f'{s}:{l:.4f}' for s, l, _ in r['curve'])])
  finally:
    if not args.workdir:
      shutil.rmtree(root, ignore_errors=True)
  load_after = os.getloadavg()
  figures['load_avg_1m_before'], figures['load_avg_1m_after'] = load_before[0], load_after[0]
  notes = [
      'Pretrained on the 8x8 digits of classes 0-4, then trained on classes 5-9 (test: the '
      'held-out digits 5-9) for the same steps with the same seed; steps_to_target = the first '
      "eval at which a run's held-out loss is at or below the scratch run's final loss.",
      'Seconds include compile and evaluation and were measured on a shared, loaded machine '
      f'(1-minute load average {load_before[0]:.1f} before, {load_after[0]:.1f} after); the '
      'step counts do not depend on the load.']
  if args.fid_samples:
    notes.append(f'FID-domain: {args.fid_samples} samples, features of a digits classifier '
                 f'trained here for {args.classifier_steps} steps, against the '
                 f"{figures['fid_reference_images']} real digits 5-9; comparable only within "
                 f"this table. {args.fid_samples} of the reference images themselves score "
                 f"{figures['fid_real_subset']:.2f}.")

  def said(c):
    names = [n for n in ('finetune', 'lora', 'scratch') if f'{c}.{n}.final_loss' in figures]
    loss = ' / '.join(f"{figures[f'{c}.{n}.final_loss']:.4f}" for n in names)
    out = f"{c} ({' / '.join(names)}, {args.steps} steps): loss {loss}"
    if f'{c}.scratch.fid_domain' in figures:
      out += ', FID-domain ' + ' / '.join(f"{figures[f'{c}.{n}.fid_domain']:.2f}" for n in names)
    return out

  headline = {'quality': '; '.join(said(c) for c in args.cases.split(',')
                                   if f'{c}.finetune.final_loss' in figures)}
  results_lib.write(args.result_name, figures, headline=headline, notes=notes,
                    tables=[results_lib.table(
                        'Classes 5-9 after pretraining on 0-4: held-out loss',
                        ['case', 'run', 'steps', 'first eval', 'final', 'steps to scratch final',
                         's to scratch final', f'FID-domain ({args.fid_samples} samples)'],
                        rows),
                            results_lib.table('Held-out loss curves (step:loss)',
                                              ['case', 'run', 'curve'], curves)],
                    config=vars(args), results_dir=args.results_dir)


if __name__ == '__main__':
  main()
