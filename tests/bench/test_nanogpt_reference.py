"""benchmarks/nanogpt_reference.py: the PyTorch re-implementation of nanoGPT's baby run is
nanoGPT's model and schedule (parameter count, tying, init, the lr formula), and its
whole-split evaluation uses genai's validation windows; a tiny run writes its result file."""
import argparse
import math
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from benchmarks import nanogpt_reference as ref  # pylint: disable=wrong-import-position
from benchmarks import results  # pylint: disable=wrong-import-position
from genai.data import sequences  # pylint: disable=wrong-import-position


def test_model_is_nanogpts_baby_shape():
  torch.manual_seed(0)
  model = ref.GPT(vocab=65, block=64, layers=4, heads=4, width=128)
  n = sum(p.numel() for p in model.parameters())
  # Per block (no biases): 2 LayerNorm weights + qkv + out + fc + proj = 196,864; plus the
  # tied token table, the position table and the final LayerNorm weight.
  assert n == 4 * (2 * 128 + 128 * 384 + 128 * 128 + 2 * 128 * 512) + 65 * 128 + 64 * 128 + 128
  # nanoGPT's get_num_params leaves the position table out: its "0.80M".
  assert round((n - 64 * 128) / 1e6, 2) == 0.80
  assert model.lm_head.weight is model.wte.weight
  proj = model.h[0].mlp_c_proj.weight.detach().numpy()
  qkv = model.h[0].c_attn.weight.detach().numpy()
  assert abs(proj.std() - 0.02 / math.sqrt(8)) < 1e-3 and abs(qkv.std() - 0.02) < 1e-3


def test_lr_schedule_is_nanogpts_get_lr():
  kw = dict(lr=1e-3, min_lr=1e-4, warmup=100, decay_iters=2000)
  assert ref.get_lr(0, **kw) == pytest.approx(1e-3 / 101)
  assert ref.get_lr(99, **kw) == pytest.approx(1e-3 * 100 / 101)
  assert ref.get_lr(100, **kw) == pytest.approx(1e-3)
  assert ref.get_lr(1050, **kw) == pytest.approx(1e-4 + 0.5 * 9e-4)
  assert ref.get_lr(2000, **kw) == pytest.approx(1e-4)
  assert ref.get_lr(2500, **kw) == 1e-4


@pytest.mark.slow  # a training
def test_run_trains_and_scores_genais_validation_windows(tmp_path):
  rng = np.random.default_rng(0)
  text = torch.tensor(rng.integers(0, 8, 3000), dtype=torch.long)
  train, val = text[:2700], text[2700:]
  args = argparse.Namespace(block_size=16, batch_size=4, layers=1, heads=2, width=16, lr=1e-3,
                            min_lr=1e-4, warmup=2, steps=5, eval_iters=2, weight_decay=0.1,
                            grad_clip=1.0, eval_interval=0, eval_batch_size=0, sample_tokens=0,
                            out_dir='')
  row = ref.run(0, train, val, 8, args)
  windows = sequences.TokenWindows(val.numpy(), block_size=16, stride=16)
  assert row['val_windows'] == len(windows) == 18
  assert row['steps'] == 5 and 1.5 < row['val_loss_whole_split'] < 3.0
  assert row == ref.run(0, train, val, 8, args) | {'train_seconds': row['train_seconds'],
                                                   'ms_per_step': row['ms_per_step'],
                                                   'eval_seconds': row['eval_seconds']}
  # nanoGPT's loop with periodic evaluation: at steps 2 and 4 and at the end, each with a
  # generation and a checkpoint (the work benchmarks/lm_command_cache.py matches).
  out = str(tmp_path)
  periodic = ref.run(0, train, val, 8, argparse.Namespace(
      **{**vars(args), 'eval_interval': 2, 'eval_batch_size': 3, 'sample_tokens': 20,
         'out_dir': out}))
  assert periodic['eval_seconds'] > 0 and periodic['steps'] == 5
  ckpt = torch.load(os.path.join(out, 'ckpt.pt'))
  assert ckpt['iter_num'] == 5 and 'optimizer' in ckpt


def test_generate_is_nanogpts_cropped_context_sampling():
  torch.manual_seed(0)
  model = ref.GPT(vocab=7, block=4, layers=1, heads=1, width=8).eval()
  out = model.generate(torch.zeros((1, 1), dtype=torch.long), 10)
  assert out.shape == (1, 11) and int(out.max()) < 7


@pytest.mark.slow  # a training subprocess
def test_a_tiny_run_writes_its_result_file(tmp_path):
  rng = np.random.default_rng(0)
  (tmp_path / 'text.txt').write_text(''.join(rng.choice(list('abcdefgh \n'), 4000)))
  subprocess.run([sys.executable, '-m', 'benchmarks.nanogpt_reference', '--data',
                  str(tmp_path / 'text.txt'), '--seeds', '0,1', '--steps', '3', '--batch_size',
                  '2', '--block_size', '8', '--layers', '1', '--heads', '1', '--width', '8',
                  '--warmup', '1', '--eval_iters', '2', '--result_name', 'tiny',
                  '--results_dir', str(tmp_path)], check=True, capture_output=True,
                 cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
  r = results.load(str(tmp_path / 'tiny.json'))
  assert results.validate(r) == [] and r['name'] == 'tiny'
  assert r['machine']['torch'] == torch.__version__  # the reference ran here
  assert r['headline']['quality'].startswith('val loss over seeds 0-1: whole split ')
  assert "nanoGPT's 2-batch estimate" in r['headline']['quality']
  assert [row[0] for row in r['tables'][0]['rows']] == [0, 1]
  f = r['figures']
  assert f['seeds'] == 2 and f['ms_per_step_best'] == min(f['seed0.ms_per_step'],
                                                           f['seed1.ms_per_step'])
  assert r['config']['grad_clip'] == 1.0 and 'results_dir' not in r['config']


def test_lm_command_cache_gives_the_reference_the_configs_evaluation_work():
  from benchmarks import lm_command_cache  # pylint: disable=import-outside-toplevel
  config = lm_command_cache.load_config('configs/lm/shakespeare_char.py:path=input.txt')
  cmd = lm_command_cache.reference_command(config, 2000, '/tmp/x')
  flags = dict(zip(cmd[3::2], cmd[4::2]))
  assert flags['--data'] == 'input.txt' and flags['--steps'] == '2000'
  assert (flags['--layers'], flags['--heads'], flags['--width']) == ('4', '4', '128')
  assert (flags['--batch_size'], flags['--block_size']) == ('12', '64')
  assert flags['--weight_decay'] == '0.0' and flags['--grad_clip'] == '0.0'  # the baby recipe
  assert (flags['--eval_interval'], flags['--eval_iters'], flags['--eval_batch_size'],
          flags['--sample_tokens']) == ('500', '20', '64', '500')
  tfds = lm_command_cache.load_config('configs/lm/shakespeare_char.py')
  assert lm_command_cache.reference_command(tfds, 2000, '/tmp/x') is None  # no local corpus
