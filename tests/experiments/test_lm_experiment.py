"""The LM experiment end to end: every config in tiny mode, kill/resume, SIGTERM, errors."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import REPO, SHARED, load_config
from experiments import lm
from genai.families import lm as lm_family
from genai.train.checkpoints import Checkpointer

GPT2_RANKS = SHARED / 'data/gpt2_bpe/gpt2.tiktoken'
LM_CONFIGS = sorted(p for p in glob.glob(str(REPO / 'configs/lm/*.py'))
                    if os.path.basename(p) not in ('__init__.py', 'base.py'))


def test_config_list_is_not_empty():
  assert len(LM_CONFIGS) >= 4


@pytest.mark.slow  # a training per config (SmolLM2 weights in one)
@pytest.mark.parametrize('path', LM_CONFIGS, ids=os.path.basename)
def test_every_config_trains_in_runlocal_mode(path, tmp_path):
  config = load_config(path)
  if config.tokenizer.name == 'gpt2_bpe':
    if not GPT2_RANKS.exists():
      pytest.skip(f'needs {GPT2_RANKS}')
    config.tokenizer.bpe_ranks_path = str(GPT2_RANKS)
  if config.model.get('init_from') == 'smollm2':
    from genai.pretrained import fetch  # pylint: disable=g-import-not-at-top
    if not fetch.smollm2_cache_path().exists():
      pytest.skip('needs SmolLM2: python -m genai.pretrained.fetch smollm2')
  with tfds.testing.mock_data(num_examples=50):  # TFDS configs run on generated data offline
    state = lm.train_and_evaluate(config, str(tmp_path))
  assert int(state['step']) == config.train.num_steps
  assert Checkpointer(str(tmp_path / 'checkpoints')).latest_step() == config.train.num_steps
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state['params']))


@pytest.mark.slow  # a training
def test_sampling_and_bleu_from_a_trained_workdir(tmp_path):
  config = load_config(REPO / 'configs/lm/pydoc_char.py')
  bleu_file = tmp_path / 'bleu.jsonl'
  bleu_file.write_text(json.dumps({'prompt': 'The ', 'reference': 'following'}) + '\n')
  config.eval.bleu_file = str(bleu_file)
  workdir = str(tmp_path / 'w')
  lm.train_and_evaluate(config, workdir)
  texts = lm_family.sample(workdir, 'The ', num_tokens=20, num_samples=3, temperature=1.0,
                           top_k=5, top_p=0.9, seed=0)
  assert len(texts) == 3 and all(t.startswith('The ') and len(t) == 24 for t in texts)
  assert texts == lm_family.sample(workdir, 'The ', num_tokens=20, num_samples=3,
                                   temperature=1.0, top_k=5, top_p=0.9, seed=0)
  with pytest.raises(ValueError, match='not in its vocabulary'):
    lm_family.sample(workdir, '\u6771\u4eac', num_tokens=5)


def _cmd(workdir, *overrides):
  return [sys.executable, '-m', 'experiments.lm', '--config',
          'configs/lm/pydoc_char.py:runlocal', f'--workdir={workdir}',
          '--config.model.d_model=64', '--config.model.num_layers=2', '--config.data.block_size=32',
          '--config.train.batch_size=16', '--config.eval.sample_tokens=0', *overrides]


def _final_params(workdir):
  _, _, params, _ = lm_family.load_workdir(str(workdir))
  return jax.tree.leaves(params)


def _finished_steps(workdir):
  """Finalised checkpoint steps, read without touching the writer's temporary dirs."""
  d = workdir / 'checkpoints'
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if d.exists() else []


def _wait_for_checkpoint(workdir, proc, timeout=300):
  t0 = time.time()
  while time.time() - t0 < timeout:
    steps = _finished_steps(workdir)
    if steps:
      return steps
    assert proc.poll() is None, proc.communicate()[0]
    time.sleep(0.05)
  raise TimeoutError('no checkpoint appeared')


ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONUNBUFFERED='1')
RUN = ['--config.train.num_steps=300', '--config.train.checkpoint_every=20',
       '--config.train.eval_every=1000', '--config.train.log_every=50']


