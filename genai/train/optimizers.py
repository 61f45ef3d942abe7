"""optax optimizers and learning-rate schedules built from a config.

Config fields (`config.optimizer`):
  name: 'adam' | 'adamw' | 'adabelief' | 'sgd'
  learning_rate, b1, b2, eps, momentum (sgd), weight_decay, grad_clip_norm (0 = off)
  schedule: 'cosine' | 'linear' | 'constant'; warmup_steps; end_learning_rate
Weight decay is applied to matrices only: norms, biases and other vectors are skipped.
"""
from __future__ import annotations

from typing import Any

import jax
import optax

OPTIMIZERS = ('adam', 'adamw', 'adabelief', 'sgd')
SCHEDULES = ('cosine', 'linear', 'constant')


def make_schedule(opt_cfg: Any, num_steps: int) -> optax.Schedule:
  """Linear warmup from 0, then cosine/linear decay to end_learning_rate at num_steps."""
  lr = float(opt_cfg.learning_rate)
  warmup = int(opt_cfg.get('warmup_steps', 0))
  end_lr = float(opt_cfg.get('end_learning_rate', 0.0))
  name = opt_cfg.get('schedule', 'constant')
  if name not in SCHEDULES:
    raise ValueError(f'optimizer.schedule={name!r} is unknown; use one of {SCHEDULES}.')
  if warmup >= num_steps and name != 'constant':
    raise ValueError(f'optimizer.warmup_steps={warmup} must be < train.num_steps={num_steps}.')
  decay_steps = max(num_steps - warmup, 1)
  if name == 'cosine':
    after = optax.cosine_decay_schedule(lr, decay_steps, alpha=end_lr / lr if lr else 0.0)
  elif name == 'linear':
    after = optax.linear_schedule(lr, end_lr, decay_steps)
  else:
    after = optax.constant_schedule(lr)
  if warmup == 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def decay_mask(params: Any) -> Any:
  """True for parameters that get weight decay: matrices (kernels, embeddings)."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def param_path(path) -> str:
  """'layer_0/attn/qkv/kernel' for a tree path (box attributes such as `.value` dropped)."""
  return '/'.join(str(k.key) for k in path if hasattr(k, 'key'))


def freeze(tx: optax.GradientTransformation, pattern: str,
           prefix: str = '') -> optax.GradientTransformation:
  """Parameters whose path matches `pattern` (re.search) get zero updates and no state.
  `prefix` is put before every path the pattern sees (e.g. the GAN's 'generator/')."""
  import re  # pylint: disable=import-outside-toplevel
  regex = re.compile(pattern)

  def labels(params):
    out = jax.tree_util.tree_map_with_path(
        lambda path, _: 'frozen' if regex.search(prefix + param_path(path)) else 'train',
        params)
    if 'train' not in jax.tree.leaves(out):
      of = f' of the {prefix.rstrip("/")}' if prefix else ''
      raise ValueError(f'train.freeze={pattern!r} freezes every parameter{of}; nothing would '
                       'train.')
    return out

  return optax.multi_transform({'train': tx, 'frozen': optax.set_to_zero()}, labels)


def make_optimizer(opt_cfg: Any, num_steps: int) -> tuple[optax.GradientTransformation,
                                                           optax.Schedule]:
  """Returns (optax transformation, learning-rate schedule)."""
  name = opt_cfg.get('name', 'adamw')
  if name not in OPTIMIZERS:
    raise ValueError(f'optimizer.name={name!r} is unknown; use one of {OPTIMIZERS}.')
  schedule = make_schedule(opt_cfg, num_steps)
  b1, b2 = float(opt_cfg.get('b1', 0.9)), float(opt_cfg.get('b2', 0.999))
  eps = float(opt_cfg.get('eps', 1e-8))
  wd = float(opt_cfg.get('weight_decay', 0.0))
  if name == 'adam':
    base = optax.scale_by_adam(b1, b2, eps)
  elif name == 'adamw':
    base = optax.scale_by_adam(b1, b2, eps)
  elif name == 'adabelief':
    base = optax.scale_by_belief(b1, b2, eps=eps)
  else:
    base = optax.trace(decay=float(opt_cfg.get('momentum', 0.0)))
  parts = []
  clip = float(opt_cfg.get('grad_clip_norm', 0.0))
  if clip > 0:
    parts.append(optax.clip_by_global_norm(clip))
  parts.append(base)
  if wd > 0:
    if name == 'adam':
      raise ValueError('optimizer.name="adam" has no decoupled weight decay; '
                       'use name="adamw" (or set optimizer.weight_decay=0).')
    parts.append(optax.add_decayed_weights(wd, mask=decay_mask))
  parts.append(optax.scale_by_learning_rate(schedule))
  return optax.chain(*parts), schedule
