"""Quick start: a character GPT on the English prose that ships with Python (pydoc_data).

  python -m experiments.lm --config configs/lm/pydoc_char.py --workdir runs/pydoc
"""
from configs import common
from configs.lm import base


def get_config(arg=None):
  args = common.parse_arg(arg, runlocal=False, steps=600)
  c = base.get_base_config()
  c.data.source = 'embedded'
  c.train.num_steps = args.steps
  c.train.log_every = 50
  c.train.eval_every = 300
  c.train.checkpoint_every = 300
  c.eval.sample_prompt = 'The '
  c.eval.sample_tokens = 300
  return base.apply_runlocal(c) if args.runlocal else c
