"""Every command line turns a user error into one line `error: <what>; <fix>` on stderr with
exit code 2 (the command line) or 1 (anything else), no traceback, and a run that fails
before its first step leaves its workdir as it found it (genai/errors.py, docs/errors.md).

Subprocesses of the real entry points: slow (each pays the TensorFlow import)."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

ENV = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2')
ENV.pop('GENAI_TRACEBACK', None)
LM = ['-m', 'experiments.lm', '--config', 'configs/lm/pydoc_char.py:runlocal']
TINY = ['--config.model.d_model=32', '--config.train.eval_every=100']


def run(*args, timeout=300):
  return subprocess.run([sys.executable, *args], cwd=REPO, env=ENV, capture_output=True,
                        text=True, timeout=timeout)


def error_line(r, code):
  """The last stderr line, after checking the exit code and that no traceback came."""
  assert r.returncode == code, r.stderr[-3000:]
  assert 'Traceback' not in r.stderr, r.stderr[-3000:]
  line = r.stderr.strip().splitlines()[-1]
  assert line.startswith('error: '), r.stderr[-3000:]
  return line


def test_lm_data_errors_leave_the_workdir_as_it_was(tmp_path):
  binary = tmp_path / 'corpus.bin'
  binary.write_bytes(b'text\n\x00\x00\xd0\x9f\xff')
  existing = tmp_path / 'existing'
  existing.mkdir()
  (existing / 'notes.txt').write_text('mine')
  r = run(*LM, '--config.data.source=files', f'--config.data.path={binary}',
          f'--workdir={existing}')
  assert error_line(r, 1) == (
      f'error: {binary} looks like a binary file, not text (a NUL byte at offset 5; byte 0xff '
      'at offset 9, line 2, column 5 is not UTF-8); point data.path at text files only (check '
      'the glob)')
  assert os.listdir(existing) == ['notes.txt']  # no config.json, tokenizer, checkpoints/
  short = tmp_path / 'short.txt'
  short.write_text('hello')
  fresh = tmp_path / 'new' / 'run'
  r = run(*LM, '--config.data.source=files', f'--config.data.path={short}',
          f'--workdir={fresh}')
  assert error_line(r, 1) == (
      f"error: the corpus (data.path='{short}') is 5 tokens (5 characters), shorter than one "
      'window of data.block_size + 1 = 17 tokens; use more text or a smaller data.block_size')
  assert not (tmp_path / 'new').exists()
  r = run(*LM, '--config.model.num_heads=5', *TINY, f'--workdir={fresh}', '--verbose_errors')
  assert r.returncode == 1 and 'Traceback' in r.stderr  # the traceback only on request
  assert r.stderr.strip().splitlines()[-1] == (
      'error: model.d_model=32 must be divisible by model.num_heads=5.')
  assert not (tmp_path / 'new').exists()


def test_usage_errors_exit_2(tmp_path):
  r = run(*LM, '--config.train.num_step=3', f'--workdir={tmp_path}')
  assert error_line(r, 2).startswith(
      "error: --config.train.num_step: 'train.num_step' is not a config field; did you mean "
      'train.num_steps')
  r = run('-m', 'experiments.lm', '--config', 'configs/lm/pydoc_char.py')
  assert error_line(r, 2) == 'error: --workdir is required.'
  r = run('-m', 'genai.export', '--workdir', str(tmp_path))
  assert error_line(r, 2) == (
      'error: --out is required: python -m genai.export --workdir W --out DIR.')
  r = run('-m', 'genai.evaluation.fid', '--samples', str(tmp_path / 'none.npz'), '--ref',
          'digits:test')
  assert error_line(r, 1).startswith(f"error: --samples '{tmp_path}/none.npz' does not exist")
  r = run('-m', 'experiments.retrain', 'rollback')
  assert error_line(r, 2) == ('error: python -m experiments.retrain rollback: the following '
                              'arguments are required: --root; see python -m experiments.retrain'
                              ' rollback --help')
  r = run('-m', 'experiments.retrain', 'status', f'--root={tmp_path}/none')
  assert error_line(r, 1).startswith(f'error: {tmp_path}/none/registry.json not found')
  r = run('-m', 'genai.safety.audit', 'generations', '--workdir', str(tmp_path), '--out',
          str(tmp_path / 'out'))
  assert 'not a genai LM workdir' in error_line(r, 1)


def test_an_image_folder_with_bad_files(tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  folder = tmp_path / 'faces'
  folder.mkdir()
  for i in range(4):
    Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(folder / f'ok{i}.png')
  Image.fromarray(np.zeros((1, 1), np.uint8)).save(folder / 'dot.png')
  (folder / 'junk.jpg').write_bytes(b'\x00' * 10)
  r = run('-m', 'experiments.gan', '--config', 'configs/gan/digits.py:runlocal',
          '--config.data.source=folder', f'--config.data.path={folder}',
          '--config.data.image_size=16', f'--workdir={tmp_path}/wd')
  line = error_line(r, 1)
  assert line.startswith(f"error: 2 of 6 images under '{folder}' cannot be used: ")
  assert f"'{folder}/dot.png' (1x1, below data.min_image_size=8)" in line
  assert f"'{folder}/junk.jpg' (unreadable:" in line
  assert line.endswith('or set data.skip_bad_images=True to train without them')
  assert not (tmp_path / 'wd').exists()


def _truncate_newest_array(step_dir):
  d = os.path.join(step_dir, 'state', 'ocdbt.process_0', 'd')
  biggest = max((os.path.join(d, f) for f in os.listdir(d)), key=os.path.getsize)
  os.truncate(biggest, 100)


def test_a_damaged_checkpoint_on_every_path(tmp_path):
  wd = str(tmp_path / 'wd')
  train = [*LM, *TINY, '--config.train.steps_per_call=1', '--config.train.checkpoint_every=2',
           f'--workdir={wd}']
  r = run(*train, '--config.train.num_steps=4')
  assert r.returncode == 0, r.stderr[-3000:]
  ckpts = os.path.join(wd, 'checkpoints')
  assert sorted(os.listdir(ckpts)) == ['2', '4']
  _truncate_newest_array(os.path.join(ckpts, '4'))
  fix = (f'move it aside (mv {ckpts}/4 {ckpts}/4.damaged) to use step 2; a training run does '
         'so itself with --config.train.on_damaged_checkpoint=fallback')
  # Readers: the sample command and the server name the step and the way out. (Which
  # array of the truncated file they name may differ: the reads run concurrently.)
  def names_step_4(r):
    line = error_line(r, 1)
    assert line.startswith(f'error: checkpoint step 4 in {ckpts} is damaged: array ') and (
        'an array file is truncated or missing (OUT_OF_RANGE: ' in line and
        line.endswith(fix)), line
  names_step_4(run('-m', 'experiments.lm', f'--workdir={wd}', '--sample', '--num_tokens=4'))
  names_step_4(run('-m', 'genai.serve', f'--workdir={wd}', '--port=1'))
  # Training with on_damaged_checkpoint=fail refuses; nothing moves, nothing is written.
  names_step_4(run(*train, '--config.train.num_steps=6',
                   '--config.train.on_damaged_checkpoint=fail'))
  assert sorted(os.listdir(ckpts)) == ['2', '4']
  # The default falls back to step 2, says so, and keeps the damaged step aside.
  r = run(*train, '--config.train.num_steps=6')
  assert r.returncode == 0, r.stderr[-3000:]
  assert (f'warning: checkpoint step 4 in {ckpts} is damaged (array ' in r.stderr and
          f'moved it to {ckpts}/4.damaged and resumed from step 2' in r.stderr)
  assert 'Resumed from step 2' in r.stdout
  assert sorted(os.listdir(ckpts)) == ['2', '4', '4.damaged', '6']
  shutil.rmtree(wd)
