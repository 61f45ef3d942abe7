"""Transfer learning for the image families: start a run from another workdir's weights.

`model.init_from='workdir:DIR'` in a VAE, GAN, diffusion (UNet or DiT) or classifier config
starts a fresh run from the newest checkpoint of DIR, a workdir of the same family. The
source's params are merged into the freshly initialised ones, leaf by leaf (matched by their
path, e.g. 'down_0/res_0/conv_1/kernel'):

  - same path and shape: copied ('loaded');
  - a class-indexed table of another class count (a class-conditional model extended to new
    classes, a classifier head over more or fewer classes): the rows (or columns) of the
    classes both have are copied, the new classes keep their fresh init, and the extra rows
    after the classes (the "no label" row of classifier-free guidance) are copied onto the
    target's extra rows ('extended');
  - anything else (a leaf the source lacks, or a size-dependent leaf such as the dense layer
    after a flatten when the image size differs): the fresh init ('re-initialised').

Size-independent weights (conv kernels, the DiT's blocks: its position embedding is a fixed
sin-cos table) are copied across image sizes. The merge runs inside the loop's jitted init
(the source arrays are `init_args`, never baked in as constants) and only on a fresh start: a
resumed run restores its own checkpoint. What was loaded, extended, re-initialised and frozen
is printed, with parameter counts, and written to `<workdir>/init_from.json`.

Also here, for the image families: `optimizer` (train.freeze patterns, and the frozen base of
LoRA), and LoRA on the DiT's dense and attention layers (`lora_model`, `merged_params`): the
adapters live in the params as {'base': backbone params, 'lora': adapters}, the base behind a
stop_gradient (its gradients are exactly zero) and frozen in the optimizer, except the base
parameters `lora.train` names (default: the class table, so that new classes can learn).
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from genai import errors
from genai import paths
from genai.models import lora as lora_lib
from genai.train import optimizers
from genai.train import workdir as workdir_lib
from genai.train.checkpoints import Checkpointer

PREFIX = 'workdir:'
REPORT_FILE = 'init_from.json'
# Where each image family keeps its num_classes (besides config.json).
INFO_FILES = ('image_info.json', 'classifier_info.json')

# The state entries each image family starts from a source (target entry -> source entry).
# Diffusion starts both its params and their EMA from the source's EMA weights (the ones
# it samples with).
ENTRIES = {
    'vae': {'params': 'params'},
    'classifier': {'params': 'params'},
    'diffusion': {'params': 'ema_params', 'ema_params': 'ema_params'},
    'gan': {'g_params': 'g_params', 'd_params': 'd_params', 'ema_params': 'ema_params',
            'g_batch_stats': 'g_batch_stats', 'd_spectral': 'd_spectral'},
}
# The trainable trees of each family and the prefix their paths get in train.freeze.
TRAINABLE = {'vae': {'params': ''}, 'classifier': {'params': ''}, 'diffusion': {'params': ''},
             'gan': {'g_params': 'generator/', 'd_params': 'discriminator/'}}


# =========================== Paths of a params tree ====================================

def flat(tree: Any) -> dict[str, Any]:
  """{'a/b/kernel': leaf} of a params tree (dicts; flax boxes unwrapped)."""
  return {optimizers.param_path(p): x for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def _size(shape) -> int:
  return int(np.prod(shape, dtype=np.int64))


# =========================== The plan: what each leaf gets =============================

@dataclasses.dataclass(frozen=True)
class LeafPlan:
  path: str
  action: str                    # 'copy' | 'extend' | 'init'
  shape: tuple[int, ...]
  source_shape: tuple[int, ...] | None = None
  axis: int = -1                 # extend: the class axis
  classes: tuple[int, int] = (0, 0)  # extend: (source, target) class counts
  extra: int = 0                 # extend: rows after the classes ("no label")

  @property
  def size(self) -> int:
    return _size(self.shape)

  def copied(self) -> int:
    """Parameters of this leaf that come from the source."""
    if self.action == 'copy':
      return self.size
    if self.action == 'extend':
      per_row = self.size // self.shape[self.axis]
      return per_row * (min(self.classes) + self.extra)
    return 0


def _class_axis(src: tuple[int, ...], dst: tuple[int, ...], src_classes: int,
                dst_classes: int) -> tuple[int, int] | None:
  """(axis, extra) when `src` and `dst` differ only in one axis that indexes the classes
  (size = class count + extra, extra in {0, 1}, the same in both); None otherwise."""
  if len(src) != len(dst) or not src_classes or not dst_classes or src_classes == dst_classes:
    return None
  diff = [i for i, (a, b) in enumerate(zip(src, dst)) if a != b]
  if len(diff) != 1:
    return None
  axis = diff[0]
  extra = src[axis] - src_classes
  if extra in (0, 1) and dst[axis] - dst_classes == extra:
    return axis, extra
  return None


def plan_tree(target: Any, source: dict[str, Any] | None, *, source_classes: int = 0,
              target_classes: int = 0) -> list[LeafPlan]:
  """What each leaf of `target` (arrays or ShapeDtypeStructs) gets from the flat `source`
  ({path: array}, None = nothing)."""
  source = source or {}
  out = []
  for path, leaf in flat(target).items():
    shape = tuple(leaf.shape)
    src = source.get(path)
    if src is None:
      out.append(LeafPlan(path, 'init', shape))
      continue
    s_shape = tuple(np.shape(src))
    if s_shape == shape:
      out.append(LeafPlan(path, 'copy', shape, s_shape))
      continue
    found = _class_axis(s_shape, shape, source_classes, target_classes)
    if found is None:
      out.append(LeafPlan(path, 'init', shape, s_shape))
    else:
      out.append(LeafPlan(path, 'extend', shape, s_shape, found[0],
                          (source_classes, target_classes), found[1]))
  return out


def _extend(fresh: jax.Array, src: jax.Array, p: LeafPlan) -> jax.Array:
  """`fresh` with the shared class rows of `src` and its extra rows copied in."""
  n = min(p.classes)
  idx = [slice(None)] * fresh.ndim
  idx[p.axis] = slice(0, n)
  fresh = jnp.asarray(fresh)
  out = fresh.at[tuple(idx)].set(src[tuple(idx)].astype(fresh.dtype))
  if p.extra:
    s_idx, d_idx = list(idx), list(idx)
    s_idx[p.axis] = slice(p.classes[0], p.classes[0] + p.extra)
    d_idx[p.axis] = slice(p.classes[1], p.classes[1] + p.extra)
    out = out.at[tuple(d_idx)].set(src[tuple(s_idx)].astype(fresh.dtype))
  return out


def merge(plan: list[LeafPlan], fresh: Any, source: dict[str, Any]) -> Any:
  """`fresh` with the source leaves the plan loads (jit-able: the plan is static).
  `source` needs only the leaves the plan copies or extends (`needed`)."""
  by_path = {p.path: p for p in plan}

  def leaf(path, x):
    p = by_path[optimizers.param_path(path)]
    if p.action == 'copy':
      return jnp.asarray(source[p.path]).astype(x.dtype)
    if p.action == 'extend':
      return _extend(x, jnp.asarray(source[p.path]), p)
    return x

  return jax.tree_util.tree_map_with_path(leaf, fresh)


def needed(plan: list[LeafPlan], source: dict[str, Any]) -> dict[str, np.ndarray]:
  """The source leaves `merge` reads (only these travel into the jitted init)."""
  return {p.path: np.asarray(source[p.path]) for p in plan if p.action != 'init'}


# =========================== The report ================================================

def entry_report(plan: list[LeafPlan]) -> dict[str, Any]:
  """Counts (leaves and parameters) of what an entry's plan loads, extends, re-initialises."""
  rep = {'parameters': sum(p.size for p in plan),
         'loaded_parameters': sum(p.copied() for p in plan)}
  for action, name in (('copy', 'loaded'), ('extend', 'extended'), ('init', 're_initialised')):
    leaves = [p for p in plan if p.action == action]
    rep[name] = len(leaves)
    if action != 'copy':
      rep[f'{name}_paths'] = [
          p.path + ('' if p.source_shape is None or action == 'extend'
                    else f' {list(p.source_shape)}->{list(p.shape)}')
          + (f' (classes {p.classes[0]}->{p.classes[1]})' if action == 'extend' else '')
          for p in leaves]
  return rep


