"""DCGAN on MNIST 28x28 (7x7 -> 14x14 -> 28x28), non-saturating loss, Adam 2e-4 b1 0.5.

A local folder of MNIST IDX files (`path=`), else TFDS `mnist` by name:
  python -m experiments.gan --workdir runs/gan_mnist \
    --config configs/gan/mnist.py:path=../shared/data/mnist
"""
from configs import common
from configs import image_data
from configs.gan import base


def get_config(arg=None):
  args = common.parse_arg(arg, runlocal=False, path='', tfds='')
  c = base.get_base_config()
  c.data.source, c.data.tfds_name = 'tfds', 'mnist'
  image_data.data_from_arg(c.data, args)
  c.model.latent_dim = 64
  c.model.g_width = 32
  c.model.d_width = 32
  c.train.batch_size = 64
  c.train.num_steps = 5000
  return base.apply_runlocal(c) if args.runlocal else c
