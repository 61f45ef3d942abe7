"""Orbax checkpoints of the training state together with the data-iterator state.

Each checkpoint is one orbax step directory holding two items: `state` (any pytree of
arrays: params, optimizer states, EMA...) and `data` (the grain iterator state, JSON).
Orbax writes into a temporary directory and renames it when complete, so a run killed
mid-save never leaves a half-written checkpoint that looks valid.

A checkpoint damaged afterwards (a truncated or missing array file, a missing `_METADATA`
or `manifest.ocdbt`: a disk, a copy or a hand gone wrong) is named by its step and what is
wrong with it (`DamagedCheckpointError`), instead of orbax's and TensorStore's errors. A
resuming run (`restore_newest`) then either falls back to the newest intact step, moving
the damaged ones aside to `<step>.damaged` (nothing is deleted), or refuses with the
command that would: `train.on_damaged_checkpoint` ('fallback', the default, or 'fail').
A checkpoint that is intact but does not fit the run's state (another model config) is a
`CheckpointError`, never moved.
"""
from __future__ import annotations

import gc
import json
import logging
import re
import sys
import warnings
from typing import Any, Callable

from absl import logging as absl_logging
import orbax.checkpoint as ocp

from genai import errors
from genai import paths

ON_DAMAGED = ('fallback', 'fail')
DAMAGED_SUFFIX = '.damaged'


