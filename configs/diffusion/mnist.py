"""DDPM on MNIST 28x28 (levels 28 -> 14, self-attention in the 14x14 middle), cosine schedule, eps target.

Data: a local folder of MNIST IDX files (`path=`), else TFDS `mnist` by name.
  python -m experiments.diffusion --workdir runs/diff_mnist \
    --config configs/diffusion/mnist.py:path=../shared/data/mnist
Config args: `runlocal` (tiny smoke mode), `cond` (class-conditional, label dropout 0.1,
eval grids with guidance 1.0), `path=` / `tfds=` (data).
"""
from configs import common
from configs import image_data
from configs.diffusion import base


def get_config(arg=None):
  args = common.parse_arg(arg, runlocal=False, cond=False, path='', tfds='')
  c = base.get_base_config()
  c.data.source, c.data.tfds_name = 'tfds', 'mnist'
  image_data.data_from_arg(c.data, args)
  c.model.unet.features = 32
  c.model.unet.channel_mults = (1, 2)
  c.model.unet.attention_levels = ()  # attention only in the middle (14x14): CPU cost
  c.model.dropout = 0.0               # short budgets underfit; dropout only slows them
  c.model.class_conditional = args.cond
  c.sample.guidance = 1.0 if args.cond else 0.0
  c.train.batch_size = 64
  c.train.num_steps = 2000
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  return base.apply_runlocal(c) if args.runlocal else c
