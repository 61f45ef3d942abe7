"""DDPM on MNIST 28x28, cosine schedule, eps target, with a CPU-sized UNet: a 2x2
space-to-depth stem (28x28x1 -> 14x14x4), levels at 14 and 7 (32 and 64 channels),
self-attention in the 7x7 middle. Without the stem (--config.model.unet.patch_size=1) the
same widths cost ~4x the FLOPs and ~7x the step time on a 2-core CPU.

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
  c.model.unet.patch_size = 2
  c.model.unet.attention_levels = ()  # attention only in the middle (7x7): CPU cost
  c.model.dropout = 0.0               # short budgets underfit; dropout only slows them
  c.model.class_conditional = args.cond
  c.sample.guidance = 1.0 if args.cond else 0.0
  c.optimizer.learning_rate = 1e-3   # short CPU budgets: a higher peak, cosine to 1e-4
  c.optimizer.end_learning_rate = 1e-4
  c.train.batch_size = 64
  # One device over all cores, its convolutions on Eigen's thread pool: 300 steps and an
  # evaluation took 33.2 s against 39.2 split into a device per core (YNNPACK convolutions)
  # on a 2-core CPU (genai/parallel/cpu_devices.py, docs/parallel.md).
  c.parallel.cpu_devices = 1
  c.train.num_steps = 3000
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  return base.apply_runlocal(c) if args.runlocal else c
