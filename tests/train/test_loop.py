"""The shared loop on a toy task: resume exactness, non-finite stop, eval writing."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genai.train import loop
from genai.train.checkpoints import Checkpointer


class _Iter:
  """A checkpointable iterator of random regression batches."""

  def __init__(self, seed=0):
    self.i, self.seed = 0, seed

  def __next__(self):
    rng = np.random.default_rng((self.seed, self.i))
    self.i += 1
    x = rng.normal(size=(8, 3)).astype(np.float32)
    return {'x': x, 'y': x @ np.array([1.0, -2.0, 0.5], np.float32)}

  def get_state(self):
    return {'i': self.i}

  def set_state(self, state):
    self.i = state['i']


def _task(nan_at=None, dropout=True):
  tx = optax.adam(0.05)

  def init_state(rng):
    w = jax.random.normal(rng, (3,))
    return {'w': w, 'opt': tx.init(w), 'step': jnp.zeros((), jnp.int32)}

  def train_step(state, batch, rng):
    def loss_fn(w):
      noise = 0.01 * jax.random.normal(rng, w.shape) if dropout else 0.0  # uses the step rng
      return jnp.mean((batch['x'] @ (w + noise) - batch['y']) ** 2)
    loss, g = jax.value_and_grad(loss_fn)(state['w'])
    if nan_at is not None:
      loss = jnp.where(state['step'] + 1 == nan_at, jnp.nan, loss)
    u, opt = tx.update(g, state['opt'], state['w'])
    return ({'w': optax.apply_updates(state['w'], u), 'opt': opt, 'step': state['step'] + 1},
            {'loss': loss})

  def evaluate(state, step):
    return {'w0': state['w'][0], 'note': f'step {step}'}

  return loop.Task(init_state=init_state, train_step=train_step, train_iter=_Iter(),
                   evaluate=evaluate, examples_per_step=8)


def _train(task, workdir, **kw):
  args = dict(num_steps=10, seed=1, log_every=2, eval_every=5, checkpoint_every=3,
              print_fn=lambda s: None)
  args.update(kw)
  return loop.train(task, workdir=str(workdir), **args)


@pytest.mark.parametrize('steps_per_call', [1, 4])
def test_resume_is_bit_exact(tmp_path, steps_per_call):
  full = _train(_task(), tmp_path / 'a', steps_per_call=steps_per_call)
  _train(_task(), tmp_path / 'b', stop_after=4, steps_per_call=steps_per_call)  # pre-empted
  assert Checkpointer(str(tmp_path / 'b/checkpoints')).latest_step() == 4
  resumed = _train(_task(), tmp_path / 'b', steps_per_call=steps_per_call)  # same command
  np.testing.assert_array_equal(full['w'], resumed['w'])
  assert int(resumed['step']) == 10


def test_steps_per_call_runs_every_step_with_its_own_rng(tmp_path):
  """K steps per call is the same computation as K calls (up to float reassociation)."""
  one = _train(_task(), tmp_path / 'a', steps_per_call=1)
  four = _train(_task(), tmp_path / 'b', steps_per_call=4)  # calls of 4, 4, 2 steps
  assert int(four['step']) == 10
  np.testing.assert_allclose(one['w'], four['w'], rtol=1e-5)


def test_seed_changes_the_run(tmp_path):
  a = _train(_task(), tmp_path / 'a')
  b = _train(_task(), tmp_path / 'b', seed=2)
  assert not np.array_equal(a['w'], b['w'])


@pytest.mark.parametrize('steps_per_call', [1, 3])
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, steps_per_call):
  # With 3 steps per call, step 5 falls inside the call 4..6: still reported as step 5.
  with pytest.raises(loop.NonFiniteLossError, match=r'at step 5;.*last good checkpoint is step 3'):
    _train(_task(nan_at=5), tmp_path, steps_per_call=steps_per_call)
  ckpt = Checkpointer(str(tmp_path / 'checkpoints'))
  assert ckpt.all_steps() == [3]
  abstract = jax.eval_shape(_task().init_state, jax.random.key(0))
  state, data = ckpt.restore(3, abstract)
  assert np.all(np.isfinite(state['w'])) and data == {'i': 3}


def test_eval_results_are_written_to_tensorboard(tmp_path):
  lines = []
  _train(_task(), tmp_path, print_fn=lines.append)
  assert any(l.startswith('eval @ 5: w0') for l in lines)
  assert any('--- note ---' in l for l in lines)
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(tmp_path))
  assert any('ETA' in l for l in lines)


def test_already_finished_run_returns_immediately(tmp_path):
  _train(_task(), tmp_path)
  lines = []
  _train(_task(), tmp_path, print_fn=lines.append)
  assert any('Already trained' in l for l in lines)


def test_rolled_and_unrolled_calls_give_the_same_state():
  """Task.unroll_steps only changes how a call's steps compile (transformers keep a rolled
  scan), not what they compute."""
  task = _task()
  state = task.init_state(jax.random.key(0))
  batches = loop.stack_batches([next(task.train_iter) for _ in range(4)])
  out = {}
  for unroll in (True, False):
    step = loop.make_multi_step(task.train_step, jax.random.key(1), unroll=unroll)
    out[unroll] = step(jax.tree.map(jnp.copy, state), batches, np.int32(1))
  for a, b in zip(jax.tree.leaves(out[True]), jax.tree.leaves(out[False])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
