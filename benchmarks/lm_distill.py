"""Distillation on Tiny Shakespeare: a char GPT teacher, and a student with <= 1/4 of its
parameters trained from scratch and by distillation, same data, steps and schedule.

  python -m benchmarks.lm_distill --text ../shared/data/tinyshakespeare/input.txt \
      [--out_dir runs/bench/distill] [--steps 1500]

1. teacher: configs/lm/shakespeare_char_fast.py (4 layers x 128, 0.8M params).
2. student from scratch: the same recipe with 3 layers x 64 (4 heads; 0.16M params).
3. student distilled: (2) with distill.teacher = the teacher's workdir (KD loss, T=2,
   alpha=0.5; the teacher's logits are computed in each jitted step).
Validation loss/perplexity on the whole validation split. Prints the share of the
teacher-vs-scratch perplexity gap that distillation closes:
  (ppl_scratch - ppl_distilled) / (ppl_scratch - ppl_teacher).
The workdirs are kept in --out_dir (wiped at the start; the teacher feeds
benchmarks.compress_report). Writes the result file (benchmarks/results.py).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time

import jax
import numpy as np

from benchmarks import results as results_lib
from configs.lm import shakespeare_char_fast
from experiments import lm
from genai.train import workdir as workdir_lib


def _run(name, config, out_dir):
  wd = os.path.join(out_dir, name)
  shutil.rmtree(wd, ignore_errors=True)  # a fresh run each time (a kept workdir would resume)
  lines = []
  t0 = time.perf_counter()
  state = workdir_lib.run(config, wd, lm.build_task, print_fn=lines.append)
  wall = time.perf_counter() - t0
  val = [float(l.split('val/loss ')[1].split(',')[0]) for l in lines if 'val/loss' in l][-1]
  ms = [float(l.split(' | ')[2].split(' ms')[0]) for l in lines if l.startswith('step ')][1:]
  n = sum(x.size for x in jax.tree.leaves(state['params']))
  row = {'model': name, 'params': int(n), 'val_loss': round(val, 4),
         'val_ppl': round(math.exp(val), 4), 'ms_per_step': round(float(np.median(ms)), 1),
         'wall_s': round(wall, 1), 'workdir': wd}
  print(json.dumps(row), flush=True)
  return row


def headline(fig: dict) -> dict:
  f = lambda model, key: fig[f'{model}.{key}']
  return {'quality': f'val perplexity teacher {f("teacher", "val_ppl"):.3f} '
                     f'({f("teacher", "params"):,.0f} params), student from scratch '
                     f'{f("student_scratch", "val_ppl"):.3f}, distilled '
                     f'{f("student_distilled", "val_ppl"):.3f} '
                     f'({f("student_distilled", "params"):,.0f} params); '
                     f'gap closed {fig["gap_closed_pct"]:.1f}%',
          'speed': f'teacher {f("teacher", "ms_per_step")} ms/step, student '
                   f'{f("student_scratch", "ms_per_step")} ms/step'}


def main():
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument('--text', default='../shared/data/tinyshakespeare/input.txt')
  p.add_argument('--out_dir', default='runs/bench/distill')
  p.add_argument('--steps', type=int, default=1500)
  p.add_argument('--student_width', type=int, default=64)
  p.add_argument('--student_layers', type=int, default=3)
  results_lib.add_args(p, 'lm_distill')
  a = p.parse_args()

  def config(**model):
    c = shakespeare_char_fast.get_config(f'path={a.text},steps={a.steps}')
    c.model.update(model)
    c.train.update(eval_every=a.steps, checkpoint_every=a.steps, log_every=100)
    c.eval.num_batches = 0          # the whole validation split
    c.eval.sample_tokens = 0
    return c

  teacher = _run('teacher', config(), a.out_dir)
  student = dict(d_model=a.student_width, num_layers=a.student_layers)
  scratch = _run('student_scratch', config(**student), a.out_dir)
  c = config(**student)
  c.distill.teacher = f'workdir:{teacher["workdir"]}'
  distilled = _run('student_distilled', c, a.out_dir)
  gap = (scratch['val_ppl'] - distilled['val_ppl']) / (scratch['val_ppl'] - teacher['val_ppl'])
  title = f'Tiny Shakespeare char GPT, {a.steps} steps each, {jax.devices()[0].device_kind}'
  columns = ['model', 'params', 'val loss', 'val perplexity', 'ms/step', 'wall']
  cells = [[r['model'], f'{r["params"]:,}', f'{r["val_loss"]:.4f}', f'{r["val_ppl"]:.4f}',
            f'{r["ms_per_step"]}', f'{r["wall_s"]:.0f} s'] for r in (teacher, scratch, distilled)]
  note = (f'student/teacher params: {distilled["params"] / teacher["params"]:.3f}; '
          f'perplexity gap closed by distillation: {100 * gap:.1f}%')
  print(f'\n{title}')
  for line in (columns, ['---'] * len(columns), *cells):
    print('| ' + ' | '.join(line) + ' |')
  print(note)
  figures = {f'{r["model"]}.{k}': v for r in (teacher, scratch, distilled) for k, v in r.items()
             if k not in ('model', 'workdir')}
  figures.update(gap_closed_pct=round(100 * gap, 1),
                 student_over_teacher_params=round(distilled['params'] / teacher['params'], 3))
  results_lib.write(a.result_name, figures, headline=headline(figures),
                    tables=[results_lib.table(title, columns, cells)], notes=[note],
                    config={k: v for k, v in vars(a).items()
                            if k not in ('results_dir', 'result_name')},
                    results_dir=a.results_dir)


if __name__ == '__main__':
  main()
