"""Dynamically binarised MNIST with a Bernoulli convolutional VAE (the benchmark recipe).

Data: MNIST-format IDX files in a folder (`path=`), else TFDS `mnist` by name:
  python -m experiments.vae --workdir runs/vae_mnist \
    --config configs/vae/mnist.py:path=../shared/data/mnist
The test set is binarised once with a fixed seed, so every run scores the same images.
"""
from configs import common
from configs import image_data
from configs.vae import base


def get_config(arg=None):
  args = common.parse_arg(arg, runlocal=False, path='', tfds='', steps=14000)
  c = base.get_base_config()
  if not args.path and not args.tfds:
    args.tfds = 'mnist'
  image_data.data_from_arg(c.data, args)
  c.model.latent_dim = 32
  c.model.channels = (32, 64)
  c.model.hidden_dim = 256
  # Batch 64: on a 2-core CPU the time per image hardly depends on the batch size, so
  # smaller batches buy twice the updates per epoch (~15 epochs in 20 minutes).
  c.train.batch_size = 64
  c.train.num_steps = args.steps
  c.optimizer.warmup_steps = 200
  c.train.eval_every = 5000
  c.train.checkpoint_every = 1000
  c.eval.iw_samples = 100
  c.eval.iw_examples = 1000
  return base.apply_runlocal(c) if args.runlocal else c
