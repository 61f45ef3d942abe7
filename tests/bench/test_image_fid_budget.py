"""benchmarks/image_fid_budget.py: training minutes from the loop's log, resumes included."""
import pytest

from benchmarks import image_fid_budget as bench


def test_train_seconds_from_log_windows_and_a_resume():
  log = ['I0000 noise', 'step 100/900 | loss 0.5 | 200.0 ms/step | ETA 1m',
         'eval @ 100: eval/loss 0.3', 'step 200/900 | loss 0.4 | 100.0 ms/step | ETA 1m',
         'step 300/900 | loss 0.3 | 100.0 ms/step | ETA 1m',
         # killed after step 300; resumed from the checkpoint at 200: step 300 is redone
         'step 300/900 | loss 0.3 | 150.0 ms/step | ETA 1m',
         'step 400/900 | loss 0.3 | 100.0 ms/step | ETA 1m']
  sec = bench.train_seconds_by_step(log)
  assert sec == pytest.approx({100: 20.0, 200: 30.0, 300: 45.0, 400: 55.0})
  assert bench.minutes_at(400, sec) == pytest.approx(55.0 / 60)
  assert bench.minutes_at(250, sec) == pytest.approx(37.5 / 60)  # interpolated
  assert bench.minutes_at(50, sec) == pytest.approx(10.0 / 60)   # from 0 at step 0
  # A SIGTERM stop between log lines, then the resumed run's first window from there.
  stop = ['step 100/900 | loss 0.5 | 200.0 ms/step | ETA 1m',
          'SIGTERM: saved checkpoint at step 148; exiting.', 'Trained steps 1..148 in 0m31s.',
          'step 200/900 | loss 0.4 | 100.0 ms/step | ETA 1m']
  assert bench.train_seconds_by_step(stop) == pytest.approx({100: 20.0, 148: 29.6, 200: 34.8})


def test_other_lines_and_the_throughput_suffix():
  lines = ['step 1000/100000 | loss 2.1545 | 183.5 ms/step | 1.2k tok/s | ETA 5h',
           'Trained steps 1..1000 in 3m03s.', 'eval @ 1000: eval/fid_domain 12.0']
  assert bench.train_seconds_by_step(lines) == pytest.approx({1000: 183.5})


def test_num_samples_0_trains_only(tmp_path):
  """--num_samples 0: train to --train_minutes and stop; evaluation is a later command (the
  workdir here has no checkpoints, which evaluating would refuse)."""
  import os, subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  log = tmp_path / 'train.log'
  log.write_text('step 100/900 | loss 0.5 | 1200.0 ms/step | ETA 1m\n')  # 2 minutes
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  out = subprocess.run(
      [sys.executable, '-m', 'benchmarks.image_fid_budget', '--family', 'gan', '--workdir',
       str(tmp_path / 'w'), '--train_log', str(log), '--config', 'configs/gan/mnist_fid.py',
       '--train_minutes', '1.5', '--num_samples', '0'],
      cwd=root, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert 'already trained 2.0 >= 1.5 minutes.' in out.stdout
  alone = subprocess.run(
      [sys.executable, '-m', 'benchmarks.image_fid_budget', '--family', 'gan', '--workdir',
       str(tmp_path / 'w'), '--num_samples', '0'], cwd=root, capture_output=True, text=True,
      timeout=300)
  assert alone.returncode == 2
  assert alone.stderr.strip().splitlines()[-1] == (
      'error: --num_samples 0 trains only: give --train_minutes and --config.')
