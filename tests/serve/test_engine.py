"""The continuous-batching engine: per-row sampling, parity with `generate`, independence
of a request from its batch, stops, cancellation and hot swaps."""
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genai.sample import decode
from genai.serve import models
from genai.models.transformer import init_cache
from genai.serve import engine as engine_lib
from genai.serve.engine import Engine, QueueFull, Request, buckets_for


def test_sample_rows_filters_each_row_like_filter_logits():
  logits = jax.random.normal(jax.random.key(0), (4, 50)) * 3
  settings = [(0, 1.0), (5, 1.0), (0, 0.6), (7, 0.3)]
  top_k = jnp.array([k for k, _ in settings])
  top_p = jnp.array([p for _, p in settings], jnp.float32)
  temp = jnp.full((4,), 0.7)
  keys = jax.random.split(jax.random.key(1), 4)
  draw = jax.jit(jax.vmap(lambda key: decode.sample_rows(logits, jax.random.split(key, 4), temp,
                                                          top_k, top_p)))
  draws = np.asarray(draw(jax.random.split(jax.random.key(2), 2000)))
  for row, (k, p) in enumerate(settings):
    allowed = decode.filter_logits(logits[row:row + 1] / 0.7, k, p)[0] > jnp.finfo(jnp.float32).min
    assert set(draws[:, row].tolist()) <= set(np.flatnonzero(np.asarray(allowed)).tolist())
  # Row 0 (no filter) is a plain categorical draw: its frequencies follow softmax(logits/T).
  freq = np.bincount(draws[:, 0], minlength=50) / len(draws)
  np.testing.assert_allclose(freq, jax.nn.softmax(logits[0] / 0.7), atol=0.04)
  # Temperature 0 rows are greedy whatever the others do.
  mixed = decode.sample_rows(logits, keys, jnp.array([0.0, 1.0, 0.0, 1.0]), top_k, top_p)
  assert mixed[0] == jnp.argmax(logits[0]) and mixed[2] == jnp.argmax(logits[2])


def test_buckets():
  assert buckets_for(64) == (16, 32, 64)
  assert buckets_for(100) == (16, 32, 64, 100)


@pytest.fixture(scope='module')
def served(lm_workdir):
  return models.load(lm_workdir)


@pytest.fixture(scope='module')
def engine(served):
  e = Engine(served.model, served.params, served.tokenizer, num_slots=4, steps_per_tick=4,
             version=served.version)
  e.warmup()
  e.start()
  yield e
  e.stop()


def run_all(engine, requests, timeout=120):
  """Submits every request, waits for all; returns their (text, finish_reason)."""
  done = {id(r): threading.Event() for r in requests}
  finish = {}

  def make_cb(r):
    def cb(delta, tokens, reason):
      if reason is not None:
        finish[id(r)] = reason
        done[id(r)].set()
    return cb

  for r in requests:
    r.on_update = make_cb(r)
    engine.submit(r)
  for r in requests:
    assert done[id(r)].wait(timeout)
  return [(r.text, finish[id(r)]) for r in requests]


def req(tokenizer, prompt, n, **kw):
  return Request(tokenizer.encode(prompt), n, on_update=None, **kw)


def test_greedy_matches_generate(engine, served):
  tok = served.tokenizer
  for prompt in ('The ', 'def f(x):\n  return'):
    ids = tok.encode(prompt)
    ref = decode.generate(served.model, served.params, ids[None], num_tokens=30,
                          rng=jax.random.key(0), temperature=0.0)
    [(text, reason)] = run_all(engine, [req(tok, prompt, 30, temperature=0.0)])
    assert text == tok.decode(ref[0, len(ids):]) and reason == 'length'


def test_a_tick_runs_only_the_steps_asked_for(served):
  """A tick that ends its requests decodes the steps they need, not steps_per_tick: the
  same tokens as a full tick up to there, and no cache position past them written."""
  model, params = served.model, served.params
  def tick(steps):
    cache = init_cache(model.config, 2, model.config.max_len)
    out, cache = engine_lib._decode_tick(
        model, params, cache, np.array([3, 5], np.int32), np.array([0, 2], np.int32),
        jax.random.split(jax.random.key(0), 2), np.zeros(2, np.float32),
        np.zeros(2, np.int32), np.ones(2, np.float32), np.int32(steps), num_steps=8,
        length=16)
    return np.asarray(out), jax.tree.map(np.asarray, cache)
  full, full_cache = tick(8)
  short, short_cache = tick(3)
  np.testing.assert_array_equal(short[:, :3], full[:, :3])
  assert not short[:, 3:].any()
  k = short_cache['k'][0]  # [B, K, S, D]: row 0 wrote positions 0..2, row 1 2..4
  assert k[0, :, :3].any() and not k[0, :, 3:].any()
  assert k[1, :, 2:5].any() and not k[1, :, 5:].any() and not k[1, :, :2].any()
  np.testing.assert_allclose(k[0, :, :3], full_cache['k'][0][0, :, :3], rtol=1e-6)


