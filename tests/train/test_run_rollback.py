"""workdir.run: a run that fails before its first step leaves the workdir as it found it
(new files and folders removed, rewritten files restored); after it, everything stays."""
import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import common
from genai.train import loop
from genai.train import workdir as workdir_lib


class _Iter:
  i = 0

  def __next__(self):
    self.i += 1
    return {'x': np.full((4,), self.i, np.float32)}

  def get_state(self):
    return {'i': self.i}

  def set_state(self, s):
    self.i = s['i']


def _config(**train):
  return ml_collections.ConfigDict({
      'experiment': 'toy', 'seed': 0, 'parallel': None,
      'train': common.train_config(**{**dict(batch_size=4, num_steps=4, log_every=2,
                                             eval_every=0, checkpoint_every=2), **train})})


def _build(fail_in=None, nan_at=None):
  def build_task(config, workdir):
    with open(os.path.join(workdir, 'tokenizer.json'), 'w') as f:  # as the LM does
      json.dump({'name': 'char'}, f)
    if fail_in == 'build':
      raise ValueError('data.path is empty; point it at text')

    def init_state(rng):
      del rng
      if fail_in == 'init':
        raise ValueError('model.d_model=5 must be even')
      return {'w': jnp.zeros(()), 'step': jnp.zeros((), jnp.int32)}

    def train_step(state, batch, rng):
      del rng
      loss = jnp.mean(batch['x'])
      if nan_at is not None:
        loss = jnp.where(state['step'] + 1 == nan_at, jnp.nan, loss)
      return {'w': state['w'] + 1, 'step': state['step'] + 1}, {'loss': loss}

    return loop.Task(init_state=init_state, train_step=train_step, train_iter=_Iter())
  return build_task


def _snapshot(path):
  out = {}
  for d, _, files in os.walk(path):
    for f in files:
      with open(os.path.join(d, f), 'rb') as fh:
        out[os.path.relpath(os.path.join(d, f), path)] = fh.read()
  return out


@pytest.mark.parametrize('fail_in', ['build', 'init'])
def test_a_failure_before_the_first_step_undoes_the_run(tmp_path, fail_in):
  fresh = tmp_path / 'a' / 'b'
  with pytest.raises(ValueError):
    workdir_lib.run(_config(), str(fresh), _build(fail_in), print_fn=lambda _: None)
  assert not (tmp_path / 'a').exists()  # the folders it made, too

  kept = tmp_path / 'kept'
  kept.mkdir()
  (kept / 'notes.txt').write_text('mine')
  (kept / 'config.json').write_text('{"old": 1}')
  before = _snapshot(kept)
  with pytest.raises(ValueError):
    workdir_lib.run(_config(), str(kept), _build(fail_in), print_fn=lambda _: None)
  assert _snapshot(kept) == before and sorted(os.listdir(kept)) == ['config.json', 'notes.txt']


def test_a_resumed_run_that_fails_keeps_its_checkpoints(tmp_path):
  wd = str(tmp_path)
  workdir_lib.run(_config(), wd, _build(), print_fn=lambda _: None)
  before = _snapshot(wd)
  with pytest.raises(ValueError):  # a resume with a broken config fails before its step 5
    workdir_lib.run(_config(num_steps=8), wd, _build('build'),
                    print_fn=lambda _: None)
  assert _snapshot(wd) == before  # config.json back to the trained run's


def test_a_failure_after_the_first_step_keeps_what_the_run_wrote(tmp_path):
  with pytest.raises(loop.NonFiniteLossError):
    workdir_lib.run(_config(steps_per_call=1), str(tmp_path), _build(nan_at=4),
                    print_fn=lambda _: None)
  names = set(os.listdir(tmp_path))
  assert {'config.json', 'tokenizer.json', 'checkpoints'} <= names
  assert os.listdir(tmp_path / 'checkpoints') == ['2']
