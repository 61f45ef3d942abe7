"""Domain classifiers (the FID-domain feature extractor): defaults shared by the configs.

Each config file calls `get_base_config()`, overrides a few fields and applies
`apply_runlocal` last.
  python -m experiments.classifier --config configs/classifier/digits.py --workdir runs/digits_clf
"""
import ml_collections

from configs import image_data


def get_base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = 'classifier'
  c.seed = 0

  c.data = image_data.get_image_data_config()

  c.model = ml_collections.ConfigDict()
  c.model.widths = (32, 64)          # conv widths; each stage halves the resolution
  c.model.feature_dim = 128          # the penultimate layer = the FID-domain features

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = 'adamw'
  c.optimizer.learning_rate = 1e-3
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-8
  c.optimizer.weight_decay = 1e-4
  c.optimizer.grad_clip_norm = 1.0
  c.optimizer.schedule = 'cosine'
  c.optimizer.warmup_steps = 50
  c.optimizer.end_learning_rate = 1e-5

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 128
  c.train.num_steps = 1000
  # 1: a conv step gains nothing from several steps per call on CPU, and compiles faster.
  c.train.steps_per_call = 1
  c.train.log_every = 100
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  c.train.max_to_keep = 1
  c.train.stop_after = 0

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 500            # the whole eval split is scored at every eval
  return c


def apply_runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Tiny mode: a few real steps on a little data."""
  image_data.apply_image_runlocal(c)
  c.train.steps_per_call = 1
  c.model.widths = (8, 16)
  c.model.feature_dim = 16
  c.optimizer.warmup_steps = 2
  c.eval.batch_size = 32
  return c