def test_a_request_does_not_depend_on_its_batch(engine, served):
  tok = served.tokenizer
  kw = dict(temperature=1.0, top_k=10, top_p=0.9, seed=7)
  [alone] = run_all(engine, [req(tok, 'The value', 25, **kw)])
  # The same request among 9 others (more than the 4 slots: some wait in the queue).
  others = [req(tok, p, 10 + 3 * i, temperature=0.8, seed=i)
            for i, p in enumerate(['a', 'import os', 'x = 1', 'The', 'class A:', 'if', 'for i',
                                   'None', 'yield'])]
  results = run_all(engine, others[:4] + [req(tok, 'The value', 25, **kw)] + others[4:])
  assert results[4] == alone
  assert all(reason == 'length' for _, reason in results)
  # Another seed gives another sample.
  [other] = run_all(engine, [req(tok, 'The value', 25, **dict(kw, seed=8))])
  assert other != alone


def test_stop_strings_and_max_tokens(engine, served):
  tok = served.tokenizer
  [(full, _)] = run_all(engine, [req(tok, 'The ', 40, temperature=0.0)])
  stop = full[5:7]
  [(text, reason)] = run_all(engine, [req(tok, 'The ', 40, temperature=0.0, stop=(stop,))])
  assert reason == 'stop' and text == full[:full.find(stop)]
  [(text, reason)] = run_all(engine, [req(tok, 'The ', 1, temperature=0.0)])
  assert reason == 'length' and text == full[:1]


def test_streamed_deltas_add_up_to_the_text(engine, served):
  tok = served.tokenizer
  deltas, finished = [], threading.Event()
  r = req(tok, 'The ', 30, temperature=0.0, stop=('zzz',))

  def cb(delta, tokens, reason):
    deltas.append(delta)
    if reason:
      finished.set()
  r.on_update = cb
  engine.submit(r)
  assert finished.wait(60)
  assert ''.join(deltas) == r.text and len(deltas) > 2


def test_cancel_frees_the_slot(engine, served):
  tok = served.tokenizer
  reasons, finished = [], threading.Event()
  r = req(tok, 'The ', 60, temperature=1.0)

  def cb(delta, tokens, reason):
    if reason:
      reasons.append(reason)
      finished.set()
    elif len(r.tokens) >= 8:
      engine.cancel(r)
  r.on_update = cb
  engine.submit(r)
  assert finished.wait(60) and reasons == ['cancelled']
  assert len(r.tokens) < 60
  assert run_all(engine, [req(tok, 'a', 5)])[0][1] == 'length'  # the engine goes on


def test_errors(engine, served):
  with pytest.raises(ValueError, match='exceeds the model context'):
    engine.submit(req(served.tokenizer, 'The ', 64))
  small = Engine(served.model, served.params, served.tokenizer, num_slots=1, max_queue=1)
  small.submit(req(served.tokenizer, 'a', 3))  # not started: it stays queued
  with pytest.raises(QueueFull, match='already queued'):
    small.submit(req(served.tokenizer, 'a', 3))


def test_swap_params_lets_running_requests_finish_on_old_weights(engine, served):
  tok = served.tokenizer
  zeros = jax.tree.map(jnp.zeros_like, served.params)
  first = req(tok, 'The ', 40, temperature=0.0)
  [(expected, _)] = run_all(engine, [req(tok, 'The ', 40, temperature=0.0)])
  started = threading.Event()
  finished = threading.Event()

  def cb(delta, tokens, reason):
    started.set()
    if reason:
      finished.set()
  first.on_update = cb
  engine.submit(first)
  assert started.wait(60)
  engine.swap_params(zeros, 'zeros')
  later = req(tok, 'The ', 10, temperature=0.0)
  [(later_text, _)] = run_all(engine, [later])
  assert finished.wait(60)
  assert first.text == expected and first.version == served.version
  # All-zero weights give uniform logits: greedy picks token 0 every time.
  assert later.version == 'zeros' and later_text == tok.decode([0] * 10)
  engine.swap_params(served.params, served.version)
  assert run_all(engine, [req(tok, 'The ', 40, temperature=0.0)])[0][0] == expected


def test_a_swap_waits_for_every_choice_of_a_started_response(engine, served):
  """6 choices of one response (one rid) on 4 slots: the swap is asked for as the first
  choice starts, with two still queued; they run on the old weights too, so the response
  has one version. A request submitted after the swap runs on the new weights."""
  tok = served.tokenizer
  [(expected, _)] = run_all(engine, [req(tok, 'The ', 40, temperature=0.0)])
  zeros = jax.tree.map(jnp.zeros_like, served.params)
  group = [req(tok, 'The ', 40, temperature=0.0) for _ in range(6)]
  for r in group:
    r.rid = 'cmpl-group'
  done = [threading.Event() for _ in group]
  swapped = []

  def callback(k):
    def cb(delta, tokens, reason):
      if not swapped:  # in the engine thread, as the first choice is prefilled
        swapped.append(engine.queue_depth)
        engine.swap_params(zeros, 'zeros')
      if reason is not None:
        done[k].set()
    return cb
  for k, r in enumerate(group):
    r.on_update = callback(k)
  with engine._cond:  # pylint: disable=protected-access  (all six queued at once)
    for r in group:
      engine.submit(r)
  assert all(d.wait(120) for d in done)
  assert swapped == [2]  # two choices were still queued when the swap was asked for
  later = req(tok, 'The ', 5, temperature=0.0)
  [(later_text, _)] = run_all(engine, [later])
  assert [r.version for r in group] == [served.version] * 6
  assert [r.text for r in group] == [expected] * 6
  assert later.version == 'zeros' and later_text == tok.decode([0] * 5)
  engine.swap_params(served.params, served.version)
  assert run_all(engine, [req(tok, 'The ', 40, temperature=0.0)])[0][0] == expected
