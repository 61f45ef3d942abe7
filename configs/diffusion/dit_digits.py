"""DDPM with a DiT backbone (adaLN-Zero transformer) on the embedded 8x8 digits: patch 2
gives 16 tokens; a few-minute CPU run.

  python -m experiments.diffusion --config configs/diffusion/dit_digits.py --workdir runs/dit_digits
  python -m experiments.diffusion --workdir runs/dit_digits --sample --num_images 64 \
    --out runs/dit_digits/cli
Config args: `runlocal` (tiny smoke mode), `cond` (class-conditional with guidance).
"""
import ml_collections

from configs import common
from configs.diffusion import base


def add_dit(c: ml_collections.ConfigDict, **fields) -> ml_collections.ConfigDict:
  """Switches a diffusion config to the DiT backbone (fields of genai.models.dit.DiT; the
  experiment supplies out_channels, num_classes and model.dropout)."""
  c.model.backbone = 'dit'
  c.model.dropout = 0.0               # DiT trains without dropout
  c.model.dit = ml_collections.ConfigDict(dict(
      patch_size=2, d_model=128, num_layers=4, num_heads=4, mlp_ratio=4.0,
      dtype='float32'))
  c.model.dit.update(fields)
  return c


def apply_dit_runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  base.apply_runlocal(c)
  c.model.dit.update(d_model=16, num_layers=1, num_heads=2, mlp_ratio=2.0)
  return c


def get_config(arg=None):
  args = common.parse_arg(arg, runlocal=False, cond=False)
  c = base.get_base_config()
  c.data.source = 'embedded'
  add_dit(c, patch_size=2, d_model=128, num_layers=4, num_heads=4)  # 8x8 -> 4x4 = 16 tokens
  c.model.class_conditional = args.cond
  c.sample.guidance = 1.0 if args.cond else 0.0
  c.train.num_steps = 3000
  c.train.eval_every = 1000
  c.eval.num_examples = 0             # the whole 180-image test split
  return apply_dit_runlocal(c) if args.runlocal else c
