"""The GPU check: the tests that matter on a GPU, then the GPT-2-small train step in bf16
(tokens/s and MFU), in at most 5 minutes. Run it first whenever a GPU machine is at hand.

  # On a GPU box (the figures go to benchmarks/results/gpu_check.json):
  python -m benchmarks.gpu_check
  # On a CPU, tiny (tests/bench/test_gpu_check.py): one test, a tiny model, MFU against the
  # CPU's measured float32 matmul peak:
  python -m benchmarks.gpu_check --preset tiny --steps 2 --batch_per_device 1 \\
      --tests tests/models/test_transformer.py::test_gelu_erf_is_the_exact_gelu_not_the_tanh_one

1. Tests, each group in its own pytest subprocess (`-x`: a group stops at its first
   failure, the next group still runs), within `--tests_budget_s` together:
     bf16              tests/models -k bfloat16 (bf16 compute, float32 params)
     kv_cache_decode   cached decoding = the full forward / the naive loop, cache rows at
                       different positions, generation past the context
     inception         tests/evaluation/test_inception.py (FID features; the parity tests
                       need `python -m genai.evaluation.inception_weights` first, else skip)
     sharded_training  tests/parallel/test_sharded_training.py (meshes on 8 devices, two
                       processes: on a box with fewer than 8 GPUs it runs on the CPU's fake
                       devices, JAX_PLATFORMS=cpu, and the result file says so)
   `--tests` replaces the groups with one selection.
2. The train step of benchmarks/lm_mfu.py (`measure`, the same code and FLOP count) on the
   GPT-2-small shape: 12 layers, 12 heads, width 768, context 1024, vocabulary 50,257
   padded to 50,304 (as nanoGPT does), bf16 compute with float32 parameters, AdamW, all
   devices data-parallel. MFU uses the device table's dense-bf16 peak (989 TFLOP/s for an
   H100 SXM or H200; genai/train/throughput.py), or the CPU's measured matmul peak.

The process exits 1 if a test group failed or ran out of time; the result file is written
either way, so a failed check is on record with what failed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

from benchmarks import results as results_lib

REPO = results_lib.REPO
GROUPS = (
    ('bf16', ['tests/models', '-k', 'bfloat16']),
    ('kv_cache_decode', [
        'tests/models/test_transformer.py::test_kv_cache_decoding_equals_full_forward',
        'tests/models/test_transformer.py::test_cache_rows_can_sit_at_different_positions',
        'tests/sample/test_decode.py::test_cached_greedy_generation_equals_naive_loop',
        'tests/sample/test_decode.py::test_generation_longer_than_context_continues_in_chunks']),
    ('inception', ['tests/evaluation/test_inception.py']),
    ('sharded_training', ['tests/parallel/test_sharded_training.py']),
)
FAKE_DEVICES = 8  # what tests/parallel asks for
TINY = dict(num_layers=2, num_heads=2, d_model=64, block=64, vocab=256, dtype='float32')


def gpu_count() -> int:
  """GPUs `nvidia-smi -L` lists (0 without it): counted without starting JAX here, so the
  test subprocesses get the whole GPU."""
  exe = shutil.which('nvidia-smi')
  if not exe:
    return 0
  try:
    out = subprocess.run([exe, '-L'], capture_output=True, text=True, timeout=30).stdout
  except (OSError, subprocess.SubprocessError):
    return 0
  return sum(line.startswith('GPU ') for line in out.splitlines())


def _junit(path: str) -> dict:
  """tests, failures, errors, skipped and the first failure of a pytest junit file."""
  root = ET.parse(path).getroot()
  suite = root if root.tag == 'testsuite' else root.find('testsuite')
  out = {k: int(suite.get(k, 0)) for k in ('tests', 'failures', 'errors', 'skipped')}
  for case in suite.iter('testcase'):
    bad = case.find('failure') if case.find('failure') is not None else case.find('error')
    if bad is not None:
      message = (bad.get('message') or '').strip().split('\n')[0][:300]
      out['first_failure'] = f'{case.get("classname")}::{case.get("name")}: {message}'
      break
  return out


def run_group(name: str, args: list[str], timeout_s: float, env: dict, tmp: str) -> dict:
  """One pytest subprocess; its counts, status (passed | failed | timeout) and wall time."""
  xml = os.path.join(tmp, f'{name}.xml')
  cmd = [sys.executable, '-m', 'pytest', '-x', '-q', '-p', 'no:cacheprovider',
         f'--junitxml={xml}', *args]
  t0 = time.perf_counter()
  # Its own process group: on timeout the processes the tests started go too.
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True)
  try:
    output, _ = proc.communicate(timeout=max(1.0, timeout_s))
    status = 'passed' if proc.returncode == 0 else 'failed'
    tail = output.strip().splitlines()[-1:] or ['']
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    status, tail = 'timeout', [f'ran past its {timeout_s:.0f} s budget']
  out = {'status': status, 'wall_s': round(time.perf_counter() - t0, 1), 'summary': tail[0]}
  if os.path.exists(xml):
    out.update(_junit(xml))
  if status == 'passed' and out.get('tests', 0) == out.get('skipped', 0):
    out['status'] = 'skipped'  # nothing ran: say so rather than "passed"
  return out


def run_tests(groups, budget_s: float, gpus: int) -> tuple[dict, list[str]]:
  results, notes = {}, []
  deadline = time.perf_counter() + budget_s
  base_env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2',
              # Tests start their own processes (2 hosts on one machine): no process may
              # take 75% of a GPU's memory up front.
              'XLA_PYTHON_CLIENT_PREALLOCATE': 'false'}
  with tempfile.TemporaryDirectory() as tmp:
    for name, args in groups:
      env = dict(base_env)
      platform = 'gpu' if gpus else 'cpu'
      if name == 'sharded_training' and 0 < gpus < FAKE_DEVICES:
        env['JAX_PLATFORMS'] = 'cpu'
        platform = 'cpu'
        notes.append(f'sharded_training ran on the CPU (JAX_PLATFORMS=cpu): its tests need '
                     f'{FAKE_DEVICES} devices and this box has {gpus} GPU(s).')
      left = deadline - time.perf_counter()
      if left <= 1:
        results[name] = {'status': 'not run (budget spent)', 'platform': platform}
        continue
      print(f'tests: {name} ({" ".join(args)}), up to {left:.0f} s', flush=True)
      results[name] = {**run_group(name, args, left, env, tmp), 'platform': platform}
      r = results[name]
      print(f'       {r["status"]} in {r["wall_s"]} s: {r["summary"]}', flush=True)
  return results, notes


def headline(fig: dict, tests: dict) -> dict:
  ok = sum(t['status'] in ('passed', 'skipped') for t in tests.values())
  return {'quality': f'tests: {ok}/{len(tests)} groups passed ('
                     + ', '.join(f'{k} {v["status"]}' for k, v in tests.items()) + ')',
          'speed': f'{fig["ms_per_step"]} ms/step, {fig["tokens_per_sec"]:,.0f} tokens/s, '
                   f'MFU {100 * fig["mfu"]:.1f}% of {fig["peak_tflops_per_device"]} TFLOP/s '
                   f'({fig["peak_source"]}) on {fig["devices"]} x {fig["device"]}, '
                   f'{fig["dtype"]}'}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--tests', nargs='*', default=None, help='one pytest selection instead of '
                 'the groups; give none (--tests) to skip the tests')
  p.add_argument('--tests_budget_s', type=float, default=210.0, help='all test groups '
                 'together; the train step takes about a minute more on a GPU')
  p.add_argument('--preset', choices=('gpt2_small', 'tiny'), default='gpt2_small')
  p.add_argument('--batch_per_device', type=int, default=16)
  p.add_argument('--steps', type=int, default=20)
  p.add_argument('--steps_per_call', type=int, default=1)
  p.add_argument('--dtype', default='', help='default: the preset\'s (bfloat16 for gpt2_small)')
  p.add_argument('--remat', default='none')
  p.add_argument('--peak_flops', type=float, default=0.0, help='per device; 0 = table/measured')
  p.add_argument('--force', action='store_true', help='run the gpt2_small preset even where '
                 'no GPU or TPU device is found (hours on a CPU)')
  results_lib.add_args(p, 'gpu_check')
  a = p.parse_args(argv)
  t0 = time.perf_counter()
  gpus = gpu_count()
  tpu = any(os.path.exists(d) for d in ('/dev/accel0', '/dev/vfio/0'))
  if a.preset == 'gpt2_small' and not (gpus or tpu or a.force):
    raise SystemExit('error: no GPU found (nvidia-smi -L lists none) and no TPU device: run '
                     'this on a GPU box, or --preset tiny for the CPU form of the check '
                     '(--force runs GPT-2 small here anyway)')
  groups = GROUPS if a.tests is None else ([('selection', a.tests)] if a.tests else [])
  tests, notes = run_tests(groups, a.tests_budget_s, gpus)

  # JAX starts here, after the test processes have finished with the GPU.
  from benchmarks import lm_mfu  # pylint: disable=import-outside-toplevel
  preset = lm_mfu.PRESETS['gpt2_small'] if a.preset == 'gpt2_small' else TINY
  print(f'train step: {a.preset}, batch {a.batch_per_device}/device, {a.steps} steps', flush=True)
  fig = lm_mfu.measure(preset, batch_per_device=a.batch_per_device, steps=a.steps,
                       steps_per_call=a.steps_per_call, dtype=a.dtype, remat=a.remat,
                       peak_flops=a.peak_flops)
  fig = {'preset': a.preset, 'vocab': preset['vocab'], 'gpus_listed': gpus, **fig}
  wall = time.perf_counter() - t0
  if fig['device'] == 'cpu' or gpus == 0:
    notes.append('No GPU: the MFU is against this CPU\'s measured float32 matmul peak, and '
                 'the tests ran on the CPU.')
  failed = [k for k, v in tests.items() if v['status'] not in ('passed', 'skipped')]
  rows = [[k, v['status'], v.get('platform', ''), v.get('tests', ''), v.get('failures', ''),
           v.get('errors', ''), v.get('skipped', ''), v.get('wall_s', ''),
           v.get('first_failure', '')] for k, v in tests.items()]
  tables = [results_lib.table('Test groups (pytest -x, one subprocess each)',
                              ['group', 'status', 'platform', 'tests', 'failures', 'errors',
                               'skipped', 'wall s', 'first failure'], rows)] if rows else []
  figures = {**fig, 'check_wall_s': round(wall, 1), 'tests_failed': len(failed),
             **{f'tests.{k}.{f}': v[f] for k, v in tests.items()
                for f in ('status', 'tests', 'failures', 'skipped', 'wall_s') if f in v}}
  print(f'{fig["ms_per_step"]} ms/step, {fig["tokens_per_sec"]:,} tokens/s, MFU '
        f'{100 * fig["mfu"]:.1f}% ({fig["peak_source"]}); whole check {wall:.0f} s', flush=True)
  results_lib.write(a.result_name, figures, headline=headline(fig, tests), tables=tables,
                    notes=notes, results_dir=a.results_dir,
                    config={k: v for k, v in vars(a).items() if k not in ('results_dir',)})
  if failed:
    print(f'FAILED test groups: {", ".join(failed)}', file=sys.stderr)
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
