"""The convolutional train steps against PyTorch eager, side by side in one process: the
diffusion UNet of configs/diffusion/mnist.py and the DCGAN of configs/gan/mnist.py.

  python -m benchmarks.conv_step_speed --data ../shared/data/mnist
  taskset -c 1 python -m benchmarks.conv_step_speed --rounds 7   # one core

genai's side is each experiment's own train step (`build_task(config).train_step`: loss,
gradients, optimizer update, EMA) jitted as the loop runs it (benchmarks/sharded_step.py:
`loop.make_multi_step`, donated state, `train.steps_per_call` steps per call: 20 in a
rolled scan for the UNet, 4 unrolled for the DCGAN). The PyTorch side is
benchmarks/torch_reference_conv.py: the same models (parameter counts asserted equal),
losses, optimizers and batch sizes, eager, float32, NCHW. Both train on the same real MNIST
batches. After a warm-up, the rounds alternate (genai UNet, torch UNet, genai DCGAN, torch
DCGAN, ...) so every side sees the same load; each round times --steps steps. genai's
step runs as the commands train it: by default on one device, its convolutions on XLA's
Eigen kernels (genai/parallel/cpu_devices.py: split_for, conv_kernels); `--cpu_devices=N`
splits the host into N devices, the batch split between them (YNNPACK's convolutions
where each device has one core), and also times the step on one of them. torch gets
as many threads as this process may run on (its CPU affinity mask), the number XLA's CPU
client sizes its thread pool by. Reports best and median ms/step and the torch/genai ratio
of the medians per model, and writes the result file (benchmarks/results.py).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import results as results_lib
from benchmarks import sharded_step
from configs.diffusion import mnist as diffusion_config
from configs.gan import mnist as gan_config
from experiments import diffusion
from experiments import gan
from genai.parallel import cpu_devices
from genai.objectives import diffusion as dfn
from genai.train.optimizers import make_schedule

_DATA = flags.DEFINE_string('data', '../shared/data/mnist', 'Folder of MNIST IDX files.')
_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Alternating timed rounds per side.')
_STEPS = flags.DEFINE_integer('steps', 40, 'Train steps per round (a multiple of each '
                              'model\'s train.steps_per_call: the UNet\'s 20, the DCGAN\'s 4).')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed rounds per side after the compile.')
_MODELS = flags.DEFINE_list('models', ['unet', 'dcgan'], 'Which steps to time.')
_STEPS_PER_CALL = flags.DEFINE_integer('steps_per_call', 0, 'Override train.steps_per_call '
                                       '(0: each config\'s own).')
_SWEEP = flags.DEFINE_bool('xla_flag_sweep', False, 'Also rerun this benchmark (2 rounds) in a '
                           'subprocess per XLA:CPU setting of XLA_SWEEP and tabulate the ratios.')
_PROFILE = flags.DEFINE_bool('profile', True, "Profile one genai UNet call (jax.profiler): XLA:CPU "
                             'thunk time by kind of operation, from the optimized HLO.')
_CPU_DEVICES = flags.DEFINE_integer('cpu_devices', 0, 'Split the CPU host into this many XLA '
                                    'devices (0 = as the conv commands run: one device, its '
                                    'convolutions on Eigen where jaxlib allows, '
                                    'genai/parallel/cpu_devices.py). With more than one, '
                                    'genai\'s step is also timed on one of them.')
_NOTE = flags.DEFINE_string('machine_note', '', 'A note on the machine\'s state (load, pinning).')
results_lib.define_flags('conv_step_speed')

# The XLA:CPU settings issue 25 names (all exist in jaxlib 0.10.2: an unknown flag aborts).
# On one device genai already takes convolutions off YNNPACK (genai/parallel/cpu_devices.py:
# conv_kernels); '+individual_convolution' keeps jaxlib's default, YNNPACK's.
XLA_SWEEP = ('', f'{cpu_devices.YNN_FLAG}=+individual_convolution', '--xla_cpu_use_onednn=true',
             '--xla_cpu_experimental_onednn_custom_call=true',
             '--xla_cpu_experimental_onednn_fusion_type=dot,eltwise,reduce',
             '--xla_cpu_use_xnnpack=false',
             '--xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce',
             '--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY',
             '--xla_cpu_prefer_vector_width=512', '--xla_cpu_enable_fast_math=true')

NAMES = {'unet': 'diffusion UNet (configs/diffusion/mnist.py)',
         'dcgan': 'DCGAN G+D (configs/gan/mnist.py)'}


def headline(fig: dict) -> dict:
  parts = [f'{m}: genai {fig[f"{m}.genai_ms_median"]} '
           f'ms/step' + (f' ({fig[f"{m}.layout"]})' if f'{m}.layout' in fig else '')
           + f', PyTorch eager {fig[f"{m}.torch_ms_median"]} (torch/genai '
           f'{fig[f"{m}.torch_over_genai"]})'
           for m in ('unet', 'dcgan') if f'{m}.genai_ms_median' in fig]
  return {'speed': '; '.join(parts) + f' (medians, {fig["threads"]} thread(s))'}


def _data_config(c, data: str):
  c.data.source, c.data.path = 'idx', data
  c.data.max_examples, c.data.eval_examples = 4096, 256
  return c


class Side:
  """One step to time: `run(n)` runs n train steps and waits for them."""

  def __init__(self, run, n_params):
    self.run, self.n_params = run, n_params


def _genai_side(task, config, steps, devices=0, batches=None):
  """The experiment's step as the loop runs it, on `steps` real batches (pre-stacked and
  split over a data-parallel mesh of the first `devices` devices, 0 = all)."""
  k = _STEPS_PER_CALL.value or int(config.train.steps_per_call)
  if steps % k:
    raise ValueError(f'--steps={steps} is not a multiple of train.steps_per_call={k}.')
  batches = batches or [next(task.train_iter) for _ in range(steps)]
  step = sharded_step.build(task, batches, k, devices)
  run = lambda n: step.run(n // k)
  t = time.perf_counter()
  run(k)  # compile
  side = Side(run, step.state)
  side.call = step.call
  side.lowered = step.lower
  return side, time.perf_counter() - t, batches, k


def _one_device_side(task, config, steps, batches):
  """The same step on one of the host's CPU devices (as plain JAX), None with one device."""
  if jax.device_count() == 1:
    return None
  return _genai_side(task, config, steps, devices=1, batches=batches)[0]


