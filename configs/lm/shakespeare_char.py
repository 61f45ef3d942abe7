"""nanoGPT's "baby" Shakespeare char model: 4 layers, 4 heads, width 128, block 64, batch 12.

AdamW lr 1e-3 cosine to 1e-4 with 100 warmup steps, 2000 steps, no dropout. Unlike nanoGPT
(and the LM base), no gradient clipping and no weight decay: at 2000 steps both only slow
this small model down (val loss 1.882 mean over seeds 0-3 against 1.899 with nanoGPT's
clip 1.0 and decay 0.1; README, "Benchmarks"). A CPU-only host is split into one device
per core (`parallel.cpu_devices=0`): on 2 cores the command ran 12% faster, 46.8-50.3 s
against 54.0-56.9 as one device (docs/parallel.md). Data: a local copy of Tiny
Shakespeare (`path=`), else TFDS `tiny_shakespeare` by name.
  python -m experiments.lm --workdir runs/shakespeare \
    --config configs/lm/shakespeare_char.py:path=../shared/data/tinyshakespeare/input.txt
"""
from configs import common
from configs.lm import base


def get_config(arg=None):
  args = common.parse_arg(arg, runlocal=False, path='')
  c = base.get_base_config()
  if args.path:
    c.data.source, c.data.path = 'files', args.path
  else:
    c.data.source, c.data.tfds_name = 'tfds', 'tiny_shakespeare'
  c.optimizer.grad_clip_norm = 0.0
  c.optimizer.weight_decay = 0.0
  c.eval.sample_prompt = '\n'
  c.eval.sample_tokens = 500
  c.parallel.cpu_devices = 0
  return base.apply_runlocal(c) if args.runlocal else c
