"""Launch one genai command on many accelerators: a TPU VM pod slice, a multi-GPU box, SLURM.

  python -m genai.launch tpu --name my-v4-32 --zone us-central2-b [--copy_repo] [--install] \\
      -- python3 -m experiments.lm --config configs/lm/lm1b_llama.py --workdir gs://B/lm1b
  python -m genai.launch gpu [--processes 8] -- python -m experiments.lm ...
  python -m genai.launch slurm --nodes 4 --gpus_per_node 8 [--sbatch job.sh] -- python -m ...

`--dry_run` prints the exact commands (one per line, as a shell runs them) and runs nothing;
docs/parallel.md shows each target's commands, and tests/test_launch.py checks that the
page is what the launcher prints. Everything after `--` is the command every process runs
(any experiments/ script, or anything else).

How each target starts JAX's multi-controller runtime (genai/parallel/distributed.py reads
the config's `parallel` block; `parallel.distributed='auto'` is the default):

- tpu: `gcloud compute tpus tpu-vm ssh NAME --worker=all` runs the command on every host
  of the slice at once; JAX finds the slice itself (TPU_WORKER_HOSTNAMES), one process per
  host driving its 4 (or 8) chips. `--copy_repo` first ships the committed tree (git
  archive HEAD) to every worker's `--repo_dir`; `--install` runs the pinned install with
  the `tpu` extra there before the command. The workdir must be shared storage (gs://).
- gpu: one box. By default one process drives every GPU of the box (no jax.distributed at
  all): the simplest, and what JAX does on a single host. `--processes N` runs one process
  per GPU instead (CUDA_VISIBLE_DEVICES=i), joined by jax.distributed over localhost: the
  launcher appends `--config.parallel.distributed=on`, the coordinator address, the number
  of processes and each one's id to the command (an experiments/ script's config flags).
- slurm: `srun` with one task per GPU (`--ntasks-per-node` = `--gpus_per_node`), which is
  what JAX expects under SLURM: it reads SLURM_* for the coordinator, the process count and
  rank, and gives each task the GPU of its local rank (SLURM_LOCALID). With `--sbatch FILE`
  the launcher writes a batch script around the same `srun` and submits it with `sbatch`.

This module sits beside the packages of genai/ (docs/architecture.md): it imports nothing
from genai, so it runs on a machine that only holds the repository.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from typing import Sequence

DEFAULT_PORT = 23456


class Plan:
  """What to run: shell commands in order (`steps`), or `parallel` processes started at once
  (each an (env, argv) pair); `files` are written first ({path: text})."""

  def __init__(self):
    self.files: dict[str, str] = {}
    self.steps: list[list[str]] = []
    self.parallel: list[tuple[dict[str, str], list[str]]] = []

  def lines(self) -> list[str]:
    """The exact commands, as a shell would run them."""
    out = []
    for path, text in self.files.items():
      out += [f"cat > {shlex.quote(path)} <<'EOF'", *text.rstrip('\n').split('\n'), 'EOF']
    out += [shlex.join(argv) for argv in self.steps]
    for env, argv in self.parallel:
      prefix = ' '.join(f'{k}={shlex.quote(v)}' for k, v in env.items())
      out.append(f'{prefix} {shlex.join(argv)} &' if prefix else f'{shlex.join(argv)} &')
    if self.parallel:
      out.append('wait')
    return out


# ---- the three targets -----------------------------------------------------------------------


def tpu_plan(a: argparse.Namespace, command: list[str]) -> Plan:
  plan = Plan()
  where = [f'--zone={a.zone}'] + ([f'--project={a.project}'] if a.project else [])
  remote = [f'cd {shlex.quote(a.repo_dir)}']
  if a.copy_repo:
    tarball = 'genai-src.tar.gz'
    plan.steps.append(['git', 'archive', '--format=tar.gz', '-o', f'/tmp/{tarball}', 'HEAD'])
    plan.steps.append(['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp', f'/tmp/{tarball}',
                       f'{a.name}:{tarball}', *where, '--worker=all'])
    remote = [f'mkdir -p {shlex.quote(a.repo_dir)}',
              f'tar -xzf {shlex.quote(tarball)} -C {shlex.quote(a.repo_dir)}'] + remote
  if a.install:
    remote.append('pip install -q -c requirements/ci-constraints.txt -e ".[tpu]"')
  remote.append(shlex.join(command))
  plan.steps.append(['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', a.name, *where,
                     '--worker=all', f'--command={" && ".join(remote)}'])
  return plan


def distributed_flags(address: str, num_processes: int, process_id: int) -> list[str]:
  """The config flags genai/parallel/distributed.py reads (config.parallel)."""
  return ['--config.parallel.distributed=on', f'--config.parallel.coordinator_address={address}',
          f'--config.parallel.num_processes={num_processes}',
          f'--config.parallel.process_id={process_id}']


def gpu_plan(a: argparse.Namespace, command: list[str]) -> Plan:
  plan = Plan()
  if a.processes <= 1:
    plan.steps.append(list(command))
    return plan
  address = f'127.0.0.1:{a.port}'
  for i in range(a.processes):
    plan.parallel.append(({'CUDA_VISIBLE_DEVICES': str(i)},
                          [*command, *distributed_flags(address, a.processes, i)]))
  return plan


def srun_argv(a: argparse.Namespace, command: list[str], in_batch: bool = False) -> list[str]:
  """`srun` with one task per GPU. Inside an sbatch script the allocation comes from the
  #SBATCH lines, so srun only adds the kill-on-failure flag."""
  argv = ['srun']
  if not in_batch:
    argv += [f'--nodes={a.nodes}', f'--ntasks-per-node={a.gpus_per_node}',
             f'--gpus-per-node={a.gpus_per_node}']
    argv += [f'--{k}={v}' for k, v in _slurm_options(a)]
  return argv + ['--kill-on-bad-exit=1', *command]