def count_frozen(config: ml_collections.ConfigDict, family: str, abstract: Any) -> dict[str, int]:
  """{'trainable': n, 'frozen': n, 'pattern'} parameters of the family's trainable trees under
  train.freeze (and LoRA: the base frozen, the adapters trainable)."""
  pattern = freeze_pattern(config)
  regex = re.compile(pattern) if pattern else None
  out = {'trainable': 0, 'frozen': 0, 'pattern': pattern}
  for entry, prefix in TRAINABLE.get(family, {}).items():
    if entry not in abstract:
      continue
    for path, leaf in flat(abstract[entry]).items():
      frozen = bool(regex and regex.search(prefix + path))
      out['frozen' if frozen else 'trainable'] += _size(leaf.shape)
  return out


def format_report(report: dict[str, Any]) -> str:
  """The lines a run prints."""
  classes = (f", {report['source_classes']} -> {report['target_classes']} classes"
             if report['source_classes'] or report['target_classes'] else '')
  lines = [f"model.init_from={report['source']!r} ({report['family']}, step "
           f"{report['step']}{classes}; used on a fresh start only):"]
  for entry, r in report['entries'].items():
    line = (f"  {entry}: {r['loaded']} leaves loaded, {r['extended']} extended, "
            f"{r['re_initialised']} re-initialised; {r['loaded_parameters']:,} of "
            f"{r['parameters']:,} parameters from the source")
    for key in ('extended_paths', 're_initialised_paths'):
      if r.get(key):
        shown = r[key][:6]
        more = f' (+{len(r[key]) - 6} more)' if len(r[key]) > 6 else ''
        line += f"\n    {key.split('_paths')[0].replace('_', '-')}: {', '.join(shown)}{more}"
    lines.append(line)
  f = report['freeze']
  none = (f" (train.freeze={f['pattern']!r} matches no parameter)"
          if f.get('pattern') and not f['frozen'] else '')
  lines.append(f"  frozen: {f['frozen']:,} parameters{none}, trainable: {f['trainable']:,}")
  return '\n'.join(lines)