def _torch_nchw(batches, key='image'):
  import torch  # pylint: disable=import-outside-toplevel
  return [torch.from_numpy(np.ascontiguousarray(np.asarray(b[key]).transpose(0, 3, 1, 2)))
          for b in batches]


def unet_sides(workdir, steps):
  import torch  # pylint: disable=import-outside-toplevel
  from benchmarks import torch_reference_conv as ref  # pylint: disable=import-outside-toplevel
  config = _data_config(diffusion_config.get_config(), _DATA.value)
  task = diffusion.build_task(config, os.path.join(workdir, 'diffusion'))
  side, compile_s, batches, k = _genai_side(task, config, steps)
  n_jax = sum(p.size for p in jax.tree.leaves(nn.unbox(side.n_params)['params']))
  side.n_params = n_jax
  side.one_device = _one_device_side(task, config, steps, batches)

  u = config.model.unet
  torch.manual_seed(0)
  model = ref.UNet(image_size=28, channels=1, features=u.features, channel_mults=u.channel_mults,
                   num_res_blocks=u.num_res_blocks, attention_levels=u.attention_levels,
                   num_heads=u.num_heads, num_groups=u.num_groups,
                   cond_features=u.cond_features, patch_size=u.patch_size)
  if ref.param_count(model) != n_jax:
    raise AssertionError(f'torch UNet {ref.param_count(model)} params, genai {n_jax}')
  sched = dfn.make_schedule(config.diffusion)
  # The config's learning rate at every step (warmup + cosine), as a table.
  lrs = np.asarray(jax.vmap(make_schedule(config.optimizer, config.train.num_steps))(
      jnp.arange(config.train.num_steps)))
  o = config.optimizer
  step = ref.DiffusionStep(model, np.asarray(sched.sqrt_alphas_cumprod),
                           np.asarray(sched.sqrt_one_minus_alphas_cumprod), lrs, b1=o.b1,
                           b2=o.b2, eps=o.eps, grad_clip_norm=o.grad_clip_norm,
                           ema_decay=config.ema.decay, ema_warmup=config.ema.warmup)
  xs = _torch_nchw(batches)

  def run(n):
    for i in range(n):
      loss = step(xs[i % len(xs)])
    float(loss.detach())
  run(k)
  return side, Side(run, ref.param_count(model)), compile_s, config


