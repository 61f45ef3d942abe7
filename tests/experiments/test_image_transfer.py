"""Image transfer end to end: a class-conditional DiT trained on digits 0-4 starts a LoRA run
on all ten classes (model.init_from), which loads its weights exactly, trains only the
adapters (and the class table) and samples through the merged weights; a source of another family is one line."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, load_config
from experiments import diffusion
from genai.families import diffusion as diffusion_family
from genai.train import transfer
from genai.train import workdir as workdir_lib


def _dit_config(**fields):
  config = load_config(REPO / 'configs/diffusion/dit_digits.py', 'runlocal,cond')
  config.train.num_steps = 3
  config.train.steps_per_call = 1
  config.eval.num_samples = 0
  for key, value in fields.items():
    config.update_from_flattened_dict({key: value})
  return config


@pytest.mark.slow  # two tiny trainings
def test_dit_on_five_classes_continued_with_lora_on_ten(tmp_path):
  src, dst = str(tmp_path / 'src'), str(tmp_path / 'dst')
  diffusion.train_and_evaluate(_dit_config(**{'data.classes': '0-4'}), src)
  assert json.load(open(os.path.join(src, 'image_info.json')))['num_classes'] == 5
  _, _, src_ema, _ = diffusion_family.load_workdir(src)

  config = _dit_config(**{'model.init_from': f'workdir:{src}', 'lora.rank': 2})
  task = diffusion.build_task(config, dst)
  start = jax.jit(task.init_state)(jax.random.key(0), *task.init_args)
  base = transfer.flat(start['params']['base'])
  for path, leaf in transfer.flat(src_ema).items():
    if path == 'cond/label/embedding':  # 5 classes + null -> 10 + null
      np.testing.assert_array_equal(base[path][:5], leaf[:5])
      np.testing.assert_array_equal(base[path][10], leaf[5])
    else:
      np.testing.assert_array_equal(base[path], leaf, err_msg=path)
  report = json.load(open(os.path.join(dst, transfer.REPORT_FILE)))
  assert report['entries']['params']['extended_paths'] == [
      'cond/label/embedding (classes 5->10)']
  assert report['entries']['params']['re_initialised'] == 0
  n_lora = sum(np.size(v) for v in jax.tree.leaves(start['params']['lora']))
  # lora.train: the class table keeps training (its new rows start at random).
  assert report['freeze']['trainable'] == n_lora + base['cond/label/embedding'].size

  state = diffusion.train_and_evaluate(config, dst)
  trained = transfer.flat(state['params']['base'])
  for path, leaf in base.items():  # the rest of the base never moves under LoRA
    if path != 'cond/label/embedding':
      np.testing.assert_array_equal(np.asarray(trained[path]), np.asarray(leaf), err_msg=path)
  assert not np.array_equal(trained['cond/label/embedding'][:5], base['cond/label/embedding'][:5])
  assert any(float(np.abs(v).max()) > 0 for k, v in transfer.flat(state['params']['lora']).items()
             if k.endswith('/b'))
  # Reading the workdir back merges the adapters: a plain DiT samples all ten classes.
  cfg, model, params, info = diffusion_family.load_workdir(dst)
  assert info['num_classes'] == 10 and 'lora' not in params
  x, _, _ = diffusion_family.sample(dst, num_images=10, out=str(tmp_path / 'out'))
  assert x.shape == (10, 8, 8, 1) and np.isfinite(x).all()


@pytest.mark.slow  # a subprocess
def test_a_source_of_another_family_is_a_one_line_error(tmp_path):
  workdir_lib.save_config(load_config(REPO / 'configs/vae/digits.py'), str(tmp_path / 'vae'))
  out = subprocess.run(
      [sys.executable, '-m', 'experiments.diffusion', '--config',
       'configs/diffusion/digits.py:runlocal', '--workdir', str(tmp_path / 'w'),
       f'--config.model.init_from=workdir:{tmp_path / "vae"}'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert out.returncode == 1, out.stderr
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith('error: model.init_from=') and 'experiments.vae' in last
  assert 'Traceback' not in out.stderr
  assert not os.path.exists(tmp_path / 'w')  # the failed run left nothing behind
