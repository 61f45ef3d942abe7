"""DDPM on scikit-learn's embedded 8x8 digits (no download): a few-minute CPU run.

  python -m experiments.diffusion --config configs/diffusion/digits.py --workdir runs/diff_digits
  python -m experiments.diffusion --workdir runs/diff_digits --sample --num_images 64 \
    --out runs/diff_digits/cli
Config args: `runlocal` (tiny smoke mode), `cond` (class-conditional with guidance).
"""
from configs import common
from configs.diffusion import base


def get_config(arg=None):
  args = common.parse_arg(arg, runlocal=False, cond=False)
  c = base.get_base_config()
  c.data.source = 'embedded'
  c.model.unet.features = 32
  c.model.unet.channel_mults = (1, 2)  # 8x8 -> 4x4
  c.model.class_conditional = args.cond
  c.sample.guidance = 1.0 if args.cond else 0.0
  c.train.num_steps = 3000
  c.train.eval_every = 1000
  c.eval.num_examples = 0             # the whole 180-image test split
  return base.apply_runlocal(c) if args.runlocal else c
