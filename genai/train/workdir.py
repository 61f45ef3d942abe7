"""What a workdir holds besides checkpoints: the config, and how to run or reload it.

Every experiment writes `config.json` into its workdir before training, so sampling,
evaluation and export commands need only `--workdir`. `run` is the one place that turns a
config's `train` block into `loop.train` arguments, for every model family. A run that fails
before its first step leaves the workdir as it found it: what it created there (config.json,
the tokenizer, model_config.json, an empty checkpoints/, the event file) is removed, and the
files it rewrote get their old contents back.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from genai import paths
from genai.parallel import distributed
from genai.parallel import mesh as mesh_lib
from genai.parallel import sharding
from genai.train import loop
from genai.train.checkpoints import Checkpointer


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  wd = paths.path(workdir)
  wd.mkdir(parents=True, exist_ok=True)
  (wd / 'config.json').write_text(config.to_json_best_effort(indent=2))


def fresh_workdir(config: ml_collections.ConfigDict, out_dir: str) -> str:
  """`<out_dir>/workdir` (a local folder), emptied, with `config` saved in it: the start
  of a benchmark's run, which must not resume an older one."""
  workdir = os.path.join(out_dir, 'workdir')
  shutil.rmtree(workdir, ignore_errors=True)
  save_config(config, workdir)
  return workdir


def load_config(workdir: str, experiment: str | None = None) -> ml_collections.ConfigDict:
  """The config a workdir was trained with; checks it belongs to `experiment`."""
  path = paths.path(workdir) / 'config.json'
  if not path.exists():
    raise FileNotFoundError(f'{path} not found: is {workdir!r} a genai workdir? Train first '
                            'with --config ... --workdir.')
  config = ml_collections.ConfigDict(json.loads(path.read_text()))
  found = config.get('experiment')
  if experiment is not None and found != experiment:
    raise ValueError(f'{workdir!r} was trained by experiments.{found}, not '
                     f'experiments.{experiment}; use python -m experiments.{found}.')
  return config


IMAGE_INFO = 'image_info.json'


def save_image_info(workdir: str, image_shape, value_range: str, num_classes: int = 0) -> None:
  """What an image family needs to rebuild its model for sampling without loading the data."""
  if jax.process_index() != 0:  # one host writes; the others computed the same
    return
  paths.write_json(paths.join(workdir, IMAGE_INFO),
                   {'image_shape': list(image_shape), 'num_classes': int(num_classes),
                    'value_range': value_range})


def load_image_info(workdir: str, experiment: str) -> dict[str, Any]:
  """{'image_shape', 'num_classes', 'value_range'} written by `save_image_info`."""
  path = paths.path(workdir) / IMAGE_INFO
  if not path.exists():
    raise FileNotFoundError(f'{path} not found: the run in {workdir!r} never built its task; '
                            f'train it first with experiments.{experiment}.')
  return json.loads(path.read_text())