# =========================== Reading the source ========================================

def source_dir(spec: str) -> str:
  if not spec.startswith(PREFIX) or not spec[len(PREFIX):]:
    raise errors.UserError(f'model.init_from={spec!r} is not a source an image family reads',
                           "give another workdir of the same family: 'workdir:DIR'")
  return spec[len(PREFIX):]


def num_classes_of(workdir: str) -> int:
  for name in INFO_FILES:
    path = paths.path(workdir) / name
    if path.exists():
      return int(json.loads(path.read_text()).get('num_classes', 0))
  return 0


def _restore_raw(workdir: str) -> tuple[dict[str, Any], int]:
  ckpt = Checkpointer(paths.join(workdir, 'checkpoints'), asynchronous=False, read_only=True)
  try:
    step = ckpt.latest_step()
    if step is None:
      raise FileNotFoundError(f'model.init_from: no checkpoint in {workdir}/checkpoints; '
                              'train that workdir first (or fix the path).')
    state, _ = ckpt.restore(step, None)
  finally:
    ckpt.close()
  return state, int(step)


def load_source(spec: str, family: str) -> tuple[ml_collections.ConfigDict, dict[str, Any],
                                                  int, int]:
  """(source config, {source entry: flat {path: numpy}}, step, num_classes) of
  'workdir:DIR', checked to be a workdir of `family`. A LoRA source is merged first."""
  wd = source_dir(spec)
  if not (paths.path(wd) / 'config.json').exists():
    raise FileNotFoundError(f'model.init_from={spec!r}: {wd} has no config.json; give a '
                            f'workdir trained by experiments.{family}.')
  config = workdir_lib.load_config(wd)
  found = config.get('experiment') or 'lm'
  if found != family:
    raise errors.UserError(
        f'model.init_from={spec!r} was trained by experiments.{found}, not '
        f'experiments.{family}', f'start a {family} run from a {family} workdir')
  state, step = _restore_raw(wd)
  lcfg = lora_config(config)
  entries = {}
  for key, tree in state.items():
    if not isinstance(tree, dict) or key in ('opt_state', 'g_opt', 'd_opt'):
      continue
    if lcfg is not None and set(tree) == {'base', 'lora'}:
      tree = lora_lib.merge(tree['base'], tree['lora'], lcfg)
    entries[key] = {k: np.asarray(v) for k, v in flat(tree).items()}
  return config, entries, step, num_classes_of(wd)


# =========================== The hook the experiments call =============================

def init_from(config: ml_collections.ConfigDict, family: str, init_state: Callable[..., Any],
              init_args: tuple = (), *, num_classes: int = 0, workdir: str | None = None,
              print_fn: Callable[[str], None] = print) -> tuple[Callable[..., Any], tuple]:
  """(init_state, init_args) of a run that starts from `model.init_from` (unchanged when it
  is ''): the new init_state takes the source leaves as its last argument and returns the
  family's state with them merged in (`ENTRIES`). Prints the report and writes it to
  `<workdir>/init_from.json`."""
  spec = (config.model.get('init_from') or '') if config.get('model') else ''
  if not spec:
    return init_state, init_args
  _, source, step, source_classes = load_source(spec, family)
  abstract = jax.eval_shape(init_state, jax.random.key(0), *init_args)
  lora = lora_config(config)
  plans, args, entries = {}, {}, {}
  for entry, src_entry in ENTRIES[family].items():
    if entry not in abstract:
      continue
    target = abstract[entry]
    if lora is not None and isinstance(target, dict) and set(target) == {'base', 'lora'}:
      target = target['base']
    plans[entry] = plan_tree(target, source.get(src_entry), source_classes=source_classes,
                             target_classes=num_classes)
    args[entry] = needed(plans[entry], source.get(src_entry) or {})
    entries[entry] = entry_report(plans[entry])
  report = {'source': spec, 'family': family, 'step': step, 'source_classes': source_classes,
            'target_classes': int(num_classes), 'entries': entries,
            'freeze': count_frozen(config, family, abstract)}
  if jax.process_index() == 0:
    print_fn(format_report(report))
    if workdir is not None:
      paths.write_json(paths.join(workdir, REPORT_FILE), report, indent=1)

  def start(rng, *a):
    *orig, src = a
    state = init_state(rng, *orig)
    state = dict(state)
    for entry, plan in plans.items():
      tree = state[entry]
      if lora is not None and isinstance(tree, dict) and set(tree) == {'base', 'lora'}:
        state[entry] = {**tree, 'base': merge(plan, tree['base'], src[entry])}
      else:
        state[entry] = merge(plan, tree, src[entry])
    return state

  return start, (*init_args, args)


