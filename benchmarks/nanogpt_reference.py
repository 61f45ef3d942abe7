"""nanoGPT's own baby Shakespeare-char run, in PyTorch eager: what the recipe reaches.

Issue 2 asks genai's baby recipe (4 layers x 4 heads x width 128, block 64, batch 12, 2000
steps, AdamW 1e-3 cosine to 1e-4, warmup 100, no dropout) for validation loss <= 1.89, after
nanoGPT's README ("gets us a loss of only 1.88"). This script re-implements nanoGPT's
model.py and train.py for that run, line for line where it matters, so the target can be
checked against the reference itself on this machine:

- model: GPT-2 blocks without biases (nanoGPT's default `bias=False`), exact-erf GELU, tied
  embeddings, N(0, 0.02) init with the residual projections at 0.02/sqrt(2 n_layer);
- optimizer: torch AdamW (0.9, 0.99), weight decay 0.1 on every parameter of 2+ dims
  (embeddings included) and none on the rest, grad-norm clip 1.0;
- schedule: lr * (it+1)/(warmup+1) for it < 100, then cosine to 1e-4 at 2000;
- data: the first 90% of the characters for training, the last 10% for validation, batches
  of random offsets (torch.randint), seed 1337 + seed;
- evaluation at step 2000 two ways: nanoGPT's estimate (`--eval_iters` random batches of 12,
  20 in the README command) and the whole validation split in non-overlapping windows, the
  way genai's `benchmarks.lm_train` measures it.

  python -m benchmarks.nanogpt_reference --data ../shared/data/tinyshakespeare/input.txt \
    --seeds 0,1,2,3 [--grad_clip 0] [--weight_decay 0]

Prints one JSON line per seed, then a summary line, and writes the result file
(benchmarks/results.py). torch is an optional dependency (`pip install -e .[reference]`).
"""
import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmarks import results as results_lib


class LayerNorm(nn.Module):
  """nanoGPT's LayerNorm: a weight and no bias when bias=False."""

  def __init__(self, c):
    super().__init__()
    self.weight = nn.Parameter(torch.ones(c))

  def forward(self, x):
    return F.layer_norm(x, self.weight.shape, self.weight, None, 1e-5)


class Block(nn.Module):
  def __init__(self, c, h):
    super().__init__()
    self.h = h
    self.ln_1 = LayerNorm(c)
    self.c_attn = nn.Linear(c, 3 * c, bias=False)
    self.attn_c_proj = nn.Linear(c, c, bias=False)
    self.ln_2 = LayerNorm(c)
    self.c_fc = nn.Linear(c, 4 * c, bias=False)
    self.mlp_c_proj = nn.Linear(4 * c, c, bias=False)

  def forward(self, x):
    b, t, c = x.shape
    q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
    q, k, v = (z.view(b, t, self.h, c // self.h).transpose(1, 2) for z in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    x = x + self.attn_c_proj(y.transpose(1, 2).contiguous().view(b, t, c))
    return x + self.mlp_c_proj(F.gelu(self.c_fc(self.ln_2(x))))


class GPT(nn.Module):
  def __init__(self, vocab, block, layers, heads, width):
    super().__init__()
    self.wte = nn.Embedding(vocab, width)
    self.wpe = nn.Embedding(block, width)
    self.h = nn.ModuleList(Block(width, heads) for _ in range(layers))
    self.ln_f = LayerNorm(width)
    self.lm_head = nn.Linear(width, vocab, bias=False)
    self.wte.weight = self.lm_head.weight  # nanoGPT ties this way round
    for m in self.modules():
      if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    for name, p in self.named_parameters():
      if name.endswith('c_proj.weight'):
        nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * layers))

  def logits(self, idx):
    t = idx.shape[1]
    x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
    for blk in self.h:
      x = blk(x)
    return self.lm_head(self.ln_f(x))

  def forward(self, idx, targets):
    logits = self.logits(idx)
    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))

  @torch.no_grad()
  def generate(self, idx, num_tokens, temperature=0.8):
    """nanoGPT's generate: the whole (cropped) context through the model for every token."""
    block = self.wpe.weight.shape[0]
    for _ in range(num_tokens):
      logits = self.logits(idx[:, -block:])[:, -1, :] / temperature
      idx = torch.cat([idx, torch.multinomial(F.softmax(logits, dim=-1), 1)], dim=1)
    return idx