def dcgan_sides(workdir, steps):
  import torch  # pylint: disable=import-outside-toplevel
  from benchmarks import torch_reference_conv as ref  # pylint: disable=import-outside-toplevel
  config = _data_config(gan_config.get_config(), _DATA.value)
  if config.train.n_critic != 1 or config.loss != 'ns' or config.model.spectral_norm:
    raise ValueError('the PyTorch DCGAN step is the non-saturating, n_critic=1, no-SN one.')
  task = gan.build_task(config, os.path.join(workdir, 'gan'))
  side, compile_s, batches, k = _genai_side(task, config, steps)
  s = nn.unbox(side.n_params)
  side.one_device = _one_device_side(task, config, steps, batches)
  n_g = sum(p.size for p in jax.tree.leaves(s['g_params']))
  n_d = sum(p.size for p in jax.tree.leaves(s['d_params']))
  side.n_params = n_g + n_d

  m = config.model
  torch.manual_seed(0)
  gen = ref.Generator(image_size=28, channels=1, width=m.g_width, num_upsamples=m.num_upsamples,
                      latent_dim=m.latent_dim, bn_momentum=m.g_bn_momentum)
  disc = ref.Discriminator(image_size=28, channels=1, width=m.d_width,
                           num_downsamples=m.num_upsamples)
  if (ref.param_count(gen), ref.param_count(disc)) != (n_g, n_d):
    raise AssertionError(f'torch G/D {ref.param_count(gen)}/{ref.param_count(disc)} params, '
                         f'genai {n_g}/{n_d}')
  og, od = config.optimizer_g, config.optimizer_d
  if og.schedule != 'constant' or od.schedule != 'constant':
    raise ValueError('the PyTorch GAN step uses constant learning rates.')
  step = ref.GanStep(gen, disc, m.latent_dim, lr_g=og.learning_rate, lr_d=od.learning_rate,
                     b1=og.b1, b2=og.b2, eps=og.eps, ema_decay=config.ema.decay,
                     ema_warmup=config.ema.warmup)
  xs = _torch_nchw(batches)

  def run(n):
    for i in range(n):
      d_loss, _ = step(xs[i % len(xs)])
    float(d_loss.detach())
  run(k)
  return side, Side(run, n_g + n_d), compile_s, config


def _op_kind(hlo: dict, name: str) -> str:
  """What an XLA:CPU thunk named `name` computes, from the optimized HLO."""
  op, line = hlo.get(name, ('', ''))
  called = re.search(r'calls=%?([\w.\-]+)', line)
  body = hlo.get('computation ' + called.group(1), []) if op == 'fusion' and called else [line]
  conv = next((l for l in body if ' convolution(' in l), None)
  if conv:
    size = re.search(r'size=(\d+)x', conv)
    return ('conv: weight gradient' if size and int(size.group(1)) > 4
            else 'conv: forward or input gradient')
  if any(' dot(' in l for l in body):
    return 'dot'
  ops = {m.group(1) for l in body if (m := re.search(r' = \S+ ([\w\-]+)\(', l))}
  if ops and ops <= {'transpose', 'copy', 'bitcast', 'parameter'}:
    return 'layout copy (transpose)'
  return 'other fusions (elementwise, norms, reductions)'


def _parse_hlo(text: str) -> dict:
  hlo, comp = {}, None
  for line in text.splitlines():
    if line and not line.startswith(' ') and line.rstrip().endswith('{'):
      comp = 'computation ' + line.split()[1 if line.startswith('ENTRY') else 0].lstrip('%')
      hlo[comp] = []
    elif comp and line.startswith(' '):
      hlo[comp].append(line.strip())
      m = re.match(r'(?:ROOT )?%?([\w.\-]+) = \S+ ([\w\-]+)\(', line.strip())
      if m:
        hlo[m.group(1)] = (m.group(2), line.strip())
  return hlo