@pytest.mark.slow  # training subprocesses
def test_killed_run_resumes_bit_identical(tmp_path):
  """SIGKILL partway, re-run the same command: final params equal an uninterrupted run."""
  ref = tmp_path / 'ref'
  subprocess.run(_cmd(ref, *RUN), cwd=REPO, env=ENV, check=True, capture_output=True)

  work = tmp_path / 'killed'
  proc = subprocess.Popen(_cmd(work, *RUN), cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  _wait_for_checkpoint(work, proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  killed_at = _finished_steps(work)[-1]
  assert killed_at is not None and killed_at < 300, killed_at

  out = subprocess.run(_cmd(work, *RUN), cwd=REPO, env=ENV, check=True, capture_output=True,
                       text=True).stdout
  assert f'Resumed from step {killed_at}' in out
  for a, b in zip(_final_params(ref), _final_params(work)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # a training subprocess
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
  proc = subprocess.Popen(_cmd(tmp_path, *RUN), cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  _wait_for_checkpoint(tmp_path, proc)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out
  assert 'SIGTERM: saved checkpoint at step' in out
  step = int(out.split('SIGTERM: saved checkpoint at step ')[1].split(';')[0])
  assert _finished_steps(tmp_path)[-1] == step


@pytest.mark.slow  # a subprocess
def test_bad_config_key_on_the_command_line(tmp_path):
  out = subprocess.run(_cmd(tmp_path, '--config.model.n_layer=3'), cwd=REPO, env=ENV,
                       capture_output=True, text=True)
  assert out.returncode != 0
  assert 'n_layer' in out.stderr


def test_model_max_len_defaults_to_the_block_and_can_be_raised():
  config = load_config(REPO / 'configs/lm/pydoc_char.py')
  block = config.data.block_size
  assert lm_family.make_model(config, 11).config.max_len == block
  config.model.max_len = 4 * block  # sample past the training block
  assert lm_family.make_model(config, 11).config.max_len == 4 * block
  config.model.max_len = block - 1
  with pytest.raises(ValueError, match='raise model.max_len'):
    lm_family.make_model(config, 11)


@pytest.mark.parametrize('overrides, error, match', [
    (dict(data=dict(source='files', path='/nonexistent/corpus.txt')), ValueError,
     'nonexistent'),
    (dict(tokenizer=dict(name='wordpiece')), ValueError, 'wordpiece'),
    (dict(data=dict(source='tfds', tfds_name='no_such_dataset_xyz')), ValueError,
     'no_such_dataset_xyz'),
    (dict(data=dict(block_size=10_000_000)), ValueError, 'block_size'),
    (dict(model=dict(arch='gpt5')), ValueError, 'model.arch'),
    (dict(optimizer=dict(name='lamb')), ValueError, 'optimizer.name'),
])
def test_bad_inputs_give_clear_errors(overrides, error, match, tmp_path):
  config = load_config(REPO / 'configs/lm/pydoc_char.py')
  config.update_from_flattened_dict(
      {f'{k}.{kk}': vv for k, v in overrides.items() for kk, vv in v.items()})
  with pytest.raises(error, match=match):
    lm.train_and_evaluate(config, str(tmp_path))


def test_empty_corpus_error(tmp_path):
  empty = tmp_path / 'empty.txt'
  empty.write_text('')
  config = load_config(REPO / 'configs/lm/pydoc_char.py')
  config.data.source, config.data.path = 'files', str(empty)
  with pytest.raises(ValueError, match='empty'):
    lm.train_and_evaluate(config, str(tmp_path / 'w'))


def test_sampling_a_directory_that_is_not_a_workdir(tmp_path):
  with pytest.raises(FileNotFoundError, match='config.json'):
    lm_family.sample(str(tmp_path), 'a', num_tokens=3)


@pytest.mark.slow  # a subprocess
def test_sampling_command_line_with_moderation(lm_workdir, tmp_path):
  rules = tmp_path / 'rules.json'
  rules.write_text(json.dumps({'rules': [{'name': 'no_e', 'type': 'regex', 'pattern': 'e',
                                          'action': 'redact'}]}))
  r = subprocess.run([sys.executable, '-m', 'experiments.lm', f'--workdir={lm_workdir}',
                      '--sample', '--prompt=The ', '--num_tokens=30', '--temperature=0',
                      f'--moderation={rules}'], cwd=REPO, env=ENV, capture_output=True,
                     text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  header, text = r.stdout.split('===\n', 1)
  assert '(moderation: no_e)' in header and 'e' not in text.replace('[REDACTED]', '')
