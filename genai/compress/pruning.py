"""Unstructured pruning: magnitude masks (global or per layer), N:M sparsity, and gradual
pruning as an optax transformation.

Masks are boolean pytrees shaped like the params (True = keep). Only *targeted* leaves are
pruned: dense kernels (leaves named 'kernel' with ndim >= 2) whose path matches `targets`
(`re.search` over paths such as 'layer_0/mlp/fc_in/kernel'); everything else keeps a
full mask.

  tx = optax.chain(make_optimizer(...), prune(PruneConfig(kind='magnitude', sparsity=0.5,
                                                          begin_step=0, end_step=1000)))
`prune` raises the sparsity along Zhu & Gupta's cubic schedule from `begin_step` to
`end_step` (begin == end: one shot), recomputes the mask from the current weights every
`every` steps, and rewrites the update of every pruned weight to `-w`, so after the update
the weight is exactly 0 and stays 0 (its later updates are masked too).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from genai.train.optimizers import param_path

KINDS = ('magnitude', 'nm')


@dataclasses.dataclass(frozen=True)
class PruneConfig:
  kind: str = 'magnitude'        # 'magnitude' (unstructured) | 'nm' (N of every M inputs)
  sparsity: float = 0.5          # final fraction of zeros (magnitude); nm: 1 - n/m
  scope: str = 'global'          # magnitude: 'global' threshold or per 'layer'
  n: int = 2
  m: int = 4
  begin_step: int = 0
  end_step: int | None = None    # None or == begin_step: one shot at begin_step
  every: int = 100               # mask refresh interval while the sparsity ramps
  power: float = 3.0
  targets: str = r'kernel$'

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f'prune.kind={self.kind!r} is unknown; use one of {KINDS}.')
    if not 0.0 <= self.sparsity < 1.0:
      raise ValueError(f'prune.sparsity={self.sparsity} must be in [0, 1).')
    if self.scope not in ('global', 'layer'):
      raise ValueError(f"prune.scope={self.scope!r}: use 'global' or 'layer'.")
    if self.kind == 'nm' and not 0 < self.n < self.m:
      raise ValueError(f'prune.n={self.n}, prune.m={self.m}: need 0 < n < m (e.g. 2:4).')
    if self.end_step is None:
      object.__setattr__(self, 'end_step', self.begin_step)
    if self.end_step < self.begin_step or self.every < 1:
      raise ValueError('prune.end_step must be >= prune.begin_step and prune.every >= 1.')


def targeted(params: Any, targets: str) -> Any:
  """Bool pytree: which leaves are pruned (dense kernels matching `targets`)."""
  regex = re.compile(targets)
  out = jax.tree_util.tree_map_with_path(
      lambda p, x: bool(x.ndim >= 2 and param_path(p).endswith('kernel')
                       and regex.search(param_path(p))),
      params)
  if not any(jax.tree.leaves(out)):
    raise ValueError(f'prune.targets={targets!r} matches no dense kernel.')
  return out


def polynomial_sparsity(step, final: float, begin: int, end: int, initial: float = 0.0,
                        power: float = 3.0):
  """Zhu & Gupta (2017): s_t = s_f + (s_i - s_f) (1 - (t - t0) / (t1 - t0))^power."""
  if end == begin:
    return jnp.where(step >= begin, final, initial)
  frac = jnp.clip((step - begin) / (end - begin), 0.0, 1.0)
  return final + (initial - final) * (1.0 - frac) ** power


def magnitude_masks(params: Any, sparsity, targets: str = r'kernel$', scope: str = 'global'
                    ) -> Any:
  """Keep the largest-|w| fraction 1 - sparsity of the targeted weights (jit-able; ties at
  the threshold are kept)."""
  which = targeted(params, targets)
  leaves, tree = jax.tree.flatten(params)
  flags = jax.tree.leaves(which)
  if scope == 'global':
    allw = jnp.concatenate([jnp.abs(x).ravel() for x, f in zip(leaves, flags) if f])
    k = jnp.clip(jnp.floor(sparsity * allw.size).astype(jnp.int32), 0, allw.size - 1)
    thresh = jnp.sort(allw)[k]
    keep = jnp.where(k > 0, thresh, -1.0)
    masks = [jnp.abs(x) >= keep if f else jnp.ones(x.shape, bool) for x, f in zip(leaves, flags)]
  else:
    masks = []
    for x, f in zip(leaves, flags):
      if not f:
        masks.append(jnp.ones(x.shape, bool))
        continue
      a = jnp.abs(x).ravel()
      k = jnp.clip(jnp.floor(sparsity * a.size).astype(jnp.int32), 0, a.size - 1)
      masks.append(jnp.abs(x) >= jnp.where(k > 0, jnp.sort(a)[k], -1.0))
  return jax.tree.unflatten(tree, masks)


def nm_masks(params: Any, n: int = 2, m: int = 4, targets: str = r'kernel$') -> Any:
  """N:M sparsity along the input axis: in every group of m consecutive input rows, each
  output column keeps its n largest-|w| weights (the layout sparse tensor cores use)."""
  which = targeted(params, targets)

  def one(x, f):
    if not f:
      return jnp.ones(x.shape, bool)
    if x.shape[0] % m:
      raise ValueError(f'N:M needs the input dimension ({x.shape[0]}) to divide by m={m}.')
    g = jnp.abs(x).reshape(x.shape[0] // m, m, -1)
    rank = jnp.argsort(jnp.argsort(-g, axis=1), axis=1)  # 0 = largest in its group
    return (rank < n).reshape(x.shape)

  return jax.tree.map(one, params, which)


def sparsity_of(params: Any, targets: str = r'kernel$') -> float:
  """Fraction of exact zeros among the targeted weights."""
  which = jax.tree.leaves(targeted(params, targets))
  xs = [x for x, f in zip(jax.tree.leaves(params), which) if f]
  return float(sum(jnp.sum(x == 0) for x in xs) / sum(x.size for x in xs))


class PruneState(NamedTuple):
  count: jax.Array
  mask: Any


def prune(cfg: PruneConfig) -> optax.GradientTransformation:
  """An optax transformation (last in the chain) that prunes on `cfg`'s schedule."""

  def compute(params, step):
    if cfg.kind == 'nm':
      dense = nm_masks(params, cfg.n, cfg.m, cfg.targets)
      full = jax.tree.map(lambda x: jnp.ones(x.shape, bool), params)
      return jax.tree.map(lambda d, f: jnp.where(step >= cfg.begin_step, d, f), dense, full)
    s = polynomial_sparsity(step, cfg.sparsity, cfg.begin_step, cfg.end_step, power=cfg.power)
    return magnitude_masks(params, s, cfg.targets, cfg.scope)

  def init(params):
    return PruneState(jnp.zeros((), jnp.int32),
                      jax.tree.map(lambda x: jnp.ones(x.shape, bool), params))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError('prune needs params: call tx.update(grads, state, params).')
    step = state.count
    if cfg.kind == 'nm':
      refresh = step == cfg.begin_step
    else:  # every `every` steps while the sparsity ramps, and at its end
      refresh = (step >= cfg.begin_step) & (step <= cfg.end_step) & (
          ((step - cfg.begin_step) % cfg.every == 0) | (step == cfg.end_step))
    mask = jax.lax.cond(refresh, lambda: compute(params, step), lambda: state.mask)
    mask = jax.tree.map(lambda new, old: new & old, mask, state.mask)  # pruned stays pruned
    updates = jax.tree.map(lambda u, p, k: jnp.where(k, u, -p).astype(u.dtype),
                           updates, params, mask)
    return updates, PruneState(step + 1, mask)

  return optax.GradientTransformation(init, update)
