"""Continuous batching for text generation: a fixed set of slots decoded together.

A request is prefilled alone into a free slot (its prompt padded to a bucket length, so
prefill compiles once per bucket), then joins the other active slots in `decode_tick`, one
jitted call that decodes `steps_per_tick` tokens for every slot with a `lax.scan`. Each
slot has its own row of the KV cache, its own position and its own sampling settings, so
requests that arrive at different times share each decode step; a finished request frees
its slot at the next tick and a queued one takes it. Shapes never change between ticks:
everything compiles once (per prompt bucket), at start-up (`warmup`).

A request's tokens depend only on its own prompt, settings and seed (token t is drawn with
fold_in(key(seed), t)), not on what else is in the batch.

The engine runs in one thread; `submit` is thread-safe and results come back through the
request's `on_update(text_delta, token_ids, finish_reason)` callback, called in the engine
thread.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from genai.models.transformer import Transformer, init_cache
from genai.sample.decode import sample_rows


@dataclasses.dataclass
class Request:
  """One completion. `on_update(text_delta, new_token_ids, finish_reason)`: finish_reason
  is None while it runs, then 'stop' (a stop string or EOS), 'length' or 'cancelled'."""
  prompt_ids: np.ndarray
  max_tokens: int
  on_update: Callable[[str, list[int], str | None], None]
  temperature: float = 1.0
  top_p: float = 1.0
  top_k: int = 0
  seed: int = 0
  stop: tuple[str, ...] = ()
  # Filled in by the engine.
  tokens: list[int] = dataclasses.field(default_factory=list)
  text: str = ''
  sent: int = 0  # characters of `text` already passed to on_update
  cancelled: bool = False
  version: str = ''
  rid: str = ''  # the API's id of the generation this request is a choice of
  submitted: float = dataclasses.field(default_factory=time.monotonic)


def buckets_for(max_len: int, smallest: int = 16) -> tuple[int, ...]:
  """Prompt lengths that prefill compiles for: powers of two up to max_len, and max_len."""
  out, b = [], smallest
  while b < max_len:
    out.append(b)
    b *= 2
  return tuple(out) + (max_len,)


@functools.partial(jax.jit, static_argnames=('model',), donate_argnames=('cache',))
def _prefill(model: Transformer, params, cache, slot, tokens_1T, length, key, temperature,
             top_k, top_p):
  """Runs the padded prompt through the model into row `slot` of the cache; returns the
  first new token (drawn from the logits at position length - 1) and the cache."""
  t = tokens_1T.shape[1]
  # Cache leaves are [B, K, S, D], or [L, B, K, S, D] for scanned layers: B is axis ndim-4.
  row = jax.tree.map(lambda c: jax.lax.dynamic_slice_in_dim(c, slot, 1, axis=c.ndim - 4), cache)
  logits_1TV, row = model.apply({'params': params}, tokens_1T,
                                positions_BT=jnp.arange(t, dtype=jnp.int32)[None], cache=row)
  last_1V = jax.lax.dynamic_slice_in_dim(logits_1TV[0], length - 1, 1, axis=0)
  first_1 = sample_rows(last_1V, jax.random.fold_in(key, length)[None], temperature[None],
                        top_k[None], top_p[None])
  cache = jax.tree.map(lambda c, r: jax.lax.dynamic_update_slice_in_dim(c, r, slot, axis=c.ndim - 4),
                       cache, row)
  return first_1[0], cache


@functools.partial(jax.jit, static_argnames=('model', 'num_steps', 'length'),
                   donate_argnames=('cache',))
def _decode_tick(model: Transformer, params, cache, tokens_S, positions_S, keys_S,
                 temperature_S, top_k_S, top_p_S, steps, *, num_steps: int, length: int):
  """`steps` (<= num_steps, traced) tokens for the first S slots: [S, num_steps], of which
  the first `steps` columns are new, and the cache. Slot s feeds tokens_S[s] at
  positions_S[s] and draws the token for the next position. Only the first `length`
  positions of those S slots' cache rows are read and written: S and `length` are
  buckets, so a lone request does not pay for idle slots, nor short sequences for the
  whole context (at batch 8 reading the cache costs as much as reading the weights). A
  tick that ends its requests runs only the steps they still need (`steps`), with no
  recompile: the loop's trip count is a traced value."""
  rows = tokens_S.shape[0]
  full = cache
  cache = jax.tree.map(lambda c: c[..., :rows, :, :length, :], cache)  # [(L,) B, K, S, D]
  last = length - 1

  def step(i, carry):
    tok_S, pos_S, cache, out_NS = carry
    pos_S = jnp.minimum(pos_S, last)  # idle or overrunning slots write in bounds
    logits_S1V, cache = model.apply({'params': params}, tok_S[:, None],
                                    positions_BT=pos_S[:, None], cache=cache)
    keys = jax.vmap(jax.random.fold_in)(keys_S, pos_S + 1)
    nxt_S = sample_rows(logits_S1V[:, 0], keys, temperature_S, top_k_S, top_p_S)
    return nxt_S, pos_S + 1, cache, out_NS.at[i].set(nxt_S)

  out_NS = jnp.zeros((num_steps, rows), jnp.int32)
  _, _, cache, out_NS = jax.lax.fori_loop(
      0, jnp.minimum(steps, num_steps), step, (tokens_S, positions_S, cache, out_NS))
  return out_NS.T, jax.tree.map(lambda f, c: f.at[..., :rows, :, :length, :].set(c), full, cache)


