"""PyTorch eager reference for the baby char-GPT training step (nanoGPT "baby" shape).

Same model as genai's Transformer(arch='gpt2') at 4 layers x 4 heads x width 128, block 64,
vocab 65: learned positions, pre-LayerNorm (with bias), GELU (tanh), tied embeddings,
causal attention via F.scaled_dot_product_attention, AdamW (fused=False, foreach default,
b2=0.99, weight decay 0.1 on every parameter like optax.adamw's default), grad-norm clip 1.0.
Trains on random tokens and prints one JSON line per measurement, e.g.

  python benchmarks/torch_reference_gpt.py --batch_size 12 --block_size 64 --steps 50

so a JAX step can be compared with it as a ratio on the same machine at the same time.
torch is an optional dependency (reference only): `pip install torch==2.13.0` (CPU build).
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
  def __init__(self, c, h):
    super().__init__()
    self.h = h
    self.ln1 = nn.LayerNorm(c)
    self.qkv = nn.Linear(c, 3 * c)
    self.proj = nn.Linear(c, c)
    self.ln2 = nn.LayerNorm(c)
    self.fc = nn.Linear(c, 4 * c)
    self.fc_out = nn.Linear(4 * c, c)

  def forward(self, x):
    b, t, c = x.shape
    q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
    q, k, v = (z.view(b, t, self.h, c // self.h).transpose(1, 2) for z in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    x = x + self.proj(y.transpose(1, 2).contiguous().view(b, t, c))
    return x + self.fc_out(F.gelu(self.fc(self.ln2(x)), approximate='tanh'))


class GPT(nn.Module):
  def __init__(self, vocab, block, layers, heads, width):
    super().__init__()
    self.wte = nn.Embedding(vocab, width)
    self.wpe = nn.Embedding(block, width)
    self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
    self.ln_f = nn.LayerNorm(width)
    self.head = nn.Linear(width, vocab, bias=False)
    self.head.weight = self.wte.weight  # tied
    for name, p in self.named_parameters():
      if p.dim() == 2:
        std = 0.02 / math.sqrt(2 * layers) if name.endswith(('proj.weight', 'fc_out.weight')) else 0.02
        nn.init.normal_(p, 0.0, 0.01 if name == 'wpe.weight' else std)
      elif 'ln' not in name:
        nn.init.zeros_(p)

  def forward(self, idx, targets):
    t = idx.shape[1]
    x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
    for blk in self.blocks:
      x = blk(x)
    logits = self.head(self.ln_f(x))
    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--batch_size', type=int, default=12)
  ap.add_argument('--block_size', type=int, default=64)
  ap.add_argument('--steps', type=int, default=50, help='timed steps per measurement')
  ap.add_argument('--repeats', type=int, default=3, help='measurements (one line each)')
  ap.add_argument('--warmup', type=int, default=5)
  ap.add_argument('--layers', type=int, default=4)
  ap.add_argument('--heads', type=int, default=4)
  ap.add_argument('--width', type=int, default=128)
  ap.add_argument('--vocab', type=int, default=65)
  ap.add_argument('--threads', type=int, default=0, help='torch.set_num_threads (0: default)')
  args = ap.parse_args()
  if args.threads:
    torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  model = GPT(args.vocab, args.block_size, args.layers, args.heads, args.width)
  opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1,
                          fused=False)
  x = torch.randint(0, args.vocab, (args.batch_size, args.block_size))
  y = torch.randint(0, args.vocab, (args.batch_size, args.block_size))

  def step():
    loss = model(x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss

  for _ in range(args.warmup):
    step()
  tokens = args.batch_size * args.block_size
  for r in range(args.repeats):
    t0 = time.perf_counter()
    for _ in range(args.steps):
      loss = step()
    loss = float(loss.detach())
    dt = (time.perf_counter() - t0) / args.steps
    print(json.dumps(dict(impl='torch_eager', torch=torch.__version__, threads=torch.get_num_threads(),
                          batch_size=args.batch_size, block_size=args.block_size, repeat=r,
                          ms_per_step=round(dt * 1e3, 2), tokens_per_s=round(tokens / dt),
                          loss=round(loss, 4))), flush=True)


if __name__ == '__main__':
  main()
