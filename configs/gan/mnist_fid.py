"""GAN on MNIST for the FID budget (issue 26): at most 90 minutes of training on one core of
a 2-core CPU (the other core trains configs/diffusion/mnist_fid.py).

The recipe (SN-GAN style, Miyato et al. 2018): hinge loss, spectral norm on every D layer,
TTUR (Heusel et al. 2017: D at 4e-4, G at 1e-4, Adam betas (0, 0.9), constant), the
DCGAN G of configs/gan/mnist.py (BatchNorm, 32-64 channels) and its EMA (0.999, standing
BatchNorm statistics) for every sample. Constant learning rates: a run cut at any minute is
a finished recipe, so every checkpoint is a point of the FID-vs-minutes curve.

  python -m experiments.gan --workdir runs/gan_fid \
    --config configs/gan/mnist_fid.py:path=../shared/data/mnist
then sample 10,000 -> FID/KID/precision/recall against the MNIST test set:
  python -m benchmarks.image_fid_budget --family gan --workdir runs/gan_fid ...
Config args: `runlocal`, `path=` / `tfds=` (data).
"""
from configs import common
from configs.gan import base
from configs.gan import mnist


def get_config(arg=None):
  args = common.parse_arg(arg, runlocal=False, path='', tfds='')
  c = mnist.get_config(f'path={args.path},tfds={args.tfds}' if (args.path or args.tfds)
                       else None)
  c.loss = 'hinge'
  c.model.spectral_norm = True
  for opt, lr in ((c.optimizer_g, 1e-4), (c.optimizer_d, 4e-4)):
    opt.learning_rate, opt.b1, opt.b2 = lr, 0.0, 0.9
  c.ema.decay = 0.999
  c.train.num_steps = 400_000      # the run is cut by minutes, not steps (constant lr)
  c.train.eval_every = 1000
  c.train.checkpoint_every = 1000
  c.train.max_to_keep = 40         # every checkpoint is a point of the curve
  return base.apply_runlocal(c) if args.runlocal else c
