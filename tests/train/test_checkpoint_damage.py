"""A damaged newest checkpoint (a truncated or missing array file, a missing _METADATA or
manifest.ocdbt): named by its step and what is wrong; a resuming run falls back to the
newest intact step, moving the damaged one aside (train.on_damaged_checkpoint='fallback'),
or refuses with the way out ('fail'); readers name the step in one line."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genai import errors
from genai.train import loop
from genai.train import workdir as workdir_lib
from genai.train.checkpoints import Checkpointer


class _Iter:
  def __init__(self):
    self.i = 0

  def __next__(self):
    rng = np.random.default_rng(self.i)
    self.i += 1
    x = rng.normal(size=(8, 64)).astype(np.float32)
    return {'x': x, 'y': x.sum(-1)}

  def get_state(self):
    return {'i': self.i}

  def set_state(self, state):
    self.i = state['i']


def _task(width=64):
  tx = optax.adam(0.01)

  def init_state(rng):
    # 64 x 64 float32 = 16 kB: stored in an array file of its own (OCDBT inlines < 1 kB).
    params = {'w': jax.random.normal(rng, (width, 64)) * 0.01}
    return {'params': params, 'opt': tx.init(params), 'step': jnp.zeros((), jnp.int32)}

  def train_step(state, batch, rng):
    del rng
    def loss_fn(p):
      return jnp.mean((batch['x'] @ p['w'][:64].sum(-1) - batch['y']) ** 2)
    loss, g = jax.value_and_grad(loss_fn)(state['params'])
    u, opt = tx.update(g, state['opt'], state['params'])
    return ({'params': optax.apply_updates(state['params'], u), 'opt': opt,
             'step': state['step'] + 1}, {'loss': loss})

  return loop.Task(init_state=init_state, train_step=train_step, train_iter=_Iter())


def _train(workdir, num_steps=6, **kw):
  return loop.train(_task(kw.pop('width', 64)), workdir=str(workdir), num_steps=num_steps,
                    seed=0, log_every=100, eval_every=0, checkpoint_every=2,
                    print_fn=lambda s: None, **kw)


def _array_files(step_dir):
  d = os.path.join(step_dir, 'state', 'ocdbt.process_0', 'd')
  return sorted((os.path.join(d, f) for f in os.listdir(d)), key=os.path.getsize)


def _truncate(step_dir):
  biggest = _array_files(step_dir)[-1]
  os.truncate(biggest, os.path.getsize(biggest) // 2)


def _remove_array_file(step_dir):
  os.remove(_array_files(step_dir)[-1])


def _remove_metadata(step_dir):
  os.remove(os.path.join(step_dir, 'state', '_METADATA'))


def _remove_manifest(step_dir):
  os.remove(os.path.join(step_dir, 'state', 'manifest.ocdbt'))


DAMAGE = {
    'truncated array file': (_truncate, r'array params\.w cannot be read, an array file is '
                             r'truncated or missing \(OUT_OF_RANGE'),
    'missing array file': (_remove_array_file, r'array \S+ cannot be read, an array file is '
                           r'truncated or missing \((FAILED_PRECONDITION|OUT_OF_RANGE|NOT_FOUND|'
                           r'DATA_LOSS)'),
    'missing _METADATA': (_remove_metadata, r'state/_METADATA is missing'),
    'missing manifest.ocdbt': (_remove_manifest, r'state/manifest\.ocdbt is missing'),
}


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A run of 6 steps with checkpoints 2, 4, 6, and the final state of that run."""
  wd = tmp_path_factory.mktemp('trained')
  final = _train(wd)
  return str(wd), jax.device_get(final)


