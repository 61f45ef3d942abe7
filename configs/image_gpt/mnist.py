"""Class-conditional GPT over dynamically binarised MNIST, 2x2 pixel patches (196 tokens of
16): the benchmark recipe (benchmarks/image_gpt_mnist.py).

Data: MNIST-format IDX files in a folder (`path=`), else TFDS `mnist` by name:
  python -m experiments.image_gpt --workdir runs/igpt_mnist \
    --config configs/image_gpt/mnist.py:path=../shared/data/mnist
The test set is binarised once with a fixed seed (the VAE's test set), so every run scores
the same images. Args: `uncond`, `steps=N`, `runlocal`.
"""
from configs import common
from configs import image_data
from configs.image_gpt import base


def get_config(arg=None):
  args = common.parse_arg(arg, runlocal=False, path='', tfds='', uncond=False, steps=1200)
  c = base.get_base_config()
  if not args.path and not args.tfds:
    args.tfds = 'mnist'
  image_data.data_from_arg(c.data, args)
  c.model.class_conditional = not args.uncond
  # Batch 32: on a 2-core CPU the time per image hardly depends on the batch size (measured
  # 31 images/s at 32 and 29 at 64 with 4x128), so smaller batches buy more updates.
  c.train.batch_size = 32
  c.train.num_steps = args.steps
  c.train.log_every = 100
  c.train.eval_every = 1000
  c.train.checkpoint_every = 1000
  return base.apply_runlocal(c) if args.runlocal else c
