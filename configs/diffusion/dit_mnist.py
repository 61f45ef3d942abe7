"""DDPM with a DiT backbone on MNIST 28x28: patch 4 -> a 7x7 grid of 49 tokens.

Data: a local folder of MNIST IDX files (`path=`), else TFDS `mnist` by name.
  python -m experiments.diffusion --workdir runs/dit_mnist \
    --config configs/diffusion/dit_mnist.py:path=../shared/data/mnist
Config args: `runlocal` (tiny smoke mode), `cond` (class-conditional, label dropout 0.1,
eval grids with guidance 1.0), `path=` / `tfds=` (data). Patch 2 (196 tokens) is about 4x
the attention cost: --config.model.dit.patch_size=2.
"""
from configs import common
from configs import image_data
from configs.diffusion import base
from configs.diffusion import dit_digits


def get_config(arg=None):
  args = common.parse_arg(arg, runlocal=False, cond=False, path='', tfds='')
  c = base.get_base_config()
  c.data.source, c.data.tfds_name = 'tfds', 'mnist'
  image_data.data_from_arg(c.data, args)
  dit_digits.add_dit(c, patch_size=4, d_model=128, num_layers=4, num_heads=4)  # 1.3M params
  c.model.class_conditional = args.cond
  c.sample.guidance = 1.0 if args.cond else 0.0
  c.train.batch_size = 64
  c.train.num_steps = 2000
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  return dit_digits.apply_dit_runlocal(c) if args.runlocal else c
