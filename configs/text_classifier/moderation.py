"""The moderation classifier: P('unsafe') of a text, trained on the shipped toy set
(genai/safety/data/moderation_tiny.jsonl) or `path=` a JSONL of {"text", "label"} lines.
  python -m experiments.text_classifier --config configs/text_classifier/moderation.py \
    --workdir runs/moderation_clf
  python -m experiments.text_classifier --workdir runs/moderation_clf --accuracy
"""
from configs import common
from configs import text_classifier as base


def get_config(arg=None):
  args = common.parse_arg(arg, runlocal=False, path='', steps=300)
  c = base.get_base_config()
  c.data.path = args.path
  c.train.num_steps = args.steps
  c.train.eval_every = args.steps
  c.train.checkpoint_every = args.steps
  return base.apply_runlocal(c) if args.runlocal else c