def get_lr(it, *, lr, min_lr, warmup, decay_iters):
  """nanoGPT train.py's get_lr."""
  if it < warmup:
    return lr * (it + 1) / (warmup + 1)
  if it > decay_iters:
    return min_lr
  ratio = (it - warmup) / (decay_iters - warmup)
  return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def run(seed, train, val, vocab, args):
  torch.manual_seed(1337 + seed)
  model = GPT(vocab, args.block_size, args.layers, args.heads, args.width)
  params = [p for p in model.parameters() if p.requires_grad]
  groups = [{'params': [p for p in params if p.dim() >= 2], 'weight_decay': args.weight_decay},
            {'params': [p for p in params if p.dim() < 2], 'weight_decay': 0.0}]
  opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.99))
  bs, t = args.batch_size, args.block_size

  def get_batch(data, starts=None, size=bs):
    """Inputs and next-token targets of the windows at `starts` (None: `size` random ones,
    as nanoGPT)."""
    starts = torch.randint(len(data) - t, (size,)) if starts is None else starts
    x = torch.stack([data[i:i + t] for i in starts])
    y = torch.stack([data[i + 1:i + 1 + t] for i in starts])
    return x, y

  def periodic_eval(it):
    """nanoGPT's eval_interval work, sized as genai's `eval` block: the val loss over
    `eval_iters` batches of `eval_batch_size`, `sample_tokens` generated, a checkpoint.
    Returns its seconds."""
    model.eval()
    e0 = time.perf_counter()
    model.eval()
    with torch.no_grad():
      for _ in range(args.eval_iters):
        model(*get_batch(val, size=args.eval_batch_size or bs))
    if args.sample_tokens:
      model.generate(torch.zeros((1, 1), dtype=torch.long), args.sample_tokens)
    if args.out_dir:
      torch.save({'model': model.state_dict(), 'optimizer': opt.state_dict(), 'iter_num': it},
                 os.path.join(args.out_dir, 'ckpt.pt'))
    model.train()
    return time.perf_counter() - e0

  t0 = time.perf_counter()
  eval_s = 0.0
  for it in range(args.steps):
    if args.eval_interval and it and it % args.eval_interval == 0:
      eval_s += periodic_eval(it)
    for g in opt.param_groups:
      g['lr'] = get_lr(it, lr=args.lr, min_lr=args.min_lr, warmup=args.warmup,
                       decay_iters=args.steps)
    x, y = get_batch(train)
    loss = model(x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if args.grad_clip > 0:
      torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
    opt.step()
  if args.eval_interval:
    eval_s += periodic_eval(args.steps)
  train_s = time.perf_counter() - t0 - eval_s

  model.eval()
  with torch.no_grad():
    estimate = float(np.mean([float(model(*get_batch(val))) for _ in range(args.eval_iters)]))
    n = (len(val) - t - 1) // t + 1  # genai's eval windows: stride = block size
    starts = torch.arange(n) * t
    total = 0.0
    for chunk in starts.split(256):
      total += float(model(*get_batch(val, chunk))) * len(chunk)
    whole = total / n
  return dict(seed=seed, steps=args.steps, weight_decay=args.weight_decay,
              grad_clip=args.grad_clip, train_seconds=round(train_s, 1),
              ms_per_step=round(1e3 * train_s / args.steps, 2), eval_seconds=round(eval_s, 3),
              val_loss_whole_split=round(whole, 4),
              val_loss_estimate=round(estimate, 4), eval_iters=args.eval_iters,
              val_windows=n)


def headline(fig: dict) -> dict:
  seeds = sorted(int(k[4:].split('.')[0]) for k in fig
                 if k.startswith('seed') and k.endswith('.ms_per_step'))
  f = lambda key: (f'{fig[key + "_mean"]:.4f} mean ({fig[key + "_min"]:.4f}'
                   f'-{fig[key + "_max"]:.4f})')
  return {'quality': f'val loss over seeds {seeds[0]}-{seeds[-1]}: whole split '
                     f'{f("val_loss_whole_split")}; nanoGPT\'s {fig["eval_iters"]}-batch '
                     f'estimate {f("val_loss_estimate")}',
          'speed': f'{fig["ms_per_step_best"]} ms/step (PyTorch eager, best seed)'}


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--data', default='../shared/data/tinyshakespeare/input.txt')
  ap.add_argument('--seeds', default='0', help='comma list')
  ap.add_argument('--steps', type=int, default=2000)
  ap.add_argument('--batch_size', type=int, default=12)
  ap.add_argument('--block_size', type=int, default=64)
  ap.add_argument('--layers', type=int, default=4)
  ap.add_argument('--heads', type=int, default=4)
  ap.add_argument('--width', type=int, default=128)
  ap.add_argument('--lr', type=float, default=1e-3)
  ap.add_argument('--min_lr', type=float, default=1e-4)
  ap.add_argument('--warmup', type=int, default=100)
  ap.add_argument('--eval_iters', type=int, default=20)
  ap.add_argument('--weight_decay', type=float, default=0.1)
  ap.add_argument('--grad_clip', type=float, default=1.0, help='0 = no clipping')
  ap.add_argument('--eval_interval', type=int, default=0,
                  help='Also evaluate every N steps and at the end (nanoGPT\'s loop): '
                       '--eval_iters val batches of --eval_batch_size, --sample_tokens '
                       'generated, a checkpoint in --out_dir. 0 = only the final evaluation.')
  ap.add_argument('--eval_batch_size', type=int, default=0, help='0 = --batch_size')
  ap.add_argument('--sample_tokens', type=int, default=0)
  ap.add_argument('--out_dir', default='', help='Where periodic checkpoints go (\'\' = none).')
  results_lib.add_args(ap, 'nanogpt_reference')
  args = ap.parse_args()
  with open(args.data, encoding='utf-8') as f:
    text = f.read()
  chars = sorted(set(text))
  lookup = {c: i for i, c in enumerate(chars)}
  data = torch.tensor([lookup[c] for c in text], dtype=torch.long)
  n_train = int(len(data) * 0.9)
  train, val = data[:n_train], data[n_train:]
  rows = []
  for seed in (int(s) for s in args.seeds.split(',')):
    rows.append(run(seed, train, val, len(chars), args))
    print(json.dumps(dict(impl='nanogpt_torch_eager', torch=torch.__version__, **rows[-1])),
          flush=True)
  whole = [r['val_loss_whole_split'] for r in rows]
  est = [r['val_loss_estimate'] for r in rows]
  summary = dict(seeds=len(rows),
                 val_loss_whole_split_mean=round(float(np.mean(whole)), 4),
                 val_loss_whole_split_min=min(whole), val_loss_whole_split_max=max(whole),
                 val_loss_estimate_mean=round(float(np.mean(est)), 4),
                 val_loss_estimate_min=min(est), val_loss_estimate_max=max(est))
  print(json.dumps(dict(summary=True, **summary)), flush=True)
  figures = summary | {'ms_per_step_best': min(r['ms_per_step'] for r in rows),
                       'eval_iters': args.eval_iters, 'val_windows': rows[0]['val_windows']}
  keys = ('ms_per_step', 'train_seconds', 'val_loss_whole_split', 'val_loss_estimate')
  for r in rows:
    figures.update({f'seed{r["seed"]}.{k}': r[k] for k in keys})
  seeds = results_lib.table(
      'one run per seed', ['seed', 'ms/step', 'train s', 'val loss (whole split)',
                           f'val loss ({args.eval_iters}-batch estimate)'],
      [[r['seed'], *(r[k] for k in keys)] for r in rows])
  config = {k: v for k, v in vars(args).items() if k not in ('results_dir', 'result_name')}
  results_lib.write(args.result_name, figures, headline=headline(figures), tables=[seeds],
                    config=config, results_dir=args.results_dir)


if __name__ == '__main__':
  main()