def _slurm_options(a: argparse.Namespace) -> list[tuple[str, str]]:
  return [(k, v) for k, v in (('partition', a.partition), ('account', a.account),
                              ('time', a.time)) if v]


def slurm_plan(a: argparse.Namespace, command: list[str]) -> Plan:
  plan = Plan()
  if not a.sbatch:
    plan.steps.append(srun_argv(a, command))
    return plan
  header = [f'--job-name={a.job_name}', f'--nodes={a.nodes}',
            f'--ntasks-per-node={a.gpus_per_node}', f'--gpus-per-node={a.gpus_per_node}',
            '--output=slurm-%j.out'] + [f'--{k}={v}' for k, v in _slurm_options(a)]
  script = ['#!/bin/bash', *(f'#SBATCH {h}' for h in header), 'set -euo pipefail',
            f'cd {shlex.quote(a.repo_dir or os.getcwd())}',
            shlex.join(srun_argv(a, command, in_batch=True))]
  plan.files[a.sbatch] = '\n'.join(script) + '\n'
  plan.steps.append(['sbatch', a.sbatch])
  return plan


PLANS = {'tpu': tpu_plan, 'gpu': gpu_plan, 'slurm': slurm_plan}


# ---- running ---------------------------------------------------------------------------------


def run_parallel(procs: Sequence[tuple[dict[str, str], list[str]]]) -> int:
  """Starts every process; when one fails, stops the others. The first failure's status."""
  running = [subprocess.Popen(argv, env={**os.environ, **env}) for env, argv in procs]
  status = 0
  try:
    while [p.poll() for p in running].count(None):  # poll every one (any() would stop early)
      failed = [p for p in running if p.returncode not in (None, 0)]
      if failed:
        status = failed[0].returncode
        for p in running:
          if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        break
      time.sleep(0.2)
    for p in running:
      code = p.wait()
      status = status or code
  except KeyboardInterrupt:
    for p in running:
      if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    raise
  return status


def execute(plan: Plan) -> int:
  missing = sorted({argv[0] for argv in plan.steps + [a for _, a in plan.parallel]
                    if shutil.which(argv[0]) is None})
  if missing:
    print(f'error: {", ".join(missing)} not found on PATH; --dry_run prints the commands',
          file=sys.stderr)
    return 127
  for path, text in plan.files.items():
    with open(path, 'w') as f:
      f.write(text)
  for argv in plan.steps:
    code = subprocess.run(argv, check=False).returncode
    if code:
      return code
  return run_parallel(plan.parallel) if plan.parallel else 0


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog='python -m genai.launch', description=__doc__.split('\n')[0])
  sub = p.add_subparsers(dest='target', required=True)
  tpu = sub.add_parser('tpu', help='every host of a TPU VM pod slice (gcloud ... --worker=all)')
  tpu.add_argument('--name', required=True, help='the TPU VM (slice) name')
  tpu.add_argument('--zone', required=True)
  tpu.add_argument('--project', default='')
  tpu.add_argument('--repo_dir', default='genai', help="the repository on each worker "
                   "(relative to the worker's home)")
  tpu.add_argument('--copy_repo', action='store_true', help='ship the committed tree (git '
                   'archive HEAD) to --repo_dir on every worker first')
  tpu.add_argument('--install', action='store_true', help='pip install the pinned set with '
                   'the tpu extra on every worker before the command')
  gpu = sub.add_parser('gpu', help='one box with several GPUs')
  gpu.add_argument('--processes', type=int, default=1, help='1: one process drives every '
                   'GPU (default); N: one process per GPU, joined by jax.distributed')
  gpu.add_argument('--port', type=int, default=DEFAULT_PORT, help='coordinator port on '
                   'localhost (with --processes > 1)')
  slurm = sub.add_parser('slurm', help='a SLURM cluster: srun, or an sbatch script')
  slurm.add_argument('--nodes', type=int, required=True)
  slurm.add_argument('--gpus_per_node', type=int, required=True, help='also the tasks per '
                     'node: one process per GPU')
  slurm.add_argument('--partition', default='')
  slurm.add_argument('--account', default='')
  slurm.add_argument('--time', default='', help='e.g. 24:00:00')
  slurm.add_argument('--sbatch', default='', help='write this batch script and submit it '
                     'with sbatch, instead of running srun now')
  slurm.add_argument('--job_name', default='genai')
  slurm.add_argument('--repo_dir', default='', help='where the batch script cds (default: '
                     'the current directory)')
  for s in (tpu, gpu, slurm):
    s.add_argument('--dry_run', action='store_true', help='print the commands, run nothing')
  return p


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if '--' not in argv:
    parser().error('give the command after --, e.g. -- python -m experiments.lm --config ...')
  cut = argv.index('--')
  a = parser().parse_args(argv[:cut])
  command = argv[cut + 1:]
  if not command:
    parser().error('the command after -- is empty')
  plan = PLANS[a.target](a, command)
  if a.dry_run:
    print('\n'.join(plan.lines()))
    return 0
  return execute(plan)


if __name__ == '__main__':
  sys.exit(main())