def _copy(trained, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  wd = str(tmp_path / 'wd')
  shutil.copytree(trained[0], wd)
  return wd


@pytest.mark.parametrize('kind', [k if k == 'truncated array file' else  # one kind in the fast tier
                                  pytest.param(k, marks=pytest.mark.slow) for k in DAMAGE])
def test_fallback_moves_the_damaged_step_aside_and_resumes_bit_exact(trained, tmp_path,
                                                                     capsys, kind):
  wd = _copy(trained, tmp_path)
  damage, problem = DAMAGE[kind]
  damage(os.path.join(wd, 'checkpoints', '6'))
  with pytest.raises(errors.DamagedCheckpointError, match=r'checkpoint step 6 in .* is '
                     rf'damaged: {problem}.*; move it aside \(mv \S+/6 \S+/6.damaged\) to use '
                     'step 4'):
    workdir_lib.restore_params(wd)  # a reader names the step and the way out
  capsys.readouterr()
  final = _train(wd, num_steps=8)  # resumes from 4, trains 5..8
  err = capsys.readouterr().err
  assert f'warning: checkpoint step 6 in {wd}/checkpoints is damaged (' in err
  assert f"moved it to {wd}/checkpoints/6.damaged and resumed from step 4" in err
  assert sorted(os.listdir(os.path.join(wd, 'checkpoints'))) == ['4', '6', '6.damaged', '8']
  assert int(final['step']) == 8
  # Steps 5 and 6 again from step 4's state and data position: the same numbers as before.
  state6, _ = Checkpointer(os.path.join(wd, 'checkpoints'), read_only=True).restore(6, None)
  np.testing.assert_array_equal(state6['params']['w'], trained[1]['params']['w'])


def test_fail_policy_refuses_with_the_command_and_moves_nothing(trained, tmp_path):
  wd = _copy(trained, tmp_path)
  _truncate(os.path.join(wd, 'checkpoints', '6'))
  with pytest.raises(errors.DamagedCheckpointError) as e:
    _train(wd, num_steps=8, on_damaged_checkpoint='fail')
  assert e.value.step == 6
  msg = str(e.value)
  assert msg.startswith(f'checkpoint step 6 in {wd}/checkpoints is damaged: array params.w')
  assert (f'move it aside (mv {wd}/checkpoints/6 {wd}/checkpoints/6.damaged) to use step 4'
          in msg and '--config.train.on_damaged_checkpoint=fallback' in msg)
  assert sorted(os.listdir(os.path.join(wd, 'checkpoints'))) == ['2', '4', '6']


def test_every_step_damaged_is_refused(trained, tmp_path):
  wd = _copy(trained, tmp_path)
  for step in ('2', '4', '6'):
    _remove_metadata(os.path.join(wd, 'checkpoints', step))
  with pytest.raises(errors.DamagedCheckpointError,
                     match=r'every checkpoint in \S+ is damaged \(step 6: state/_METADATA is '
                     r'missing; step 4: .*; step 2: .*\); move \S+ aside'):
    _train(wd, num_steps=8)
  assert sorted(os.listdir(os.path.join(wd, 'checkpoints'))) == ['2', '4', '6']


def test_a_checkpoint_of_another_shape_is_not_damage(trained, tmp_path):
  wd = _copy(trained, tmp_path)
  with pytest.raises(errors.CheckpointError, match=r'checkpoint step 6 in .* does not fit this '
                     r"run's state \(.*shape.*\); resume with the config") as e:
    _train(wd, num_steps=8, width=65)
  assert not isinstance(e.value, errors.DamagedCheckpointError)
  assert sorted(os.listdir(os.path.join(wd, 'checkpoints'))) == ['2', '4', '6']


def test_a_bad_policy_is_a_usage_error(tmp_path):
  with pytest.raises(errors.UsageError, match="train.on_damaged_checkpoint='maybe' is not a"):
    _train(tmp_path, on_damaged_checkpoint='maybe')


def test_a_step_never_saved_is_named_with_the_steps_there_are(trained):
  with pytest.raises(errors.CheckpointError,
                     match=r'there is no checkpoint step 5 in \S+ \(its steps are 2, 4, 6\); '
                     r'pick one of its steps') as e:
    workdir_lib.restore_params(trained[0], step=5)
  assert not isinstance(e.value, errors.DamagedCheckpointError)
