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
