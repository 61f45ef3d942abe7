"""Orbax checkpoints of the training state together with the data-iterator state.

Each checkpoint is one orbax step directory holding two items: `state` (any pytree of
arrays: params, optimizer states, EMA...) and `data` (the grain iterator state, JSON).
Orbax writes into a temporary directory and renames it when complete, so a run killed
mid-save never leaves a half-written checkpoint that looks valid.
"""
from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp


class Checkpointer:
  """A thin wrapper over `ocp.CheckpointManager` with the two items genai saves."""

  def __init__(self, directory: str, *, max_to_keep: int = 3, asynchronous: bool = True,
               read_only: bool = False):
    """`read_only`: for readers (sampling, evaluation) beside a run that may be writing:
    they must not clean up the writer's in-progress temporary directories."""
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=not read_only, cleanup_tmp_directories=not read_only,
        enable_async_checkpointing=asynchronous, read_only=read_only)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

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
    """Restores `state` with the structure/dtypes/shardings of `abstract_state`."""
    items = {'state': ocp.args.StandardRestore(abstract_state)}
    has_data = os.path.isdir(os.path.join(self.directory, str(step), 'data'))
    if has_data:
      items['data'] = ocp.args.JsonRestore()
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    return restored['state'], (restored['data'] if has_data else None)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
