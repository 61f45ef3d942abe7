"""The one training loop shared by every model family.

An experiment (experiments/<family>.py) builds a `Task`: how to initialise its state, a
pure train step, a checkpointable data iterator and an optional evaluator. The loop owns
everything else: jit with donated buffers, per-step RNG (`fold_in(seed, step)`),
resume from the newest checkpoint, periodic evaluation and checkpoints, TensorBoard and
console logging, non-finite-loss stops and SIGTERM (preemption) handling.
"""
from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from typing import Any, Callable, Iterator

from clu import metric_writers
import jax
import numpy as np

from genai.train.checkpoints import Checkpointer

PyTree = Any


class NonFiniteLossError(FloatingPointError):
  """Raised when a train step produces a NaN/Inf loss or gradient norm."""


@dataclasses.dataclass
class Task:
  """Everything family-specific the loop needs.

  init_state: rng -> state pytree (params, optimizer state, ...). Jitted by the loop.
  train_step: (state, batch, rng) -> (state, metrics). Pure; the loop jits it and donates
    `state`. `metrics` is a dict of scalars and must contain 'loss'.
  train_iter: an iterator of batches with `get_state()`/`set_state()` (grain), saved in
    every checkpoint so resumed runs see exactly the batches they would have seen.
  evaluate: (state, step) -> dict. Floats are written as scalars, strings as text, arrays
    [N, H, W, C] as images.
  tokens_per_step / examples_per_step: for throughput in the logs (0 = not logged).
  """
  init_state: Callable[[jax.Array], PyTree]
  train_step: Callable[[PyTree, Any, jax.Array], tuple[PyTree, dict[str, Any]]]
  train_iter: Iterator[Any]
  evaluate: Callable[[PyTree, int], dict[str, Any]] | None = None
  tokens_per_step: int = 0
  examples_per_step: int = 0


