"""Train-step speed of the LM experiment against a PyTorch eager reference, same machine.

  python -m benchmarks.lm_step_speed --config configs/lm/shakespeare_char.py:path=PATH
  python -m benchmarks.lm_step_speed --result_name lm_step_speed_gpt2_small --steps 3 \
    --rounds 2 --config configs/lm/shakespeare_gpt2_bpe.py:path=PATH,ranks=RANKS \
    --config.model.num_layers=12 --config.model.num_heads=12 --config.model.d_model=768 \
    --config.data.block_size=256 --config.train.batch_size=4 --config.train.steps_per_call=1
(the second: GPT-2 small, 124M parameters with its 50,257-token vocabulary, at 4 x 256
tokens a step, which a 2-core CPU runs in seconds).

Times the real `experiments.lm` train step (exactly as the loop runs it) at 1 and at
`train.steps_per_call` steps per jitted call, then `benchmarks/torch_reference_gpt.py`
(if torch is installed) at the same shape, alternating rounds so both see the same load.
Both steps do the same work: AdamW with weight decay 0.1 and gradient-norm clipping at 1.0,
nanoGPT's settings. They are set here whatever the config says, since the baby recipe turns
both off.
`--bfloat16_too` adds the same step with bf16 compute (float32 params and optimizer) to
each round: the dtype pilot (docs/benchmarks.md).
`--cpu_devices N` (default: the config's `parallel.cpu_devices`, 1 for the LM configs;
genai/parallel/cpu_devices.py) splits this CPU host into N XLA devices; the genai steps
then run on a data-parallel mesh of all N (`genai_k*`) and also on one of them
(`one_device_k*`, plain JAX's layout with every core's threads).
Prints JSON lines and the ratio, and writes the result file (benchmarks/results.py). Speed
claims are ratios taken in one run on one machine.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from absl import app
from absl import flags
from absl import logging
import flax.linen as nn
import jax
from ml_collections import config_flags

from benchmarks import results as results_lib
from benchmarks.lm_train import time_step
from experiments import lm
from genai.parallel import cpu_devices

_CONFIG = config_flags.DEFINE_config_file('config', None, 'LM config (its model/batch shape).')
_STEPS = flags.DEFINE_integer('steps', 64, 'Timed steps per measurement.')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Alternating rounds (min is reported).')
_CPU_DEVICES = flags.DEFINE_integer('cpu_devices', 0, 'Split the CPU host into this many '
                                    'devices (0 = as the config\'s parallel.cpu_devices).')
_BF16 = flags.DEFINE_bool('bfloat16_too', False, 'Also time the step with model.dtype='
                          'bfloat16 (bf16 compute, float32 params and optimizer) in each round.')
results_lib.define_flags('lm_step_speed')


def headline(fig: dict) -> dict:
  k = max(int(key.split('.')[0][len('genai_k'):]) for key in fig if key.startswith('genai_k'))
  speed = (f'{fig[f"genai_k{k}.ms_per_step"]} ms/step, '
           f'{fig[f"genai_k{k}.tokens_per_sec"]:,.0f} tokens/s ({k} steps/call)')
  if 'bfloat16_over_float32' in fig:
    speed += (f'; bfloat16 compute {fig[f"bfloat16_k{k}.ms_per_step"]} ms/step '
              f'({fig["bfloat16_over_float32"]}x float32\'s time)')
  if f'one_device_k{k}.ms_per_step' in fig:
    speed += (f'; on one of the {fig["cpu_devices"]} CPU devices '
              f'{fig[f"one_device_k{k}.ms_per_step"]} ms/step')
  if 'torch_eager.ms_per_step' in fig:
    speed += (f'; PyTorch eager {fig["torch_eager.ms_per_step"]} ms/step '
              f'(torch/genai {fig["torch_over_genai"]})')
  return {'speed': speed}


def torch_ms(config, vocab: int) -> float | None:
  try:
    import torch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return None
  m = config.model
  cmd = [sys.executable, os.path.join(os.path.dirname(__file__), 'torch_reference_gpt.py'),
         '--batch_size', str(config.train.batch_size), '--block_size', str(config.data.block_size),
         '--steps', str(_STEPS.value), '--repeats', '1', '--layers', str(m.num_layers),
         '--heads', str(m.num_heads), '--width', str(m.d_model), '--vocab', str(vocab)]
  out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
  return min(json.loads(l)['ms_per_step'] for l in out.splitlines() if l.startswith('{'))


def vocab_size(task) -> int:
  """The model's vocabulary (the tokenizer's), from the shape of its token embedding."""
  state = jax.eval_shape(task.init_state, jax.random.key(0), *task.init_args)
  return int(nn.unbox(state)['params']['embed']['embedding'].shape[0])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  if _CPU_DEVICES.value:
    config.parallel.cpu_devices = _CPU_DEVICES.value
  cpu_devices.configure(config)  # As the command would, before JAX starts its CPU backend.
  devices = jax.device_count()
  config.optimizer.weight_decay, config.optimizer.grad_clip_norm = 0.1, 1.0  # as the reference
  k = config.train.steps_per_call
  workdir = tempfile.mkdtemp(prefix='genai_speed_')
  results = {'genai_k1': [], f'genai_k{k}': [], 'torch_eager': []}
  vocab = vocab_size(lm.build_task(config, workdir))
  for _ in range(_ROUNDS.value):
    results['genai_k1'].append(1e3 * time_step(lm.build_task(config, workdir), _STEPS.value, 1))
    if k > 1:
      results[f'genai_k{k}'].append(
          1e3 * time_step(lm.build_task(config, workdir), _STEPS.value, k))
    if devices > 1:
      results.setdefault(f'one_device_k{k}', []).append(
          1e3 * time_step(lm.build_task(config, workdir), _STEPS.value, k, devices=1))
    if _BF16.value:
      bf16 = config.copy_and_resolve_references()
      bf16.model.dtype = 'bfloat16'
      results.setdefault(f'bfloat16_k{k}', []).append(
          1e3 * time_step(lm.build_task(bf16, workdir), _STEPS.value, k))
    t = torch_ms(config, vocab)
    if t is not None:
      results['torch_eager'].append(t)
  tokens = config.train.batch_size * config.data.block_size
  summary = {}
  for name, ms in results.items():
    if ms:
      summary[name] = {'ms_per_step': round(min(ms), 2), 'tokens_per_sec': round(tokens / min(ms) * 1e3)}
      print(json.dumps({'impl': name, 'ms_per_step_each_round': [round(x, 2) for x in ms]}))
  if results['torch_eager']:
    summary['torch_over_genai'] = round(min(results['torch_eager']) / min(results[f'genai_k{k}']), 3)
  if results.get(f'bfloat16_k{k}'):
    summary['bfloat16_over_float32'] = round(
        min(results[f'bfloat16_k{k}']) / min(results[f'genai_k{k}']), 3)
  summary['cpu_devices'] = devices
  if results.get(f'one_device_k{k}'):
    summary['one_device_over_split'] = round(
        min(results[f'one_device_k{k}']) / min(results[f'genai_k{k}']), 3)
  print(json.dumps(summary, indent=1))
  figures = summary | {f'{name}.ms_per_step_each_round': [round(x, 2) for x in ms]
                       for name, ms in results.items() if ms}
  figures = results_lib.flatten(figures)
  results_lib.write(flags.FLAGS.result_name, figures, headline=headline(figures),
                    config={'model': config.model.to_dict(), 'vocab_size': vocab,
                            'batch_size': config.train.batch_size,
                            'block_size': config.data.block_size, 'steps_per_call': k,
                            'steps': _STEPS.value, 'rounds': _ROUNDS.value,
                            'cpu_devices': devices},
                    results_dir=flags.FLAGS.results_dir)


if __name__ == '__main__':
  flags.mark_flag_as_required('config')
  app.run(main)