def profile_call(side, calls: int = 2) -> dict:
  """ms per call of each kind of XLA:CPU thunk in `side`'s jitted call (jax.profiler trace,
  names matched against the compiled module's optimized HLO)."""
  from jax.profiler import ProfileData  # pylint: disable=import-outside-toplevel
  hlo = _parse_hlo(side.lowered().compile().as_text())
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d):
      for _ in range(calls):
        jax.block_until_ready(side.call())
    path = next(os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs
                if f.endswith('.xplane.pb'))
    data = ProfileData.from_file(path)
  kinds: dict[str, float] = {}
  wall = 0.0
  for plane in data.planes:
    for line in plane.lines:
      for ev in line.events:
        if ev.name in hlo and not ev.name.startswith('computation '):
          kind = _op_kind(hlo, ev.name)
          kinds[kind] = kinds.get(kind, 0.0) + ev.duration_ns / 1e6 / calls
        elif ev.name.startswith('ThunkExecutor::Execute'):
          wall += ev.duration_ns / 1e6 / calls
  kinds = dict(sorted(kinds.items(), key=lambda kv: -kv[1]))
  if wall:
    # Eigen's convolutions (conv_kernels) run on its pool after their thunk returns: their
    # time is in the call's wall time, not in any thunk event.
    kinds[WALL] = wall
  return kinds


WALL = 'wall time of the call (reference)'


def xla_flag_sweep(data: str, models) -> list[list]:
  """This benchmark (2 rounds) in a subprocess per XLA_FLAGS setting: one row each."""
  rows = []
  for setting in XLA_SWEEP:
    with tempfile.TemporaryDirectory() as d:
      cmd = [sys.executable, '-m', 'benchmarks.conv_step_speed', f'--data={data}', '--rounds=2',
             '--warmup=1', f'--models={",".join(models)}', '--noprofile', f'--results_dir={d}',
             f'--cpu_devices={jax.device_count()}',
             '--result_name=sweep']
      proc = subprocess.run(cmd, env={**os.environ, 'XLA_FLAGS': setting}, capture_output=True,
                            text=True, check=False)
      out = os.path.join(d, 'sweep.json')
      if proc.returncode or not os.path.exists(out):
        rows.append([setting or '(default)'] + ['failed'] * (2 * len(models)))
        continue
      fig = results_lib.load(out)['figures']
    row = [setting or '(default)']
    for m in models:
      row += [fig[f'{m}.genai_ms_median'], fig[f'{m}.torch_over_genai']]
    rows.append(row)
    print('sweep', row, flush=True)
  return rows


