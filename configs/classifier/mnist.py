"""Domain classifier for MNIST (28x28 grayscale), the FID-domain extractor of the MNIST
benchmarks. `path=` reads a folder of MNIST IDX files; without it, TFDS `mnist` by name.
  python -m experiments.classifier --workdir runs/mnist_clf \
    --config configs/classifier/mnist.py:path=../shared/data/mnist
Check its accuracy with `python -m experiments.classifier --workdir runs/mnist_clf --accuracy`
(not measured while writing this config: the shared 2-core machine was saturated).
"""
from configs import common
from configs import image_data
from configs import classifier as base


def get_config(arg=None):
  args = common.parse_arg(arg, runlocal=False, path='', tfds='', steps=1500)
  c = base.get_base_config()
  c.data.source, c.data.tfds_name = 'tfds', 'mnist'
  image_data.data_from_arg(c.data, args)
  # Narrow and batch 64: a conv step's backward pass is slow on CPU (batch 128 with widths
  # (32, 64) took ~0.6 s/step on 2 cores; this is ~4x cheaper).
  c.model.widths = (16, 32)
  c.train.batch_size = 64
  c.train.num_steps = args.steps
  return base.apply_runlocal(c) if args.runlocal else c
