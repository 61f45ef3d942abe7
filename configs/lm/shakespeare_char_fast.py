"""The fastest recipe found on a 2-core CPU to reach Tiny Shakespeare val loss 1.89.

The baby shape of shakespeare_char.py with a shorter, hotter schedule: AdamW lr 3e-3 (3x
the baby's), 50 warmup steps, cosine to 1e-4 over 1500 steps, and nanoGPT's gradient
clipping (1.0) and weight decay (0.1), with which it was measured. On the 2-core test
machine it passes val loss 1.89 by step 1200 (the baby recipe needs all 2000). Measure with
  python -m benchmarks.lm_train \
    --config configs/lm/shakespeare_char_fast.py:path=../shared/data/tinyshakespeare/input.txt
"""
from configs import common
from configs.lm import base
from configs.lm import shakespeare_char


def get_config(arg=None):
  args = common.parse_arg(arg, runlocal=False, path='', steps=1500, lr=3e-3, warmup=50)
  c = shakespeare_char.get_config(f'path={args.path}' if args.path else None)
  c.train.num_steps = args.steps
  c.optimizer.learning_rate = args.lr
  c.optimizer.warmup_steps = args.warmup
  c.optimizer.end_learning_rate = 1e-4
  c.optimizer.grad_clip_norm = 1.0
  c.optimizer.weight_decay = 0.1
  return base.apply_runlocal(c) if args.runlocal else c
