"""Quick start: a convolutional VAE on scikit-learn's 8x8 digits (bundled, no download).

  python -m experiments.vae --config configs/vae/digits.py --workdir runs/vae_digits
  python -m experiments.vae --workdir runs/vae_digits --sample --num_images 64 --out samples/

Args: `likelihood=gaussian` swaps the dynamically binarised Bernoulli model for a Gaussian
one on grey levels in [0,1]; `runlocal` is the tiny test mode.
"""
from configs import common
from configs.vae import base


def get_config(arg=None):
  args = common.parse_arg(arg, runlocal=False, likelihood='bernoulli', steps=3000)
  c = base.get_base_config()
  c.data.source = 'embedded'
  if args.likelihood == 'gaussian':
    c.data.binarize = False
    c.model.likelihood = 'gaussian'
  elif args.likelihood != 'bernoulli':
    raise ValueError(f"likelihood={args.likelihood!r}; use 'bernoulli' or 'gaussian'.")
  # 8x8 images: two stride-2 levels reach 2x2.
  c.model.latent_dim = 16
  c.model.channels = (32, 64)
  c.model.hidden_dim = 128
  c.train.batch_size = 64
  c.train.num_steps = args.steps
  c.train.log_every = 100
  c.train.eval_every = 1000
  c.train.checkpoint_every = 1000
  c.eval.iw_examples = 0  # the 180 test digits
  return base.apply_runlocal(c) if args.runlocal else c
