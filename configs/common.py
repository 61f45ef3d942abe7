"""Parsing of the `:arg` string on a config path, e.g. `configs/lm/x.py:runlocal,size=small`."""
from __future__ import annotations

import ml_collections


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """'a=1,flag,b=x' -> ConfigDict with the types of `defaults` (bare words mean True)."""
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, sep, value = item.partition('=')
    if key not in defaults:
      raise ValueError(f'Unknown config arg {key!r}; known: {sorted(defaults)}.')
    kind = type(defaults[key])
    if not sep:
      if kind is not bool:
        raise ValueError(f'Config arg {key!r} needs a value: {key}=...')
      out[key] = True
    elif kind is bool:
      out[key] = value.lower() in ('1', 'true', 'yes')
    else:
      out[key] = kind(value)
  return out


def _block(defaults: dict, overrides: dict) -> ml_collections.ConfigDict:
  block = ml_collections.ConfigDict(defaults)
  for key, value in overrides.items():
    block[key] = value
  return block


def optimizer_config(**overrides) -> ml_collections.ConfigDict:
  """The `optimizer` block read by genai/train/optimizers.make_optimizer (defaults + overrides).

  name: 'adam' | 'adamw' | 'adabelief' | 'sgd' (momentum: sgd's heavy-ball decay, 0 = plain
  SGD); weight_decay is decoupled and applied to
  matrices only; grad_clip_norm 0 = off; schedule: 'constant' | 'cosine' | 'linear' (after
  `warmup_steps` of linear warmup, decaying to end_learning_rate at train.num_steps).
  """
  return _block(dict(name='adamw', learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8,
                     momentum=0.0, weight_decay=0.0, grad_clip_norm=0.0, schedule='cosine',
                     warmup_steps=0, end_learning_rate=0.0), overrides)


def train_config(**overrides) -> ml_collections.ConfigDict:
  """The `train` block read by the shared loop (genai/train/loop.py); families add their own
  keys through overrides (e.g. LM grad_accum_steps, GAN n_critic).

  steps_per_call: train steps per jitted call (an unrolled lax.scan; 1 = plain). stop_after
  > 0 stops after that many steps (pre-emption drills). on_damaged_checkpoint: 'fallback'
  (resume from the newest intact checkpoint, moving damaged newer ones aside to
  <step>.damaged) or 'fail' (refuse, naming the step and the command that would resume).
  """
  return _block(dict(batch_size=64, num_steps=1000, steps_per_call=1, log_every=100,
                     eval_every=1000, checkpoint_every=1000, max_to_keep=3, stop_after=0,
                     on_damaged_checkpoint='fallback'),
                overrides)


def parallel_config(**overrides) -> ml_collections.ConfigDict:
  """The `parallel` block read by genai/parallel (mesh, sharding rules, multi-host start-up).

  data/fsdp/tensor: mesh axis sizes; -1 = every device the others leave (default: pure
  data parallelism). The global `train.batch_size` is split over data x fsdp. num_devices
  0 = all. rules: extra (logical axis, mesh axes) pairs that take priority over
  genai/parallel/sharding.DEFAULT_RULES. distributed: 'auto' | 'on' | 'off' (see
  genai/parallel/distributed.py); coordinator_address/num_processes/process_id only where
  no cluster sets them. peak_flops_per_device: for MFU (0 = the table for known GPUs/TPUs).
  cpu_devices: XLA devices a CPU-only host is split into, set by the command before JAX
  starts (genai/parallel/cpu_devices.py): 1 = plain JAX's one device (default), 0 = auto,
  one per core (at most 8) that divides train.batch_size (the diffusion configs), n = n.
  """
  return _block(dict(data=-1, fsdp=1, tensor=1, num_devices=0, cpu_devices=1, rules=(),
                     distributed='auto',
                     coordinator_address='', num_processes=0, process_id=-1,
                     cpu_collectives='gloo', peak_flops_per_device=0.0), overrides)
