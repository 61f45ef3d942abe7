"""Model FLOPs utilisation of the LM train step: a GPT-2-small shape on a GPU/TPU.

  # On a GPU or TPU (bf16 compute, float32 params; the peak comes from the device table):
  python -m benchmarks.lm_mfu --preset gpt2_small --batch_per_device 16
  # On a CPU, a small shape; the peak is *measured* (a large float32 matmul), not a spec:
  python -m benchmarks.lm_mfu --preset cpu_small

Times the real LM train step (experiments.lm.make_train_step, AdamW, sharded on the
('data', 'fsdp', 'tensor') mesh from --data/--fsdp/--tensor, all devices by default) on
random tokens, and prints step time, tokens/s (total and per device) and MFU with
FLOPs from `TransformerConfig.flops_per_token` (6N + 12·L·C·T per token); writes the
result file (benchmarks/results.py).
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import results as results_lib
from configs import common
from configs.lm import base
from experiments import lm
from genai.families import lm as lm_family
from genai.objectives import lm_objectives
from genai.parallel import mesh as mesh_lib
from genai.parallel import sharding
from genai.train import loop
from genai.train import throughput

PRESETS = {
    # GPT-2 small (124M): 12 layers, 12 heads, width 768, block 1024, padded vocab 50304.
    'gpt2_small': dict(num_layers=12, num_heads=12, d_model=768, block=1024, vocab=50304,
                       dtype='bfloat16'),
    'cpu_small': dict(num_layers=4, num_heads=4, d_model=256, block=256, vocab=4096,
                      dtype='float32'),
}


def measured_matmul_peak(n: int = 2048, dtype=jnp.float32, reps: int = 10) -> float:
  """FLOP/s of a large square matmul on device 0: the practical peak where no spec applies."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  t = time.perf_counter()
  for _ in range(reps):
    a = f(a) * (1.0 / n)
  a.block_until_ready()
  return 2 * n ** 3 * reps / (time.perf_counter() - t)


def headline(fig: dict) -> dict:
  return {'speed': f'{fig["ms_per_step"]} ms/step, {fig["tokens_per_sec"]:,.0f} tokens/s, MFU '
                   f'{100 * fig["mfu"]:.1f}% of {fig["peak_tflops_per_device"]} TFLOP/s '
                   f'({fig["peak_source"]}) on {fig["devices"]} x {fig["device"]}'}


def measure(pr: dict, *, batch_per_device: int = 4, steps: int = 10, steps_per_call: int = 1,
            remat: str = 'none', scan_layers: bool = False, dtype: str = '', data: int = -1,
            fsdp: int = 1, tensor: int = 1, peak_flops: float = 0.0) -> dict:
  """Times the LM train step of shape `pr` (a PRESETS entry) on random tokens: step time,
  tokens/s and MFU (the peak per device: `peak_flops`, else the device table, else a
  measured float32 matmul). Used by main() and by benchmarks/gpu_check.py."""
  pc = common.parallel_config(data=data, fsdp=fsdp, tensor=tensor)
  mesh = mesh_lib.make_mesh(pc)
  n_dev = mesh.devices.size
  batch = batch_per_device * n_dev

  c = base.get_base_config()
  c.model.update(num_layers=pr['num_layers'], num_heads=pr['num_heads'], d_model=pr['d_model'],
                 dtype=dtype or pr['dtype'], remat=remat, scan_layers=scan_layers)
  c.data.block_size = pr['block']
  c.train.batch_size = batch
  c.train.num_steps = 1000
  model = lm.make_model(c, pr['vocab'])
  init_state, training = lm_family.state_fns(c, model)
  init, abstract = sharding.sharded_init(init_state, mesh, sharding.DEFAULT_RULES)
  state = init(jax.random.key(0))
  train_step = lm.make_train_step(lm_objectives.make_loss_fn(c, model), training)
  step = loop.make_multi_step(train_step, jax.random.key(1), mesh,
                              sharding.state_shardings(abstract), unroll=False)  # as lm.py
  rng = np.random.default_rng(0)
  k = steps_per_call
  tokens = rng.integers(0, pr['vocab'], (k, batch, pr['block'] + 1), dtype=np.int32)
  batches = sharding.global_batch({'inputs': tokens[..., :-1], 'targets': tokens[..., 1:]},
                                  sharding.batch_sharding(mesh, leading=1), batch_axis=1)
  t0 = time.perf_counter()
  state, m = step(state, batches, np.int32(0))
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t0
  calls = max(1, steps // k)
  t0 = time.perf_counter()
  for i in range(calls):
    state, m = step(state, batches, np.int32((i + 1) * k))
  jax.block_until_ready(m)
  sec_per_step = (time.perf_counter() - t0) / (calls * k)

  tokens_per_step = batch * pr['block']
  flops_per_step = model.config.flops_per_token(pr['block']) * tokens_per_step
  peak = throughput.peak_flops_per_device(peak_flops)
  peak_source = 'given' if peak_flops else 'device table (dense bf16)'
  if not peak:
    peak, peak_source = measured_matmul_peak(), 'measured float32 2048^2 matmul on this device'
  return {
      'device': jax.devices()[0].device_kind, 'devices': n_dev,
      'params': model.config.num_params(), 'dtype': c.model.dtype, 'remat': remat,
      'mesh': dict(mesh.shape), 'global_batch': batch, 'block': pr['block'],
      'compile_s': round(compile_s, 1), 'ms_per_step': round(1e3 * sec_per_step, 2),
      'tokens_per_sec': round(tokens_per_step / sec_per_step),
      'tokens_per_sec_per_device': round(tokens_per_step / sec_per_step / n_dev),
      'model_tflops_per_step': round(flops_per_step / 1e12, 4),
      'peak_tflops_per_device': round(peak / 1e12, 4), 'peak_source': peak_source,
      'mfu': round(throughput.mfu(flops_per_step, 1 / sec_per_step, n_dev, peak), 4),
      'final_loss': float(np.asarray(m['loss'])[-1]),
  }


def main():
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument('--preset', choices=sorted(PRESETS), default='cpu_small')
  p.add_argument('--batch_per_device', type=int, default=4)
  p.add_argument('--steps', type=int, default=10)
  p.add_argument('--steps_per_call', type=int, default=1)
  p.add_argument('--remat', default='none')
  p.add_argument('--scan_layers', action='store_true')
  p.add_argument('--dtype', default='')
  p.add_argument('--data', type=int, default=-1)
  p.add_argument('--fsdp', type=int, default=1)
  p.add_argument('--tensor', type=int, default=1)
  p.add_argument('--peak_flops', type=float, default=0.0, help='per device; 0 = table/measured')
  results_lib.add_args(p, 'lm_mfu')
  a = p.parse_args()
  fig = measure(PRESETS[a.preset], batch_per_device=a.batch_per_device, steps=a.steps,
                steps_per_call=a.steps_per_call, remat=a.remat, scan_layers=a.scan_layers,
                dtype=a.dtype, data=a.data, fsdp=a.fsdp, tensor=a.tensor,
                peak_flops=a.peak_flops)
  out = {'device': fig.pop('device'), 'devices': fig.pop('devices'), 'preset': a.preset, **fig}
  print(json.dumps(out, indent=1))
  figures = results_lib.flatten(out)
  results_lib.write(a.result_name, figures, headline=headline(figures),
                    results_dir=a.results_dir)


if __name__ == '__main__':
  main()
