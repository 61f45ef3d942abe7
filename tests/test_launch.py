"""genai/launch.py: the commands it prints for a TPU VM slice, a GPU box and SLURM are the ones
docs/parallel.md shows; without --dry_run it runs them (fake gcloud/srun/sbatch on PATH), and
one process per GPU starts together and stops together."""
import contextlib
import io
import os
import re
import shlex
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO
from genai import launch

DOC = REPO / 'docs' / 'parallel.md'
PAIR = re.compile(r'```bash\n(python -m genai\.launch .*?)\n```\n\nprints \(and without '
                  r'`--dry_run` runs\):\n\n```text\n(.*?)\n```\n', re.S)


def dry_run(args: str | list[str]) -> str:
  argv = shlex.split(args) if isinstance(args, str) else args
  buf = io.StringIO()
  with contextlib.redirect_stdout(buf):
    assert launch.main(argv) == 0
  return buf.getvalue().rstrip('\n')


def test_docs_parallel_md_shows_what_the_launcher_prints():
  pairs = PAIR.findall(DOC.read_text())
  assert len(pairs) == 4, 'docs/parallel.md: the tpu, gpu, srun and sbatch examples'
  targets = []
  for command, printed in pairs:
    argv = shlex.split(command.replace('\\\n', ' '))
    assert argv[:3] == ['python', '-m', 'genai.launch'] and '--dry_run' in argv
    targets.append(argv[3])
    assert dry_run(argv[3:]) == printed, f'docs/parallel.md is out of date for: {command}'
  assert targets == ['tpu', 'gpu', 'slurm', 'slurm']


def test_tpu_runs_the_command_on_every_worker():
  out = dry_run('tpu --name v4 --zone z1 --project p --dry_run -- python3 -m experiments.lm '
                "--workdir 'gs://b/my run'")
  assert out == ('gcloud compute tpus tpu-vm ssh v4 --zone=z1 --project=p --worker=all '
                 "'--command=cd genai && python3 -m experiments.lm --workdir '\"'\"'gs://b/my "
                 "run'\"'\"''")
  # What the remote shell receives is the command exactly.
  remote = shlex.split(out)[-1].removeprefix('--command=')
  assert shlex.split(remote.split(' && ', 1)[1]) == ['python3', '-m', 'experiments.lm',
                                                      '--workdir', 'gs://b/my run']


def test_gpu_one_process_is_the_command_itself_and_n_processes_get_distributed_flags():
  assert dry_run('gpu --dry_run -- python -m experiments.lm --workdir w') == (
      'python -m experiments.lm --workdir w')
  lines = dry_run('gpu --processes 2 --port 1234 --dry_run -- python -m experiments.lm').split('\n')
  assert lines == [
      f'CUDA_VISIBLE_DEVICES={i} python -m experiments.lm --config.parallel.distributed=on '
      '--config.parallel.coordinator_address=127.0.0.1:1234 --config.parallel.num_processes=2 '
      f'--config.parallel.process_id={i} &' for i in range(2)] + ['wait']


def test_slurm_is_one_task_per_gpu_with_the_options_given():
  assert dry_run('slurm --nodes 2 --gpus_per_node 4 --partition gpu --account lab --time 1:00:00 '
                 '--dry_run -- python -m experiments.lm') == (
      'srun --nodes=2 --ntasks-per-node=4 --gpus-per-node=4 --partition=gpu --account=lab '
      '--time=1:00:00 --kill-on-bad-exit=1 python -m experiments.lm')


@pytest.mark.parametrize('argv, match', [
    (['gpu', '--dry_run'], 'give the command after --'),
    (['gpu', '--dry_run', '--'], 'the command after -- is empty'),
    (['slurm', '--nodes', '2', '--dry_run', '--', 'x'], 'gpus_per_node'),
    (['tpu', '--zone', 'z', '--', 'x'], '--name'),
])
def test_bad_command_lines_are_usage_errors(argv, match, capsys):
  with pytest.raises(SystemExit) as e:
    launch.main(argv)
  assert e.value.code == 2 and match in capsys.readouterr().err


def _fake_tools(tmp_path, monkeypatch, *names):
  """Scripts on PATH that append their argv (one JSON line) to calls.txt."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  for name in names:
    (bin_dir / name).write_text(
        f'#!{sys.executable}\nimport json, sys\n'
        f'open({str(tmp_path / "calls.txt")!r}, "a").write(json.dumps(sys.argv[1:]) + "\\n")\n')
    (bin_dir / name).chmod(0o755)
  monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
  return tmp_path / 'calls.txt'


def test_without_dry_run_it_runs_the_printed_commands(tmp_path, monkeypatch):
  import json  # pylint: disable=g-import-not-at-top
  calls = _fake_tools(tmp_path, monkeypatch, 'gcloud', 'srun', 'sbatch', 'git')
  assert launch.main(['tpu', '--name', 'v', '--zone', 'z', '--copy_repo', '--', 'echo', 'hi']) == 0
  assert launch.main(['slurm', '--nodes', '1', '--gpus_per_node', '2', '--', 'echo']) == 0
  script = tmp_path / 'job.sbatch'
  assert launch.main(['slurm', '--nodes', '1', '--gpus_per_node', '2', '--sbatch', str(script),
                      '--repo_dir', '/r', '--', 'echo']) == 0
  got = [json.loads(line) for line in calls.read_text().splitlines()]
  assert [g[:2] for g in got] == [['archive', '--format=tar.gz'], ['compute', 'tpus'],
                                  ['compute', 'tpus'], ['--nodes=1', '--ntasks-per-node=2'],
                                  [str(script)]]
  assert got[2][-1].endswith('&& cd genai && echo hi')
  text = script.read_text()
  assert '#SBATCH --ntasks-per-node=2\n' in text and text.endswith(
      'cd /r\nsrun --kill-on-bad-exit=1 echo\n')


def test_a_missing_tool_is_one_line(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv('PATH', str(tmp_path))
  assert launch.main(['slurm', '--nodes', '1', '--gpus_per_node', '1', '--', 'x']) == 127
  assert capsys.readouterr().err == ('error: srun not found on PATH; --dry_run prints the '
                                     'commands\n')


def test_one_failed_process_stops_the_others():
  code = ('import sys, time; pid = sys.argv[-1].rsplit("=", 1)[1]; '
          'time.sleep(60) if pid == "0" else sys.exit(3)')
  t0 = time.perf_counter()
  assert launch.main(['gpu', '--processes', '2', '--', sys.executable, '-c', code]) == 3
  assert time.perf_counter() - t0 < 30


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_the_quick_start_model_on_cpu(tmp_path):
  """`gpu --processes 2` for real, on a CPU (each process one CPU device, gloo): one run of
  two processes that trains, evaluates and checkpoints."""
  workdir = tmp_path / 'run'
  proc = subprocess.run(
      [sys.executable, '-m', 'genai.launch', 'gpu', '--processes', '2', '--port',
       str(_free_port()), '--', sys.executable, '-m', 'experiments.lm', '--config',
       'configs/lm/pydoc_char.py:runlocal', '--workdir', str(workdir)],
      cwd=REPO, capture_output=True, text=True, timeout=600,
      env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'})
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert 'step 6/6' in proc.stdout and proc.stdout.count('step 6/6') == 1  # process 0 logs
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['4', '6']