class Checkpointer:
  """A thin wrapper over `ocp.CheckpointManager` with the two items genai saves."""

  def __init__(self, directory: str, *, max_to_keep: int = 3, asynchronous: bool = True,
               read_only: bool = False):
    """`read_only`: for readers (sampling, evaluation) beside a run that may be writing:
    they must not clean up the writer's in-progress temporary directories."""
    self.directory = paths.join(directory)  # absolute, or a URI (gs://...)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else max_to_keep, create=not read_only,
        cleanup_tmp_directories=not read_only, enable_async_checkpointing=asynchronous,
        read_only=read_only, save_interval_steps=0 if read_only else 1)
    verbosity = absl_logging.get_verbosity()
    if read_only:  # orbax warns that a read-only manager is read-only, on every command
      absl_logging.set_verbosity(min(verbosity, absl_logging.ERROR))
    try:
      self._manager = ocp.CheckpointManager(self.directory, options=options)
    finally:
      absl_logging.set_verbosity(verbosity)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, data_state: dict | None = None) -> None:
    items = {'state': ocp.args.StandardSave(state)}
    if data_state is not None:
      items['data'] = ocp.args.JsonSave(data_state)
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict | None]:
    """Restores `state` with the structure/dtypes/shardings of `abstract_state` (None: as
    saved). A damaged step raises DamagedCheckpointError, one that does not fit
    `abstract_state` CheckpointError; both name the step. So does a step that was never
    saved (or was pruned), with the steps there are."""
    if not (paths.path(self.directory) / str(step)).exists():
      steps = sorted(self.all_steps())
      if step not in steps:
        there = (f'its steps are {_steps_text(steps)}' if steps else 'it holds none')
        raise errors.CheckpointError(
            f'there is no checkpoint step {step} in {self.directory} ({there})',
            'pick one of its steps, or leave the step out for the newest' if steps
            else 'train first')
    problem = self.check_step(step)
    if problem:
      raise self._damaged(step, problem)
    # Before the read: a failed read's TensorStore callbacks can fire into orbax's closed
    # event loop while the error is still on its way up.
    _filter_unraisable()
    items = {'state': ocp.args.StandardRestore(abstract_state)}
    has_data = (paths.path(self.directory) / str(step) / 'data').is_dir()
    if has_data:
      items['data'] = ocp.args.JsonRestore()
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # pylint: disable=broad-except
      _quiet_orbax_failure()
      problem = _read_failure(e)
      if problem:
        raise self._damaged(step, problem) from e
      raise errors.CheckpointError(
          f'checkpoint step {step} in {self.directory} does not fit this run\'s state '
          f'({_first_line(e)})',
          'resume with the config the workdir was trained with (its config.json), or train '
          'in a fresh --workdir') from e
    return restored['state'], (restored['data'] if has_data else None)

  def check_step(self, step: int) -> str:
    """What is missing or broken in step `step`'s files ('' if nothing is): reads the
    metadata only, no arrays (a truncated array file shows when `restore` reads it)."""
    d = paths.path(self.directory) / str(step)
    if not d.is_dir():
      return 'its directory is missing'
    state = d / 'state'
    if not state.is_dir():
      return 'state/ is missing'
    meta_path = state / '_METADATA'
    if not meta_path.is_file():
      return 'state/_METADATA is missing'
    try:
      meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
      return f'state/_METADATA is unreadable ({type(e).__name__}: {_first_line(e)})'
    if not isinstance(meta, dict) or 'tree_metadata' not in meta:
      return 'state/_METADATA holds no tree metadata'
    manifest = state / 'manifest.ocdbt'
    if meta.get('use_ocdbt', True) and not _nonempty(manifest):
      return ('state/manifest.ocdbt is missing' if not manifest.exists()
              else 'state/manifest.ocdbt is empty')
    for root, _, files in paths.walk(state):
      if root.name == 'd':
        for name in sorted(files):
          if (root / name).stat().length == 0:
            return f'{(root / name).relative_to(d)} is empty (0 bytes)'
    data = d / 'data'
    if data.is_dir():
      try:
        json.loads((data / 'metadata').read_text())
      except FileNotFoundError:
        return 'data/metadata (the data iterator\'s position) is missing'
      except (OSError, ValueError) as e:
        return f'data/metadata is unreadable ({type(e).__name__})'
    return ''

  def restore_newest(self, abstract_state: Any, *, on_damaged: str = 'fallback',
                     warn: Callable[[str], None] | None = None
                     ) -> tuple[int | None, Any, dict | None]:
    """(step, state, data state) of the newest intact checkpoint; (None, None, None) when
    there is none. A damaged newer step: with on_damaged='fallback' it is moved aside to
    `<step>.damaged` and `warn` says so; with 'fail' DamagedCheckpointError names it and
    the way out."""
    if on_damaged not in ON_DAMAGED:
      raise errors.UsageError(f'train.on_damaged_checkpoint={on_damaged!r} is not a policy',
                              f'use one of {", ".join(repr(p) for p in ON_DAMAGED)}')
    warn = warn or (lambda m: print(m, file=sys.stderr, flush=True))
    damaged: list[errors.DamagedCheckpointError] = []
    for step in sorted(self.all_steps(), reverse=True):
      try:
        state, data = self.restore(step, abstract_state)
      except errors.DamagedCheckpointError as e:
        if on_damaged == 'fail':
          raise
        damaged.append(e)
        continue
      for e in damaged:
        moved = self.move_aside(e.step)
        warn(f'warning: checkpoint step {e.step} in {self.directory} is damaged ({e.problem}); '
             f'moved it to {moved} and resumed from step {step} '
             "(train.on_damaged_checkpoint='fallback').")
      return step, state, data
    if damaged:
      listed = '; '.join(f'step {e.step}: {e.problem}' for e in damaged)
      raise errors.DamagedCheckpointError(
          f'every checkpoint in {self.directory} is damaged ({listed})',
          f'move {self.directory} aside (nothing is deleted) to train from step 0',
          step=damaged[0].step, problem=damaged[0].problem)
    return None, None, None

  def move_aside(self, step: int) -> str:
    """Renames step `step`'s directory to `<step>.damaged` (or `.damaged-N`), which orbax
    does not list; returns the new path. Only process 0 renames."""
    import jax  # pylint: disable=import-outside-toplevel
    src = paths.path(self.directory) / str(step)
    dst = src.with_name(src.name + DAMAGED_SUFFIX)
    n = 1
    while dst.exists():
      dst, n = src.with_name(f'{src.name}{DAMAGED_SUFFIX}-{n}'), n + 1
    if jax.process_index() == 0 and src.exists():
      src.rename(dst)
    self._manager.reload()
    return str(dst)

  def _damaged(self, step: int, problem: str) -> errors.DamagedCheckpointError:
    src = paths.join(self.directory, str(step))
    older = [s for s in self.all_steps() if s < step]
    then = f'to use step {max(older)}' if older else 'to train from step 0'
    return errors.DamagedCheckpointError(
        f'checkpoint step {step} in {self.directory} is damaged: {problem}',
        f'move it aside (mv {src} {src}{DAMAGED_SUFFIX}) {then}; a training run does so '
        'itself with --config.train.on_damaged_checkpoint=fallback',
        step=step, problem=problem)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def _nonempty(path) -> bool:
  return path.is_file() and path.stat().length > 0


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  line = text[0] if text else type(e).__name__
  return line if len(line) <= 200 else line[:197] + '...'


