"""DCGAN on scikit-learn's bundled 8x8 digits (no download): 2x2 -> 4x4 -> 8x8.

  python -m experiments.gan --config configs/gan/digits.py --workdir runs/gan_digits
"""
from configs import common
from configs.gan import base


def get_config(arg=None):
  args = common.parse_arg(arg, runlocal=False)
  c = base.get_base_config()
  c.data.source = 'embedded'
  c.model.latent_dim = 32
  c.model.g_width = 64
  c.model.d_width = 32
  c.train.num_steps = 3000
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  return base.apply_runlocal(c) if args.runlocal else c