def flat_hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Scalar config fields as {'a.b.c': value}, for the TensorBoard hparams plugin."""
  out = {}

  def walk(d, prefix):
    for k, v in d.items():
      if isinstance(v, dict):
        walk(v, f'{prefix}{k}.')
      elif isinstance(v, (int, float, str, bool)):
        out[f'{prefix}{k}'] = v

  walk(config.to_dict(), '')
  return out


class WorkdirSnapshot:
  """The top level of a workdir before a run, to undo what the run wrote there (`undo`):
  new entries are removed (the workdir itself, and the folders above it, if the run
  created them), and small files it rewrote (config.json, ...) get their contents back.
  Entries that existed stay, whatever happened inside them."""

  MAX_KEPT_BYTES = 16 << 20

  def __init__(self, workdir: str):
    self.workdir = paths.path(workdir)
    self.created = None  # the outermost folder that did not exist
    path = self.workdir
    # (On an object store a bucket's root always "exists"; folders exist once they hold
    # something.)
    while not path.exists() and path.parent != path:
      self.created, path = path, path.parent
    self.before: dict[str, bytes | None] = {}
    if self.created is None and self.workdir.is_dir():
      for p in self.workdir.iterdir():
        small = p.is_file() and p.stat().length <= self.MAX_KEPT_BYTES
        self.before[p.name] = _read_bytes(p) if small else None

  def undo(self) -> list[str]:
    """Restores the snapshot; returns what it removed or restored (names)."""
    if self.created is not None:
      _remove(self.created)
      return [os.fspath(self.created)]
    changed = []
    for p in sorted(self.workdir.iterdir()) if self.workdir.is_dir() else []:
      if p.name not in self.before:
        _remove(p)
        changed.append(p.name)
      elif self.before[p.name] is not None and _read_bytes(p) != self.before[p.name]:
        p.write_bytes(self.before[p.name])
        changed.append(p.name)
    return changed


def _remove(p) -> None:
  try:
    if p.is_dir() and not os.path.islink(os.fspath(p)):
      p.rmtree()
    elif p.exists():
      p.unlink()
  except OSError:
    pass


def _read_bytes(p) -> bytes | None:
  try:
    return p.read_bytes()
  except OSError:
    return None


def run(config: ml_collections.ConfigDict, workdir: str,
        build_task: Callable[[ml_collections.ConfigDict, str], loop.Task],
        print_fn: Callable[[str], None] = print) -> Any:
  """Starts the multi-host runtime if configured, builds the mesh, saves the config, builds
  the family's Task and trains it with `config.train` on that mesh. A failure before the
  first step undoes what this run wrote into `workdir` (WorkdirSnapshot)."""
  pc = config.get('parallel')
  distributed.initialize(pc)  # Before anything touches a device.
  mesh = mesh_lib.make_mesh(pc)
  tc = config.train
  snapshot = WorkdirSnapshot(workdir) if jax.process_index() == 0 else None
  started = False

  def first_step():
    nonlocal started
    started = True

  try:
    mesh_lib.local_batch_size(tc.batch_size, mesh)  # A clear error before any data loads.
    if jax.process_index() == 0:
      save_config(config, workdir)
      if mesh.size > 1:
        kind = mesh.devices.flat[0].platform.upper()
        axes = ' x '.join(f'{a}={n}' for a, n in mesh.shape.items() if n > 1)
        hint = ' (--config.parallel.cpu_devices=1 runs on one)' if kind == 'CPU' else ''
        print_fn(f'Mesh {axes} over {mesh.size} {kind} devices{hint}.')
    task = build_task(config, workdir)
    return loop.train(task, workdir=workdir, num_steps=tc.num_steps, seed=config.seed,
                      log_every=tc.log_every, eval_every=tc.eval_every,
                      checkpoint_every=tc.checkpoint_every, max_to_keep=tc.max_to_keep,
                      steps_per_call=tc.get('steps_per_call', 1),
                      hparams=flat_hparams(config), stop_after=tc.get('stop_after') or None,
                      mesh=mesh, rules=sharding.rules_from_config(pc), print_fn=print_fn,
                      peak_flops_per_device=float((pc or {}).get('peak_flops_per_device', 0.0)),
                      on_damaged_checkpoint=tc.get('on_damaged_checkpoint', 'fallback'),
                      on_first_step=first_step)
  except BaseException:
    if snapshot is not None and not started:
      snapshot.undo()
    raise


def newest_step(workdir: str) -> int:
  """The step of a workdir's newest checkpoint (read-only: safe beside a running job)."""
  ckpt = Checkpointer(paths.join(workdir, 'checkpoints'), asynchronous=False, read_only=True)
  try:
    step = ckpt.latest_step()
  finally:
    ckpt.close()
  if step is None:
    raise FileNotFoundError(f'No checkpoint in {workdir}/checkpoints yet; train first.')
  return step


def restore_params(workdir: str, step: int | None = None, *,
                   train_hint: str = 'train first.') -> tuple[Any, int]:
  """(params as numpy arrays, step) of the newest (or given) checkpoint, read without an
  abstract state (no optimizer to rebuild): for models loaded for inference only. With no
  checkpoint yet: FileNotFoundError ending in `train_hint`."""
  ckpt = Checkpointer(paths.join(workdir, 'checkpoints'), asynchronous=False,
                      read_only=True)
  try:
    step = ckpt.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'No checkpoint in {workdir}/checkpoints yet; {train_hint}')
    state, _ = ckpt.restore(step, None)
  finally:
    ckpt.close()
  return jax.tree.map(np.asarray, state['params']), int(step)


def restore_state(workdir: str, init_state: Callable[..., Any],
                  step: int | None = None, init_args: tuple = ()) -> tuple[Any, int]:
  """(state, step) of the newest (or given) checkpoint, shaped like `init_state(rng)`.

  Reads without initialising: the abstract state comes from `jax.eval_shape`. Safe to call
  while a training run writes to the same workdir (read-only manager).
  """
  ckpt = Checkpointer(paths.join(workdir, 'checkpoints'), asynchronous=False,
                      read_only=True)
  try:
    step = ckpt.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'No checkpoint in {workdir}/checkpoints yet; train first.')
    # Onto this process's devices, whatever topology wrote it (e.g. a GPU run read on CPU).
    abstract = sharding.abstract_state(init_state, mesh_lib.make_mesh(), sharding.DEFAULT_RULES,
                                       *init_args)
    state, _ = ckpt.restore(step, abstract)
  finally:
    ckpt.close()
  return state, step