def _timed(side, steps):
  t = time.perf_counter()
  side.run(steps)
  return 1e3 * (time.perf_counter() - t) / steps


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  import torch  # pylint: disable=import-outside-toplevel
  threads = len(os.sched_getaffinity(0))
  torch.set_num_threads(threads)
  cpu_devices.split_for([gan_config.get_config().train.batch_size,
                         diffusion_config.get_config().train.batch_size], _CPU_DEVICES.value)
  steps = _STEPS.value
  workdir = tempfile.mkdtemp(prefix='conv_step_speed_')
  builders = {'unet': unet_sides, 'dcgan': dcgan_sides}
  sides, figures, configs = {}, {'threads': threads, 'steps_per_round': steps,
                                 'rounds': _ROUNDS.value, 'cpu_devices': jax.device_count()}, {}
  for name in _MODELS.value:
    g, t, compile_s, config = builders[name](workdir, steps)
    sides[name] = (g, t)
    figures[f'{name}.params'] = g.n_params
    figures[f'{name}.batch_size'] = int(config.train.batch_size)
    figures[f'{name}.steps_per_call'] = _STEPS_PER_CALL.value or int(config.train.steps_per_call)
    figures[f'{name}.genai_compile_s'] = round(compile_s, 1)
    configs[name] = {'model': config.model.to_dict(), 'train.batch_size': config.train.batch_size,
                     'parallel.cpu_devices': int(config.parallel.cpu_devices)}
  for _ in range(_WARMUP.value):
    for g, t in sides.values():
      for side in (g, g.one_device, t):
        if side is not None:
          side.run(steps)
  times = {name: {'genai': [], 'one_device': [], 'torch': []} for name in sides}
  for r in range(_ROUNDS.value):
    for name, (g, t) in sides.items():
      times[name]['genai'].append(_timed(g, steps))
      if g.one_device is not None:
        times[name]['one_device'].append(_timed(g.one_device, steps))
      times[name]['torch'].append(_timed(t, steps))
      one = (f', genai on one device {times[name]["one_device"][-1]:.1f}'
             if times[name]['one_device'] else '')
      print(f'round {r} {name}: genai {times[name]["genai"][-1]:.1f} ms/step{one}, torch '
            f'{times[name]["torch"][-1]:.1f}', flush=True)
  rows = []
  for name, tt in times.items():
    if tt['one_device']:
      figures[f'{name}.one_device_ms_median'] = round(float(np.median(tt['one_device'])), 1)
      figures[f'{name}.one_device_over_split'] = round(
          figures[f'{name}.one_device_ms_median'] / float(np.median(tt['genai'])), 2)
    for side in ('genai', 'torch'):
      figures[f'{name}.{side}_ms_best'] = round(min(tt[side]), 1)
      figures[f'{name}.{side}_ms_median'] = round(float(np.median(tt[side])), 1)
    # torch/genai for the layout timed: one device (as the conv commands train, with Eigen's
    # convolutions) or the split host (--cpu_devices=N, YNNPACK's).
    figures[f'{name}.layout'] = (('one device' if jax.device_count() == 1
                                  else f'{jax.device_count()} CPU devices')
                                 + f', {cpu_devices.conv_kernel_name()} convolutions')
    figures[f'{name}.torch_over_genai'] = round(figures[f'{name}.torch_ms_median']
                                                / figures[f'{name}.genai_ms_median'], 2)
    per_round = [b / a for a, b in zip(tt['genai'], tt['torch'])]
    figures[f'{name}.torch_over_genai_rounds'] = ' '.join(f'{x:.2f}' for x in per_round)
    rows.append([NAMES[name], figures[f'{name}.params'], figures[f'{name}.batch_size'],
                 figures[f'{name}.layout'], figures[f'{name}.genai_ms_median'],
                 figures.get(f'{name}.one_device_ms_median', '-'),
                 figures[f'{name}.torch_ms_median'], figures[f'{name}.torch_over_genai']])
  tables = [{'title': 'median ms per train step, interleaved rounds in one process',
             'columns': ['model', 'params', 'batch', 'genai layout', 'genai',
                         'genai on one device of the split host', 'PyTorch eager',
                         'torch/genai'],
             'rows': rows}]
  if _PROFILE.value and 'unet' in sides:
    kinds = profile_call(sides['unet'][0])
    k = figures['unet.steps_per_call']
    total = kinds.get(WALL) or sum(kinds.values())
    tables.append({'title': f'where a genai UNet step goes: XLA:CPU thunk time per step '
                            f'(one traced call of {k} steps / {k}; threads summed; Eigen\'s '
                            'convolutions run outside the thunk events, so with them the '
                            'rows leave part of the wall time unattributed)',
                   'columns': ['kind', 'ms per step', 'share'],
                   'rows': [[kind, round(ms / k, 1), f'{ms / total:.0%}']
                            for kind, ms in kinds.items()]})
    for kind, ms in kinds.items():
      figures[f'unet.profile_ms.{kind}'] = round(ms / k, 1)
  if _SWEEP.value:
    models = list(sides)
    tables.append({'title': 'XLA:CPU settings (XLA_FLAGS), 2 rounds each in a subprocess: '
                            'median genai ms/step and torch/genai',
                   'columns': ['XLA_FLAGS'] + [c for m in models
                                               for c in (f'{m} genai ms', f'{m} torch/genai')],
                   'rows': xla_flag_sweep(_DATA.value, models)})
  print(figures, flush=True)
  cpus = sorted(os.sched_getaffinity(0))
  notes = [f'torch.set_num_threads({threads}): the CPUs in this process\'s affinity mask '
           f'(CPU {",".join(map(str, cpus))} of {os.cpu_count()}); XLA:CPU sizes its thread '
           'pool from the same mask.',
           f'XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}']
  if _NOTE.value:
    notes.append(_NOTE.value)
  results_lib.write(
      flags.FLAGS.result_name, figures, headline=headline(figures), tables=tables,
      notes=notes, config=configs, results_dir=flags.FLAGS.results_dir, torch=True)


if __name__ == '__main__':
  app.run(main)