class Engine:
  """Slots, a queue and the decode thread for one model. `start()` runs the thread."""

  def __init__(self, model: Transformer, params: Any, tokenizer: Any, *, num_slots: int = 8,
               steps_per_tick: int = 16, max_queue: int = 256, version: str = '',
               eos_id: int | None = None, admit_window_s: float = 0.003):
    self.model, self.params, self.tokenizer = model, params, tokenizer
    self.num_slots, self.steps_per_tick, self.max_queue = num_slots, steps_per_tick, max_queue
    self.admit_window_s = admit_window_s
    self.max_len = model.config.max_len
    self.buckets = buckets_for(self.max_len)
    # Decode ticks compile for 1, 2, 4, ... active slots; requests take the lowest free slot.
    self.row_buckets = tuple(b for b in (1, 2, 4, 8, 16, 32, 64, 128) if b < num_slots) + (num_slots,)
    # ... and for the cache prefix they attend over: a quarter, half or all of the context.
    self.length_buckets = tuple(sorted({max(self.max_len // 4, 1), max(self.max_len // 2, 1),
                                        self.max_len}))
    self.version = version
    self.eos_id = eos_id
    dtype = jnp.dtype(model.config.dtype)
    self._cache = init_cache(model.config, num_slots, self.max_len, dtype=dtype)
    self._slots: list[Request | None] = [None] * num_slots
    self._tokens = np.zeros(num_slots, np.int32)
    self._positions = np.zeros(num_slots, np.int32)
    self._keys = jax.random.split(jax.random.key(0), num_slots)
    self._settings = (np.zeros(num_slots, np.float32), np.zeros(num_slots, np.int32),
                      np.ones(num_slots, np.float32))
    self._queue: collections.deque[Request] = collections.deque()
    self._cond = threading.Condition()
    self._pending_params: tuple[Any, str] | None = None
    self._started_rids: set[str] = set()  # responses with choices started and still queued
    self._stop = False
    self._thread: threading.Thread | None = None
    self.error: BaseException | None = None
    # Counters read by /metrics.
    self.generated_tokens = 0
    self.completed = 0
    self.tick_seconds = 0.0

  # ------------------------------------------------------------------ public, thread-safe
  def submit(self, req: Request) -> None:
    """Queues `req`; raises QueueFull when `max_queue` requests already wait."""
    if len(req.prompt_ids) + req.max_tokens > self.max_len:
      raise ValueError(f'prompt ({len(req.prompt_ids)} tokens) + max_tokens ({req.max_tokens}) '
                       f'exceeds the model context of {self.max_len} tokens; shorten the '
                       'prompt or ask for fewer tokens.')
    with self._cond:
      if self.error is not None:
        raise RuntimeError(f'the decode engine stopped: {self.error!r}')
      if len(self._queue) >= self.max_queue:
        raise QueueFull(f'{len(self._queue)} requests are already queued; retry later.')
      req.version = self.version
      self._queue.append(req)
      self._cond.notify()

  def cancel(self, req: Request) -> None:
    """Stops `req` (a client went away); its slot frees at the next tick."""
    with self._cond:
      req.cancelled = True
      self._cond.notify()

  def swap_params(self, params: Any, version: str) -> None:
    """New weights (hot reload). Requests in flight finish on the weights they started
    with; new ones wait (queued, not refused) until then and run on the new weights. The
    choices of one response (requests with the same `rid`) all run on one version: those
    still queued when a swap is asked for, whose siblings already started, are admitted
    before the swap."""
    with self._cond:
      self._pending_params = (params, version)
      self._cond.notify()

  @property
  def queue_depth(self) -> int:
    return len(self._queue)

  @property
  def active(self) -> int:
    return sum(s is not None for s in self._slots)

  def start(self) -> None:
    self._thread = threading.Thread(target=self._run, name='genai-engine', daemon=True)
    self._thread.start()

  def stop(self) -> None:
    with self._cond:
      self._stop = True
      self._cond.notify()
    if self._thread is not None:
      self._thread.join(timeout=30)

  def warmup(self) -> None:
    """Compiles prefill for every bucket and the decode tick (call before serving)."""
    zero = np.zeros((), np.int32)
    for b in self.buckets:
      _, self._cache = _prefill(self.model, self.params, self._cache, zero,
                                np.zeros((1, b), np.int32), np.int32(1), self._keys[0],
                                np.float32(1.0), np.int32(1), np.float32(0.9))
    for rows in self.row_buckets:
      for length in self.length_buckets:
        out, self._cache = self._tick(rows, length)
    jax.block_until_ready(out)

  # ------------------------------------------------------------------ the decode thread
  def _run(self) -> None:
    try:
      while True:
        with self._cond:
          idle = not self._has_work()
          while not self._stop and not self._has_work():
            self._cond.wait(timeout=1.0)
          if idle and self.admit_window_s > 0:
            # Waking from idle: requests sent together (a client's burst) arrive a few ms
            # apart; start them in one batch rather than the first alone.
            deadline = time.monotonic() + self.admit_window_s
            while (not self._stop and len(self._queue) < self._free()
                   and (left := deadline - time.monotonic()) > 0):
              self._cond.wait(timeout=left)
          if self._stop:
            break
          if (self._pending_params is not None and self.active == 0
              and not self._siblings_queued()):
            (self.params, self.version), self._pending_params = self._pending_params, None
            for r in self._queue:
              r.version = self.version
          admit = self._take_admissible()
        for req in admit:
          self._admit(req)
        self._reap_cancelled()
        if self.active:
          self._decode()
    except BaseException as e:  # pylint: disable=broad-except
      # Fail every waiting request instead of leaving its client hanging.
      with self._cond:
        self.error = e
        waiting = [r for r in self._slots if r is not None] + list(self._queue)
        self._queue.clear()
        self._slots = [None] * self.num_slots
      for r in waiting:
        r.on_update('', [], 'error')
      raise

  def _siblings_queued(self) -> bool:
    """Whether a queued request belongs to a response whose other choices started."""
    return any(r.rid in self._started_rids for r in self._queue)

  def _take_admissible(self) -> list[Request]:
    """The queued requests to start now (under the lock): the oldest ones that fit, or,
    while a swap waits, only the siblings of started choices (same version for all)."""
    admit: list[Request] = []
    if self._pending_params is None:
      while self._queue and len(admit) < self._free():
        admit.append(self._queue.popleft())
    elif self._started_rids:
      rest: collections.deque[Request] = collections.deque()
      for r in self._queue:
        if r.rid in self._started_rids and len(admit) < self._free():
          admit.append(r)
        else:
          rest.append(r)
      self._queue = rest
    for r in admit:  # remember a response whose other choices still wait in the queue
      if r.rid and any(q.rid == r.rid for q in self._queue):
        self._started_rids.add(r.rid)
      else:
        self._started_rids.discard(r.rid)
    return admit

  def _has_work(self) -> bool:
    return bool(self._queue) or self.active > 0 or (
        self._pending_params is not None and self.active == 0)

  def _free(self) -> int:
    return self.num_slots - self.active

  def _admit(self, req: Request) -> None:
    if req.cancelled:
      req.on_update('', [], 'cancelled')
      return
    slot = self._slots.index(None)
    n = len(req.prompt_ids)
    bucket = next(b for b in self.buckets if b >= n)
    tokens = np.zeros((1, bucket), np.int32)
    tokens[0, :n] = req.prompt_ids
    key = jax.random.key(req.seed)
    settings = (np.float32(req.temperature), np.int32(req.top_k), np.float32(req.top_p))
    first, self._cache = _prefill(self.model, self.params, self._cache, np.int32(slot), tokens,
                                  np.int32(n), key, *settings)
    self._slots[slot] = req
    self._tokens[slot], self._positions[slot] = int(first), n
    self._keys = self._keys.at[slot].set(key)
    for arr, value in zip(self._settings, settings):
      arr[slot] = value
    self._emit(slot, [int(first)])

  def _reap_cancelled(self) -> None:
    for s, req in enumerate(self._slots):
      if req is not None and req.cancelled:
        self._slots[s] = None
        req.on_update('', [], 'cancelled')

  def _tick(self, rows: int, length: int, steps: int | None = None):
    """Decodes `steps` tokens (default steps_per_tick) for the first `rows` slots over the
    first `length` cache positions."""
    return _decode_tick(self.model, self.params, self._cache, self._tokens[:rows],
                        self._positions[:rows], self._keys[:rows],
                        *(a[:rows] for a in self._settings),
                        np.int32(steps or self.steps_per_tick), num_steps=self.steps_per_tick,
                        length=length)

  def _decode(self) -> None:
    t0 = time.perf_counter()
    active = [s for s, r in enumerate(self._slots) if r is not None]
    rows = next(b for b in self.row_buckets if b > active[-1])
    # No more steps than the longest request still needs (stops may end it sooner).
    steps = min(self.steps_per_tick,
                max(self._slots[s].max_tokens - len(self._slots[s].tokens) for s in active))
    reach = max(self._positions[s] for s in active) + steps
    out_SN, self._cache = self._tick(
        rows, next((b for b in self.length_buckets if b >= reach), self.max_len), steps)
    out_SN = np.asarray(out_SN)[:, :steps]
    self.tick_seconds += time.perf_counter() - t0
    for s, req in enumerate(self._slots[:len(out_SN)]):
      if req is None:
        continue
      self._positions[s] += steps
      self._tokens[s] = out_SN[s, -1]
      self._emit(s, out_SN[s].tolist())

  def _emit(self, slot: int, new: list[int]) -> None:
    """Adds `new` tokens to the slot's request, cut at EOS, a stop string or max_tokens;
    reports the text that is final so far and frees the slot when the request is done."""
    req = self._slots[slot]
    new = new[:req.max_tokens - len(req.tokens)]
    finish = None
    if self.eos_id is not None and self.eos_id in new:
      new, finish = new[:new.index(self.eos_id)], 'stop'
    req.tokens.extend(new)
    self.generated_tokens += len(new)
    text = self.tokenizer.decode(req.tokens)
    for s in req.stop:
      at = text.find(s, max(0, req.sent - len(s) + 1))
      if at >= 0:
        text, finish = text[:at], 'stop'
    if finish is None and len(req.tokens) >= req.max_tokens:
      finish = 'length'
    req.text = text
    # Hold back what a stop string might still cut, and a partial UTF-8 character.
    hold = 0 if finish else max((len(s) - 1 for s in req.stop), default=0)
    ready = len(text) - hold
    while ready > req.sent and text[ready - 1] == '\ufffd' and not finish:
      ready -= 1
    delta = text[req.sent:ready] if ready > req.sent else ''
    req.sent = max(req.sent, ready)
    if finish:
      self._slots[slot] = None
      self.completed += 1
    req.on_update(delta, new, finish)


class QueueFull(RuntimeError):
  """The engine's queue is full (the server answers 503)."""
