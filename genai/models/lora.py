"""LoRA adapters (Hu et al. 2021) for any flax.linen model, without touching its code.

Each targeted dense layer y = x W gets y = x W + (alpha / r) * dropout(x) A B with
A [in, r] (random) and B [r, out] (zeros, so training starts at the base model). The
adapters are a separate pytree {module path: {'a', 'b'}}; the base params are left as
they are (frozen: they get no optimizer state), and `merge` folds the adapters back into
the kernels for export.

How: `adapters(...)` is a context manager around `model.apply` that hooks
(genai/models/dense_hooks.py) every `nn.Dense`/`nn.DenseGeneral` whose module path (e.g.
'layer_3/attn/qkv') matches `targets` (a regex, `re.search`) and adds the low-rank
branch to its output. It is trace-time only: under jit and grad the adapters are ordinary
arguments, so the step stays pure.

`wrap(model, cfg)` is that model with the adapters as part of its params: its `apply` takes
`LoraParams(base, adapters)` where the model takes params (and plain params as the model
does), so a loss written against a model trains adapters unchanged: the trainable tree is
`adapters`, the frozen base rides along in `base`. Reading and writing adapter files is
genai/pretrained/adapters.py.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
import zlib
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from genai.models.dense_hooks import dense_hooks


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  rank: int = 8
  alpha: float = 16.0
  dropout: float = 0.0
  targets: str = r'attn/(qkv|out)$'   # regex over module paths such as 'layer_0/mlp/fc_in'

  @property
  def scale(self) -> float:
    return self.alpha / self.rank


def _kernels(params: Any) -> dict[str, np.ndarray | jax.Array]:
  """{module path: kernel} of every dense kernel (ndim >= 2, named 'kernel')."""
  out = {}
  for path, x in jax.tree_util.tree_leaves_with_path(nn.unbox(params)):
    keys = [getattr(k, 'key', str(k)) for k in path]
    if keys[-1] == 'kernel' and x.ndim >= 2:
      out['/'.join(keys[:-1])] = x
  return out


def targeted(params: Any, cfg: LoraConfig) -> dict[str, Any]:
  """The kernels LoRA adapts; a clear error if the regex matches none."""
  if cfg.rank < 1:
    raise ValueError(f'lora.rank={cfg.rank} must be >= 1.')
  kernels = _kernels(params)
  if any(k.startswith('layers/') for k in kernels):
    raise ValueError('LoRA needs model.scan_layers=False (per-layer module paths).')
  hit = {k: v for k, v in kernels.items() if re.search(cfg.targets, k)}
  if not hit:
    raise ValueError(f'lora.targets={cfg.targets!r} matches no dense layer; module paths '
                     f'look like {sorted(kernels)[:4]}.')
  return hit


def init(params: Any, cfg: LoraConfig, rng: jax.Array) -> dict[str, dict[str, jax.Array]]:
  """Adapters for every targeted kernel: A ~ N(0, 1/in), B = 0."""
  out = {}
  for i, (path, w) in enumerate(sorted(targeted(params, cfg).items())):
    d_in, d_out = w.shape[0], math.prod(w.shape[1:])
    a = jax.random.normal(jax.random.fold_in(rng, i), (d_in, cfg.rank)) / math.sqrt(d_in)
    out[path] = {'a': a, 'b': jnp.zeros((cfg.rank, d_out), jnp.float32)}
  return out


def num_params(lora: Any) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(lora))


def adapters(lora: dict[str, dict[str, jax.Array]], cfg: LoraConfig,
             rng: jax.Array | None = None, deterministic: bool = True):
  """Within this block, `model.apply` adds the LoRA branches of `lora` (a context manager)."""

  def branch(key, mod, x, call):
    del mod
    y = call()
    if cfg.dropout and not deterministic and rng is not None:
      keep = jax.random.bernoulli(jax.random.fold_in(rng, zlib.crc32(key.encode())),
                                  1.0 - cfg.dropout, x.shape)
      x = jnp.where(keep, x / (1.0 - cfg.dropout), 0.0).astype(x.dtype)
    a, b = lora[key]['a'].astype(x.dtype), lora[key]['b'].astype(x.dtype)
    delta = (x @ a) @ b * jnp.asarray(cfg.scale, x.dtype)
    return y + delta.reshape(y.shape).astype(y.dtype)

  return dense_hooks({key: functools.partial(branch, key) for key in lora})


def merge(params: Any, lora: dict[str, dict[str, Any]], cfg: LoraConfig) -> Any:
  """Base params with every adapter folded in: W + (alpha / r) A B (jit-able)."""

  def walk(tree, prefix):
    out = {}
    for k, v in tree.items():
      path = f'{prefix}/{k}' if prefix else k
      if isinstance(v, dict):
        out[k] = walk(v, path)
      elif k == 'kernel' and prefix in lora:
        ab = jnp.asarray(lora[prefix]['a']) @ jnp.asarray(lora[prefix]['b'])
        out[k] = v + (cfg.scale * ab).reshape(v.shape).astype(v.dtype)
      else:
        out[k] = v
    return out

  return walk(nn.unbox(params), '')


class LoraParams(NamedTuple):
  """What a `wrap`ped model takes as params: the frozen base and the adapters over it."""
  base: Any
  adapters: dict[str, dict[str, jax.Array]]


@dataclasses.dataclass(frozen=True)
class LoraModel:
  """`model` whose `apply` adds the adapters of `LoraParams` params (see `wrap`)."""
  model: Any
  cfg: LoraConfig

  def apply(self, variables, *args, rngs=None, **kwargs):
    params = variables['params']
    if not isinstance(params, LoraParams):
      return self.model.apply(variables, *args, rngs=rngs, **kwargs)
    rng = (rngs or {}).get('dropout')  # adapter dropout follows the model's dropout
    with adapters(params.adapters, self.cfg, rng, deterministic=rng is None):
      return self.model.apply({**variables, 'params': params.base}, *args, rngs=rngs, **kwargs)

  def __getattr__(self, name):  # config, init, ... of the wrapped model
    if name.startswith('__') or name in ('model', 'cfg'):
      raise AttributeError(name)
    return getattr(self.model, name)


def wrap(model: Any, cfg: LoraConfig) -> LoraModel:
  """`model` taking `LoraParams(base, adapters)` as params (plain params: the model alone)."""
  return LoraModel(model, cfg)
