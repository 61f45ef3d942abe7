"""Domain classifiers (the FID-domain feature extractor): defaults shared by the configs.

Each config file calls `get_base_config()`, overrides a few fields and applies
`apply_runlocal` last.
  python -m experiments.classifier --config configs/classifier/digits.py --workdir runs/digits_clf
"""
import ml_collections

from configs import common
from configs import image_data


def get_base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = 'classifier'
  c.seed = 0

  c.data = image_data.get_image_data_config()

  c.model = ml_collections.ConfigDict()
  c.model.widths = (32, 64)          # conv widths; each stage halves the resolution
  c.model.feature_dim = 128          # the penultimate layer = the FID-domain features

  c.optimizer = common.optimizer_config(weight_decay=1e-4, grad_clip_norm=1.0, warmup_steps=50,
                                        end_learning_rate=1e-5)

  c.parallel = common.parallel_config()
  # 1 step per call (the default): a conv step gains nothing from more on CPU.
  c.train = common.train_config(batch_size=128, num_steps=1000, eval_every=500,
                                checkpoint_every=500, max_to_keep=1)

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 500            # the whole eval split is scored at every eval
  image_data.add_transfer_fields(c)  # model.init_from, train.freeze
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
