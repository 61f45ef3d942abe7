"""Domain classifier for scikit-learn's 8x8 digits (embedded, no download): ~95.6% test
accuracy (180 images) in about a minute on 2 CPU cores.
  python -m experiments.classifier --config configs/classifier/digits.py --workdir runs/digits_clf
"""
from configs import common
from configs import classifier as base


def get_config(arg=None):
  args = common.parse_arg(arg, runlocal=False, steps=600)
  c = base.get_base_config()
  c.data.source = 'embedded'
  c.model.widths = (32, 64)
  c.train.batch_size = 64
  c.train.num_steps = args.steps
  c.train.eval_every = 300
  c.train.checkpoint_every = 300
  return base.apply_runlocal(c) if args.runlocal else c
