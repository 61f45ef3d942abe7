"""benchmarks/gpu_check.py in its CPU form: a 1-test selection and a tiny model, MFU against
the CPU's measured matmul peak, the result file written through benchmarks/results.py; a
failing test group is on record with what failed; GPT-2 small needs --force without a GPU."""
import json
import os

import pytest

from benchmarks import gpu_check
from benchmarks import results

LIGHT_TEST = 'tests/test_import_layers.py::test_the_layers_block_names_every_package'


@pytest.mark.slow  # a benchmark run with a pytest subprocess
def test_cpu_form_writes_a_valid_result(tmp_path):
  code = gpu_check.main(['--preset', 'tiny', '--steps', '2', '--batch_per_device', '1',
                         '--tests', LIGHT_TEST, '--results_dir', str(tmp_path)])
  assert code == 0
  r = results.load(str(tmp_path / 'gpu_check.json'))
  assert results.validate(r) == []
  f = r['figures']
  assert f['tests.selection.status'] == 'passed' and f['tests.selection.tests'] == 1
  assert f['tests_failed'] == 0 and f['preset'] == 'tiny' and f['block'] == 64
  assert 0 < f['mfu'] < 1 and f['tokens_per_sec'] > 0
  if f['device'] == 'cpu':
    assert f['peak_source'].startswith('measured')
  assert r['tables'][0]['rows'][0][:2] == ['selection', 'passed']
  assert 'MFU' in r['headline']['speed'] and '1/1 groups passed' in r['headline']['quality']


@pytest.mark.slow  # pytest subprocesses
def test_a_failing_group_names_its_first_failure(tmp_path):
  (tmp_path / 'test_broken.py').write_text(
      'def test_ok():\n  pass\n\ndef test_bad():\n  assert 1 == 2, "bf16 drifted"\n\n'
      'def test_never_reached():\n  pass\n')
  r = gpu_check.run_group('bf16', [str(tmp_path / 'test_broken.py')], 120,
                          dict(os.environ), str(tmp_path))
  assert r['status'] == 'failed' and r['failures'] == 1 and r['tests'] == 2  # -x stopped it
  assert 'test_bad' in r['first_failure'] and 'bf16 drifted' in r['first_failure']
  (tmp_path / 'test_slow.py').write_text('import time\n\ndef test_slow():\n  time.sleep(60)\n')
  r = gpu_check.run_group('slow', [str(tmp_path / 'test_slow.py')], 1, dict(os.environ),
                          str(tmp_path))
  assert r['status'] == 'timeout' and r['wall_s'] < 30


def test_the_groups_name_tests_that_exist():
  for _, args in gpu_check.GROUPS:
    for arg in args:
      if arg.startswith('tests/'):
        assert os.path.exists(os.path.join(gpu_check.REPO, arg.split('::')[0])), arg


def test_gpt2_small_without_a_gpu_says_how_to_run_it(tmp_path, monkeypatch):
  monkeypatch.setattr(gpu_check, 'gpu_count', lambda: 0)
  monkeypatch.setattr(gpu_check.os.path, 'exists', lambda p: False)
  with pytest.raises(SystemExit, match='no GPU found.*--preset tiny'):
    gpu_check.main(['--results_dir', str(tmp_path)])
  assert not os.listdir(tmp_path)