class _Preemption:
  """Turns SIGTERM into a flag checked between steps."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _format_seconds(s: float) -> str:
  s = int(s)
  return f'{s // 3600}h{s // 60 % 60:02d}m' if s >= 3600 else f'{s // 60}m{s % 60:02d}s'


def _write_eval(writer, step: int, results: dict[str, Any]) -> dict[str, float]:
  scalars, texts, images = {}, {}, {}
  for k, v in results.items():
    if isinstance(v, str):
      texts[k] = v
    elif isinstance(v, np.ndarray) and v.ndim == 4:
      images[k] = v
    else:
      scalars[k] = float(v)
  if scalars:
    writer.write_scalars(step, scalars)
  if texts:
    writer.write_texts(step, texts)
  if images:
    writer.write_images(step, images)
  return scalars


def _check_finite(step: int, metrics: dict[str, float], ckpt: Checkpointer) -> None:
  bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
  if bad:
    last = ckpt.latest_step()
    where = (f'the last good checkpoint is step {last} in {ckpt.directory}' if last is not None
             else 'no checkpoint was written yet')
    raise NonFiniteLossError(
        f'Non-finite metrics {bad} at step {step}; stopping. {where}. Lower '
        'optimizer.learning_rate, set optimizer.grad_clip_norm, or check the data, '
        'then re-run the same command to resume from the last good checkpoint.')


def train(task: Task, *, workdir: str, num_steps: int, seed: int = 0, log_every: int = 50,
          eval_every: int = 500, checkpoint_every: int = 500, max_to_keep: int = 3,
          hparams: dict[str, Any] | None = None, print_fn: Callable[[str], None] = print,
          stop_after: int | None = None) -> PyTree:
  """Trains `task` for `num_steps`, resuming from the newest checkpoint in `workdir`.

  `stop_after`: stop (with a checkpoint) after this many steps of *this* invocation; used
  to simulate a pre-empted run. Returns the final state.
  """
  is_chief = jax.process_index() == 0
  writer = (metric_writers.AsyncWriter(metric_writers.SummaryWriter(workdir)) if is_chief
            else metric_writers.MultiWriter([]))
  ckpt = Checkpointer(f'{workdir}/checkpoints', max_to_keep=max_to_keep)
  init_rng, step_rng = jax.random.split(jax.random.key(seed))

  # --- State: restore the newest checkpoint, or initialise. ---------------------------
  start = ckpt.latest_step()
  if start is not None:
    abstract = jax.eval_shape(task.init_state, init_rng)
    state, data_state = ckpt.restore(start, abstract)
    if data_state is not None:
      task.train_iter.set_state(data_state)
    print_fn(f'Resumed from step {start} in {ckpt.directory}')
  else:
    start = 0
    state = jax.jit(task.init_state)(init_rng)
    if hparams and is_chief:
      writer.write_hparams(hparams)
  if start >= num_steps:
    print_fn(f'Already trained for {start} >= train.num_steps={num_steps} steps.')
    ckpt.close()
    return state

  def step_fn(state, batch, step):
    return task.train_step(state, batch, jax.random.fold_in(step_rng, step))

  step_fn = jax.jit(step_fn, donate_argnums=0)

  # --- The loop. Metrics of step t are fetched after step t+1 is dispatched. ----------
  pending = None  # (step, device metrics)
  window: list[dict[str, float]] = []
  t_window, steps_window, t_start = time.perf_counter(), 0, time.perf_counter()
  last_step = min(num_steps, start + stop_after) if stop_after else num_steps

  def flush():
    nonlocal pending
    if pending is not None:
      s, m = pending
      m = {k: float(v) for k, v in jax.device_get(m).items()}
      _check_finite(s, m, ckpt)
      window.append(m)
      pending = None

  try:
    with _Preemption() as preemption:
      step = start
      for step in range(start + 1, last_step + 1):
        batch = next(task.train_iter)
        state, metrics = step_fn(state, batch, np.int32(step))
        flush()
        pending = (step, metrics)
        steps_window += 1

        is_last = step == last_step
        if step % log_every == 0 or is_last:
          flush()
          dt = time.perf_counter() - t_window
          mean = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
          rate = steps_window / dt
          scalars = {f'train/{k}': v for k, v in mean.items()}
          scalars['train/steps_per_sec'] = rate
          extra = ''
          if task.tokens_per_step:
            scalars['train/tokens_per_sec'] = rate * task.tokens_per_step
            extra = f' | {rate * task.tokens_per_step / 1e3:.1f}k tok/s'
          writer.write_scalars(step, scalars)
          eta = (num_steps - step) / rate
          print_fn(f'step {step}/{num_steps} | loss {mean["loss"]:.4f} | '
                   f'{1e3 / rate:.1f} ms/step{extra} | ETA {_format_seconds(eta)}')
          window.clear()
          t_window, steps_window = time.perf_counter(), 0

        if task.evaluate is not None and (step % eval_every == 0 or step == num_steps):
          flush()
          results = task.evaluate(state, step)
          scalars = _write_eval(writer, step, results)
          print_fn(f'eval @ {step}: ' + ', '.join(f'{k} {v:.4f}' for k, v in scalars.items()))
          for k, v in results.items():
            if isinstance(v, str):
              print_fn(f'--- {k} ---\n{v}\n---')
          t_window = time.perf_counter()

        if step % checkpoint_every == 0 or is_last or preemption.requested:
          flush()  # Never checkpoint a state whose step produced non-finite metrics.
          ckpt.save(step, state, task.train_iter.get_state())
          t_window = time.perf_counter()
        if preemption.requested:
          print_fn(f'SIGTERM: saved checkpoint at step {step}; exiting.')
          break
    flush()
  finally:
    ckpt.close()  # Waits for an in-flight async save, so the last good one completes.
    writer.flush()
    writer.close()
  print_fn(f'Trained steps {start + 1}..{step} in {_format_seconds(time.perf_counter() - t_start)}.')
  return state
