"""The one training loop shared by every model family.

An experiment (experiments/<family>.py) builds a `Task`: how to initialise its state, a
pure train step, a checkpointable data iterator and an optional evaluator. The loop owns
everything else: jit with donated buffers, per-step RNG (`fold_in(seed, step)`),
resume from the newest checkpoint, periodic evaluation and checkpoints, TensorBoard and
console logging, non-finite-loss stops and SIGTERM (preemption) handling.

Sharding: the state is created sharded on a ('data', 'fsdp', 'tensor') mesh from the
parameters' logical axis names (genai/parallel/sharding.py), the step is jitted with
explicit in/out shardings, and each process feeds only its slice of the global batch. The
same code runs on one CPU, an 8-GPU box and a multi-host TPU slice; only process 0 writes
logs, and every process takes part in writing each (sharded) checkpoint.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import sys
import threading
import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from genai.parallel import mesh as mesh_lib
from genai.parallel import per_device as per_device_lib
from genai.parallel import sharding
from genai import paths
from genai.train import event_files
from genai.train import throughput
from genai.train.checkpoints import Checkpointer

PyTree = Any


class NonFiniteLossError(FloatingPointError):
  """Raised when a train step produces a NaN/Inf loss or gradient norm."""


@dataclasses.dataclass
class Task:
  """Everything family-specific the loop needs.

  init_state: rng -> state pytree (params, optimizer state, ...). Jitted by the loop with
    sharded outputs; leaves may be `nn.LogicallyPartitioned` (their axis names decide the
    sharding; the loop unboxes them), plain leaves are replicated.
  train_step: (state, batch, rng) -> (state, metrics). Pure; the loop jits it and donates
    `state`. `metrics` is a dict of scalars and must contain 'loss'.
  train_iter: an iterator of this process's batches (`batch_size / process_count` rows of
    the global batch) with `get_state()`/`set_state()` (grain), saved in every checkpoint
    so resumed runs see exactly the batches they would have seen.
  evaluate: (state, step) -> dict. Floats are written as scalars, strings as text, arrays
    [N, H, W, C] as images.
  tokens_per_step / examples_per_step: global, for throughput in the logs (0 = not logged).
  flops_per_step: training FLOPs of one global step, for MFU (0 = not logged).
  init_args: extra arguments of `init_state(rng, *init_args)` on a fresh start, e.g.
    pretrained weights (passed to the jitted init, never baked in as constants).
  per_device: run `train_step` with pmap semantics (once per batch shard, per-device rng,
    `genai.parallel.per_device.pmean` averaging) through shard_map; see that module.
  unroll_steps: compile the `steps_per_call` steps of one call as straight-line code.
    Inside a while loop XLA:CPU runs autodiff's convolution gradients as plain loops
    (10-35x slower), so families whose models use plain `nn.Conv` keep True. Families
    without convolutions, or whose convolutions take genai/models/conv_grads.py's
    gradients (the diffusion UNet), set False: a rolled `lax.scan` compiles the step body
    once (the baby GPT's 8-step call: 4.9 s against 20.3 s) and runs as fast.
  """
  init_state: Callable[[jax.Array], PyTree]
  train_step: Callable[[PyTree, Any, jax.Array], tuple[PyTree, dict[str, Any]]]
  train_iter: Iterator[Any]
  evaluate: Callable[[PyTree, int], dict[str, Any]] | None = None
  tokens_per_step: int = 0
  examples_per_step: int = 0
  flops_per_step: float = 0.0
  init_args: tuple = ()
  per_device: bool = False
  unroll_steps: bool = True


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


def stack_batches(batches: list[Any]) -> Any:
  """[batch, ...] -> one batch pytree with a leading axis of len(batches)."""
  return jax.tree.map(lambda *xs: np.stack(xs), *batches)


def make_multi_step(train_step: Callable, step_rng: jax.Array, mesh=None,
                    state_shardings: Any = None, per_device: bool = False,
                    unroll: bool = True) -> Callable:
  """jit((state, stacked batches, first step) -> (state, stacked metrics)), donating state.

  Runs one train step per leading-axis entry of the batches with `lax.scan`, each with
  rng `fold_in(step_rng, step)`. Several steps per call amortise per-call overhead (on a
  2-core CPU, 8 steps per call cut the GPT step time by about a quarter). With a `mesh`,
  the state keeps `state_shardings`, batches [steps, batch, ...] are split over the data
  axes, and metrics come back replicated (readable on every host). `per_device`: the
  step runs per batch shard under shard_map (genai/parallel/per_device.py). `unroll`:
  straight-line steps (for convolutions on XLA:CPU) or a rolled scan (compiles faster).
  """
  if per_device:
    train_step = per_device_lib.per_device_step(train_step, mesh)
  def multi_step(state, batches, first_step):
    def body(state, xs):
      batch, i = xs
      return train_step(state, batch, jax.random.fold_in(step_rng, first_step + i))
    n = jax.tree.leaves(batches)[0].shape[0]
    if n == 1:
      # unroll=True cannot unroll a 1-trip scan: it stays a while loop (a digits conv
      # classifier step: 1.08 s through the scan, 0.06 s called directly).
      state, metrics = body(state, (jax.tree.map(lambda x: x[0], batches), jnp.int32(0)))
      return state, jax.tree.map(lambda m: jnp.asarray(m)[None], metrics)
    # Unrolled: XLA:CPU runs convolutions inside a while loop about 12x slower than
    # straight-line code (a 3x3 conv grad step: 0.76 s direct, 9.1 s per step in a scan,
    # 0.82 s unrolled). Unrolling costs compile time only (n times the step body's).
    return jax.lax.scan(body, state, (batches, jnp.arange(n, dtype=jnp.int32)),
                        unroll=True if unroll else 1)

  if mesh is None:
    return jax.jit(multi_step, donate_argnums=0)
  rep = sharding.replicated(mesh)
  return jax.jit(multi_step, donate_argnums=0,
                 in_shardings=(state_shardings, sharding.batch_sharding(mesh, leading=1), rep),
                 out_shardings=(state_shardings, rep))


def train(task: Task, *, workdir: str, num_steps: int, seed: int = 0, log_every: int = 50,
          eval_every: int = 500, checkpoint_every: int = 500, max_to_keep: int = 3,
          steps_per_call: int = 1, hparams: dict[str, Any] | None = None,
          print_fn: Callable[[str], None] = print, stop_after: int | None = None,
          mesh: jax.sharding.Mesh | None = None, rules=None,
          peak_flops_per_device: float = 0.0, on_damaged_checkpoint: str = 'fallback',
          on_first_step: Callable[[], None] | None = None) -> PyTree:
  """Trains `task` for `num_steps`, resuming from the newest checkpoint in `workdir`.

  `steps_per_call`: train steps run inside one jitted call (a `lax.scan` over that many
  batches). Logging, evaluation and checkpoints happen at call boundaries: when a call
  crosses a multiple of `log_every`/`eval_every`/`checkpoint_every`. A resumed run keeps
  bit-exactness as long as `steps_per_call` is unchanged.
  `stop_after`: stop (with a checkpoint) after this many steps of *this* invocation; used
  to simulate a pre-empted run. Returns the final state.
  `mesh`/`rules`: the device mesh and logical-axis rules (default: data parallel over every
  device). `peak_flops_per_device`: for MFU (0 = look the device up; unknown = not logged).
  `on_damaged_checkpoint`: 'fallback' (resume from the newest intact checkpoint, moving
  damaged newer ones aside to <step>.damaged) or 'fail' (refuse, naming the step); see
  genai/train/checkpoints.py. `on_first_step`: called once the first step's metrics are in
  (workdir.run undoes what a run wrote when it fails before).
  """
  if steps_per_call < 1:
    raise ValueError(f'train.steps_per_call={steps_per_call} must be >= 1.')
  mesh = mesh if mesh is not None else mesh_lib.make_mesh()
  rules = rules if rules is not None else sharding.DEFAULT_RULES
  is_chief = jax.process_index() == 0
  if not is_chief:
    print_fn = lambda _: None  # Only process 0 logs.
  peak = throughput.peak_flops_per_device(peak_flops_per_device)
  timers = RunTimers()
  t_start = time.perf_counter()
  writer = event_files.open_writer(workdir) if is_chief else event_files.null_writer()
  ckpt = Checkpointer(paths.join(workdir, 'checkpoints'), max_to_keep=max_to_keep)
  init_rng, step_rng = jax.random.split(jax.random.key(seed))

  # --- State: restore the newest checkpoint, or initialise. ---------------------------
  try:
    init, abstract = sharding.sharded_init(task.init_state, mesh, rules, *task.init_args)
    state_shardings = sharding.state_shardings(abstract)
    # Restores into this run's shardings, whatever mesh or device count wrote it.
    start, state, data_state = ckpt.restore_newest(
        abstract, on_damaged=on_damaged_checkpoint,
        warn=lambda m: print(m, file=sys.stderr, flush=True) if is_chief else None)
    if start is not None:
      if data_state is not None:
        task.train_iter.set_state(data_state)
      print_fn(f'Resumed from step {start} in {ckpt.directory}')
    else:
      start = 0
      state = init(init_rng, *task.init_args)
      if hparams and is_chief:
        writer.write_hparams(hparams)
  except BaseException:
    ckpt.close()
    writer.close()
    raise
  if start >= num_steps:
    print_fn(f'Already trained for {start} >= train.num_steps={num_steps} steps.')
    ckpt.close()
    writer.close()
    return state

  multi_step = make_multi_step(task.train_step, step_rng, mesh, state_shardings,
                               per_device=task.per_device, unroll=task.unroll_steps)
  batch_sharding = sharding.batch_sharding(mesh, leading=1)
  num_devices = mesh.devices.size

  # --- The loop. Metrics of call c are fetched after call c+1 is dispatched. ----------
  pending = None  # (first step, device metrics stacked over the call's steps)
  window: list[dict[str, float]] = []
  timers.add('start-up', time.perf_counter() - t_start)  # writer, checkpoint scan, init
  t_window, steps_window = time.perf_counter(), 0
  last_step = min(num_steps, start + stop_after) if stop_after else num_steps

  def flush():
    nonlocal pending, on_first_step
    if pending is not None:
      first, stacked = pending
      stacked = jax.device_get(stacked)
      for i in range(len(stacked['loss'])):
        m = {k: float(v[i]) for k, v in stacked.items()}
        _check_finite(first + i, m, ckpt)
        window.append(m)
      pending = None
      if on_first_step is not None:
        on_first_step()
        on_first_step = None

  def crossed(every, before, after):
    return every > 0 and after // every > before // every

  try:
    with _Preemption() as preemption:
      step = start
      while step < last_step:
        k = min(steps_per_call, last_step - step)
        with timers('data wait'):
          batches = sharding.global_batch(
              stack_batches([next(task.train_iter) for _ in range(k)]), batch_sharding,
              batch_axis=1)
        # The first call traces and compiles (then dispatches asynchronously).
        with timers('compile' if step == start else 'steps'):
          state, metrics = multi_step(state, batches, np.int32(step + 1))
        flush()
        pending = (step + 1, metrics)
        before, step = step, step + k
        steps_window += k

        is_last = step == last_step
        if crossed(log_every, before, step) or is_last:
          flush()
          dt = time.perf_counter() - t_window
          mean = {key: float(np.mean([m[key] for m in window])) for key in window[0]}
          rate = steps_window / dt
          scalars = {f'train/{key}': v for key, v in mean.items()}
          scalars['train/steps_per_sec'] = rate
          extra = ''
          if task.examples_per_step:
            scalars['train/examples_per_sec'] = rate * task.examples_per_step
          if task.tokens_per_step:
            scalars['train/tokens_per_sec'] = rate * task.tokens_per_step
            scalars['train/tokens_per_sec_per_device'] = rate * task.tokens_per_step / num_devices
            extra = f' | {rate * task.tokens_per_step / 1e3:.1f}k tok/s'
          if task.flops_per_step and peak:
            scalars['train/mfu'] = throughput.mfu(task.flops_per_step, rate, num_devices, peak)
            extra += f' | MFU {100 * scalars["train/mfu"]:.1f}%'
          writer.write_scalars(step, scalars)
          eta = (num_steps - step) / rate
          print_fn(f'step {step}/{num_steps} | loss {mean["loss"]:.4f} | '
                   f'{1e3 / rate:.1f} ms/step{extra} | ETA {_format_seconds(eta)}')
          window.clear()
          t_window, steps_window = time.perf_counter(), 0

        if task.evaluate is not None and (crossed(eval_every, before, step)
                                          or step == num_steps):
          flush()
          with timers('eval'):
            results = task.evaluate(state, step)
          scalars = _write_eval(writer, step, results)
          print_fn(f'eval @ {step}: ' + ', '.join(f'{k} {v:.4f}' for k, v in scalars.items()))
          for key, v in results.items():
            if isinstance(v, str):
              print_fn(f'--- {key} ---\n{v}\n---')
          t_window = time.perf_counter()

        if crossed(checkpoint_every, before, step) or is_last or preemption.requested:
          flush()  # Never checkpoint a state whose steps produced non-finite metrics.
          with timers('checkpoints'):
            ckpt.save(step, state, task.train_iter.get_state())
            writer.flush()  # A remote workdir's event files go up with each checkpoint.
          t_window = time.perf_counter()
        if preemption.requested:
          print_fn(f'SIGTERM: saved checkpoint at step {step}; exiting.')
          break
    flush()
  finally:
    with timers('checkpoints'):
      ckpt.close()  # Waits for an in-flight async save, so the last good one completes.
      writer.flush()
      writer.close()
  total = time.perf_counter() - t_start
  print_fn(f'Trained steps {start + 1}..{step} in {_format_seconds(total)}.')
  print_fn(timers.summary(total))
  return state


class RunTimers:
  """Wall time of a run by phase: `with timers('eval'): ...`; `summary(total)` is the line
  printed at the end of every run. The steps' device time is what is left of the loop's
  time once the other phases are out ('steps': dispatch and waiting on the device, logging)."""

  ORDER = ('start-up', 'compile', 'steps', 'data wait', 'eval', 'checkpoints')

  def __init__(self):
    self.seconds: dict[str, float] = {}

  def add(self, name: str, seconds: float) -> None:
    self.seconds[name] = self.seconds.get(name, 0.0) + seconds

  @contextlib.contextmanager
  def __call__(self, name: str):
    t0 = time.perf_counter()
    try:
      yield
    finally:
      self.add(name, time.perf_counter() - t0)

  def summary(self, total: float) -> str:
    s = dict(self.seconds)
    s['steps'] = max(0.0, total - sum(v for k, v in s.items() if k != 'steps'))
    parts = [f'{k} {s[k]:.1f}s ({100 * s[k] / max(total, 1e-9):.0f}%)'
             for k in self.ORDER if s.get(k)]
    return f'Time {total:.1f}s: ' + ', '.join(parts)