# TensorStore's read errors, e.g. 'OUT_OF_RANGE: Error reading "params.w/0.0" in OCDBT
# database at local file "/w/checkpoints/6/state/": Requested byte range [0, 9) is not valid
# for value of size 3'.
_TS_CODE = re.compile(r'\b(OUT_OF_RANGE|DATA_LOSS|NOT_FOUND|FAILED_PRECONDITION|'
                      r'INVALID_ARGUMENT|UNKNOWN|INTERNAL|ABORTED|UNAVAILABLE):')
_TS_KEY = re.compile(r'"([^"]+)" in OCDBT database at [^"]*"[^"]*":?\s*(.*)')


def _read_failure(e: BaseException) -> str:
  """What a failed restore says about damaged files ('' if it is not a read failure)."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    text = ' '.join(str(e).split())
    code, where = _TS_CODE.search(text), _TS_KEY.search(text)
    if code and where:
      array = where.group(1).rsplit('/', 1)[0]
      detail = where.group(2).split(' [tensorstore_spec')[0].strip().rstrip('.')
      if len(detail) > 160:
        detail = detail[:157] + '...'
      return (f'array {array} cannot be read, an array file is truncated or missing '
              f'({code.group(1)}: {detail})')
    e = e.__cause__ or e.__context__
  return ''


_QUIETED = False


def _filter_unraisable() -> None:
  """Drops the 'Event loop is closed' RuntimeErrors that TensorStore's callbacks raise into
  orbax's closed event loop after a failed read (the error raised names the problem)."""
  global _FILTERED
  if _FILTERED:
    return
  _FILTERED = True
  previous = sys.unraisablehook

  def hook(unraisable):
    exc = unraisable.exc_value
    if (isinstance(exc, RuntimeError) and 'Event loop is closed' in str(exc)) or (
        'reading array index' in str(exc)):
      return
    previous(unraisable)

  sys.unraisablehook = hook


_FILTERED = False


def _quiet_orbax_failure() -> None:
  """After a failed restore, orbax's abandoned coroutines and TensorStore's callbacks into
  the closed event loop print pages of 'Event loop is closed' and 'exception was never
  retrieved' as they are collected; the error raised names the problem, so drop them."""
  global _QUIETED
  _filter_unraisable()
  if not _QUIETED:
    _QUIETED = True
    logging.getLogger('asyncio').setLevel(logging.CRITICAL)
    warnings.filterwarnings('ignore', message=r'coroutine .* was never awaited')
  gc.collect()


def _steps_text(steps: list[int]) -> str:
  """'100, 200, 300' or, for many, '100, 200, ..., 9900, 10000 (40 steps)'."""
  if len(steps) <= 6:
    return ', '.join(str(s) for s in steps)
  return (', '.join(str(s) for s in steps[:2]) + ', ..., '
          + ', '.join(str(s) for s in steps[-2:]) + f' ({len(steps)} steps)')
