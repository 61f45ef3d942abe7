"""Quick start: a class-conditional GPT over scikit-learn's 8x8 digits (bundled, no download).

  python -m experiments.image_gpt --config configs/image_gpt/digits.py --workdir runs/igpt_digits
  python -m experiments.image_gpt --workdir runs/igpt_digits --sample --num_images 64 --label 3

Binarised pixels in 2x2 patches: 16 tokens of 16 per image. Args: `uncond` (no class
prefix), `levels=N` (N grey levels instead of binary pixels: data.binarize off),
`runlocal` (the tiny test mode).
"""
from configs import common
from configs.image_gpt import base


def get_config(arg=None):
  args = common.parse_arg(arg, runlocal=False, uncond=False, levels=2, steps=2000)
  c = base.get_base_config()
  c.data.source = 'embedded'
  c.model.class_conditional = not args.uncond
  if args.levels != 2:
    c.data.binarize = False
    c.tokens.levels = args.levels
  c.model.num_layers = 2
  c.model.d_model = 64
  c.train.num_steps = args.steps
  c.train.log_every = 100
  c.train.eval_every = 1000
  c.train.checkpoint_every = 1000
  return base.apply_runlocal(c) if args.runlocal else c