# =========================== Freezing and LoRA =========================================

def lora_trained(config: ml_collections.ConfigDict) -> str:
  """lora.train: a regex over base parameter paths that keep training under LoRA (e.g. the
  class table, whose new classes would otherwise stay at their random init); '' = none."""
  return str((config.get('lora') or {}).get('train') or '')


def lora_config(config: ml_collections.ConfigDict) -> lora_lib.LoraConfig | None:
  """The `lora` block of an image config (None when absent or rank 0)."""
  lc = config.get('lora')
  if not lc or not lc.get('rank'):
    return None
  return lora_lib.LoraConfig(rank=int(lc.rank), alpha=float(lc.get('alpha', 16.0)),
                             dropout=float(lc.get('dropout', 0.0)), targets=str(lc.targets))


def freeze_pattern(config: ml_collections.ConfigDict) -> str:
  """train.freeze, with LoRA's frozen base ('^base/') added when the run has adapters."""
  pattern = (config.get('train') or {}).get('freeze') or ''
  if lora_config(config) is None:
    return pattern
  keep = lora_trained(config)
  base = f'^base/(?!.*(?:{keep}))' if keep else '^base/'
  return base + (f'|(?:{pattern})' if pattern else '')


def optimizer(config: ml_collections.ConfigDict, tx: optax.GradientTransformation,
              prefix: str = '') -> optax.GradientTransformation:
  """`tx` with train.freeze (and LoRA's base) frozen: zero updates and no optimizer state.
  `prefix` is put before the paths the pattern sees (the GAN's 'generator/', ...)."""
  pattern = freeze_pattern(config)
  return optimizers.freeze(tx, pattern, prefix) if pattern else tx


@dataclasses.dataclass(frozen=True)
class LoraBackbone:
  """A backbone with LoRA adapters in its params: {'base': its params, 'lora': adapters}.

  `init` gives both (the adapters' B = 0, so the start is the base model); `apply` runs the
  backbone with the adapters added to the targeted dense layers and the base behind a
  stop_gradient. Plain params (no 'lora') run the backbone alone."""
  model: Any
  cfg: lora_lib.LoraConfig
  train: str = ''  # base parameters that keep their gradients (lora.train)

  def init(self, rngs, *args, **kwargs):
    variables = dict(self.model.init(rngs, *args, **kwargs))
    key = rngs['params'] if isinstance(rngs, dict) else rngs
    base = variables['params']
    variables['params'] = {'base': base,
                           'lora': lora_lib.init(base, self.cfg, jax.random.fold_in(key, 1))}
    return variables

  def apply(self, variables, *args, **kwargs):
    params = variables['params']
    if not (isinstance(params, dict) and set(params) == {'base', 'lora'}):
      return self.model.apply(variables, *args, **kwargs)
    keep = re.compile(self.train) if self.train else None
    base = jax.tree_util.tree_map_with_path(
        lambda p, v: v if keep and keep.search(optimizers.param_path(p))
        else jax.lax.stop_gradient(v), params['base'])
    lp = lora_lib.LoraParams(base, params['lora'])
    return lora_lib.wrap(self.model, self.cfg).apply({**variables, 'params': lp}, *args,
                                                     **kwargs)

  def __getattr__(self, name):  # fields of the wrapped backbone
    if name.startswith('__') or name in ('model', 'cfg'):
      raise AttributeError(name)
    return getattr(self.model, name)


def lora_model(config: ml_collections.ConfigDict, model: Any) -> Any:
  """`model` with LoRA adapters when config.lora.rank > 0 (else `model` itself)."""
  lcfg = lora_config(config)
  return model if lcfg is None else LoraBackbone(model, lcfg, lora_trained(config))


def merged_params(config: ml_collections.ConfigDict, params: Any) -> Any:
  """Plain backbone params: a LoRA run's adapters folded into its base (else `params`)."""
  lcfg = lora_config(config)
  if lcfg is None or not (isinstance(params, dict) and set(params) == {'base', 'lora'}):
    return params
  return jax.jit(lambda b, a: lora_lib.merge(b, a, lcfg))(params['base'], params['lora'])
