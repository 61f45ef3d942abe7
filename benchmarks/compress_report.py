"""The compression report of a trained LM workdir: size, speed and quality, one table.

  python -m benchmarks.compress_report --workdir runs/shakespeare_fast \
      [--student runs/student_distilled] [--recovery_steps 200] [--sparsities 0.3,0.5,0.7]

Rows: the original float32 model; weight-only int8 (per channel) and int4 (group-wise,
asymmetric and symmetric) with the matmul path on integer storage
(genai/compress/quantize.py); symmetric int4 after a --qat_steps QAT fine-tune (qwix
fake quantization on the same grid, model.qat=int4); one-shot
global magnitude pruning at each --sparsities (no retraining), and at 50% followed by a
--recovery_steps fine-tune with the mask held (experiments.lm with prune + init_from); a
distilled student workdir if given. Columns: parameters (non-zero for pruned models),
bytes on disk (the safetensors file of the weights as stored: float32, int8/int4 + scales;
pruned weights are stored dense, so their bytes do not shrink), forward tokens/s on the
validation batches, and validation perplexity on the whole validation split of the run's
own data. One JSON line per row, then the Markdown table; writes the result file
(benchmarks/results.py).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import results as results_lib
from experiments import lm
from genai.compress import pruning
from genai.compress import quantize as qz
from genai.data import sequences
from genai.data import text_sources
from genai.pretrained import safetensors_io


def _val_batches(config, tokenizer, batch_size=64):
  tokens = tokenizer.encode(text_sources.load_text(config.data))
  _, val = sequences.split_train_val(tokens, config.data.val_fraction,
                                     block_size=config.data.block_size)
  return sequences.eval_batches(val, block_size=config.data.block_size, batch_size=batch_size,
                                max_batches=0)


def _score(logits_fn, batches):
  """(perplexity, forward tokens/s) with a jitted logits_fn(inputs) -> [B, T, V]."""

  @jax.jit
  def nll(inputs, targets):
    logits = logits_fn(inputs)
    return -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1))

  jax.block_until_ready(nll(batches[0]['inputs'], batches[0]['targets']))  # compile
  t0 = time.perf_counter()
  total = sum(float(nll(b['inputs'], b['targets'])) for b in batches)
  dt = time.perf_counter() - t0
  n = sum(b['targets'].size for b in batches)
  return math.exp(total / n), n / dt


def _file_bytes(tensors, tmp, name):
  path = os.path.join(tmp, name + '.safetensors')
  flat = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(tensors, sep='/').items()}
  safetensors_io.write(path, flat)
  return os.path.getsize(path)


def headline(fig: dict) -> dict:
  models = list(dict.fromkeys(k.rsplit('.', 1)[0] for k in fig if k.endswith('.bytes')))
  base = 'float32 (original)'
  picked = [next((m for m in models if pick(m)), None) for pick in (
      lambda m: m == 'int8', lambda m: m.startswith('int4 g32 symmetric after'),
      lambda m: m.startswith('pruned 50% +'))]
  parts = [f'{m}: {fig[m + ".bytes"]:,} B, ppl {fig[m + ".ppl_change_pct"]:+.2f}%'
           for m in picked if m]
  return {'quality': f'float32 {fig[base + ".bytes"]:,} B, ppl {fig[base + ".val_ppl"]:.4f}; '
                     + '; '.join(parts),
          'speed': 'forward tokens/s: ' + ', '.join(
              f'{m} {fig[m + ".tokens_per_s"]:,}' for m in (base, 'int8') if m in models)}


def main():
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument('--workdir', required=True)
  p.add_argument('--student', default='', help='a distilled student LM workdir')
  p.add_argument('--sparsities', default='0.3,0.5,0.7')
  p.add_argument('--recovery_steps', type=int, default=200)
  p.add_argument('--recovery_lr', type=float, default=3e-4)
  p.add_argument('--qat_steps', type=int, default=200)
  p.add_argument('--out', default='')
  results_lib.add_args(p, 'compress_report')
  a = p.parse_args()

  config, model, params, tokenizer = lm.load_workdir(a.workdir)
  params = jax.tree.map(np.asarray, params)
  batches = _val_batches(config, tokenizer)
  rows = []
  tmp = tempfile.mkdtemp(prefix='genai_compress_')

  def add(name, n_params, nbytes, ppl_speed):
    ppl, tok_s = ppl_speed
    rows.append({'model': name, 'params': int(n_params), 'bytes': int(nbytes),
                 'val_ppl': round(ppl, 4), 'tokens_per_s': round(tok_s)})
    print(json.dumps(rows[-1]), flush=True)

  n_all = sum(x.size for x in jax.tree.leaves(params))
  dense = lambda prm: (lambda x: model.apply({'params': prm}, x)[0])
  add('float32 (original)', n_all, _file_bytes(params, tmp, 'float'), _score(dense(params), batches))
  def quantized_row(name, prm, kind, group, symmetric=False):
    qp = qz.quantize_params(prm, kind, group_size=group or 32, symmetric=symmetric)
    stored = {'float': qp['float'], 'quantized': qp['quantized']}
    add(name, n_all, _file_bytes(stored, tmp, name.replace(' ', '_')),
        _score(lambda x, qp=qp: qz.apply_quantized(model, qp, x)[0], batches))

  for kind, group, sym in (('int8', 0, True), ('int4', 32, False), ('int4', 64, False),
                           ('int4', 32, True)):
    quantized_row(kind + (f' g{group}' if group else '') + (' symmetric' if sym and group else ''),
                  params, kind, group, sym)
  for s in [float(x) for x in a.sparsities.split(',') if x]:
    masks = pruning.magnitude_masks(params, s)
    pruned = jax.tree.map(lambda w, m: np.where(np.asarray(m), w, 0).astype(w.dtype), params, masks)
    nz = sum(int(np.count_nonzero(x)) for x in jax.tree.leaves(pruned))
    add(f'pruned {int(100 * s)}% (one shot)', nz, _file_bytes(pruned, tmp, f'p{s}'),
        _score(dense(pruned), batches))
  def finetune(name, steps, **model):
    """A short fine-tune of the workdir's model with `model`/prune overrides; its params."""
    wd = os.path.join(tmp, name)
    c = lm.workdir_lib.load_config(a.workdir, 'lm')
    c.model.init_from = f'workdir:{a.workdir}'
    c.model.update(model.pop('model', {}))
    c.prune.update(model.pop('prune', {}))
    c.train.update(num_steps=steps, eval_every=0, checkpoint_every=steps,
                   log_every=max(steps // 4, 1))
    c.optimizer.update(learning_rate=a.recovery_lr, warmup_steps=min(20, steps // 4),
                       end_learning_rate=a.recovery_lr / 10)
    c.eval.sample_tokens = 0
    lm.workdir_lib.run(c, wd, lm.build_task, print_fn=lambda _: None)
    return jax.tree.map(np.asarray, lm.load_workdir(wd)[2])

  if a.recovery_steps:  # 50% magnitude pruning held through a short fine-tune
    rec = finetune('recovery', a.recovery_steps,
                   prune=dict(kind='magnitude', sparsity=0.5, begin_step=0, end_step=None))
    nz = sum(int(np.count_nonzero(x)) for x in jax.tree.leaves(rec))
    add(f'pruned 50% + {a.recovery_steps}-step recovery', nz, _file_bytes(rec, tmp, 'rec'),
        _score(dense(rec), batches))
  if a.qat_steps:  # int4 QAT fine-tune (qwix, symmetric g32), then stored as int4 g32
    qat_params = finetune('qat', a.qat_steps, model=dict(qat='int4', qat_tile=32))
    quantized_row(f'int4 g32 symmetric after {a.qat_steps}-step QAT', qat_params, 'int4', 32, True)
  if a.student:
    _, s_model, s_params, _ = lm.load_workdir(a.student)
    s_params = jax.tree.map(np.asarray, s_params)
    add('distilled student', sum(x.size for x in jax.tree.leaves(s_params)),
        _file_bytes(s_params, tmp, 'student'),
        _score(lambda x: s_model.apply({'params': s_params}, x)[0], batches))
  base = rows[0]['val_ppl']
  for r in rows:
    r['ppl_change_pct'] = round(100 * (r['val_ppl'] / base - 1), 2)
  title = (f'Compression report of {a.workdir} ({sum(b["targets"].size for b in batches):,} '
           f'validation tokens, {jax.devices()[0].device_kind})')
  columns = ['model', 'parameters', 'bytes on disk', 'tokens/s (forward)', 'val perplexity',
             'change']
  cells = [[r['model'], f'{r["params"]:,}', f'{r["bytes"]:,}', f'{r["tokens_per_s"]:,}',
            f'{r["val_ppl"]:.4f}', f'{r["ppl_change_pct"]:+.2f}%'] for r in rows]
  print(f'\n{title}')
  for line in (columns, ['---'] * len(columns), *cells):
    print('| ' + ' | '.join(line) + ' |')
  figures = {f'{r["model"]}.{k}': v for r in rows for k, v in r.items() if k != 'model'}
  results_lib.write(a.result_name, figures, headline=headline(figures),
                    tables=[results_lib.table(title, columns, cells)],
                    config={k: v for k, v in vars(a).items()
                            if k not in ('results_dir', 'result_name')},
                    results_dir=a.results_dir)
  if a.out:
    with open(a.out, 'w') as f:
      json.dump(rows, f, indent=1)


if __name__ == '__main__':
  main()
