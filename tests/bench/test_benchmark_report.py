"""benchmarks/results.py (the one result schema every script writes) and benchmarks/report.py
(running the scripts into result files, and docs/benchmarks.md being exactly what the
committed result files render to)."""
import importlib.util
import json
import os
import shlex
import subprocess
import sys

import pytest

from benchmarks import report
from benchmarks import results

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_every_benchmark_names_a_script_that_writes_its_result_file():
  for b in report.BENCHMARKS:
    argv = shlex.split(b.command)
    assert argv[0] == 'python', b.name
    if argv[1] == '-m':
      spec = importlib.util.find_spec(argv[2])
      assert spec is not None, b.name
      path, default_name = spec.origin, argv[2].rsplit('.', 1)[-1]
    else:
      path, default_name = os.path.join(REPO, argv[1]), os.path.basename(argv[1])[:-3]
    with open(path) as f:
      source = f.read()
    assert 'results_lib.write(' in source, f'{b.name}: {path} writes no result file'
    # The result file's stem is the benchmark's name: the script's default or --result_name.
    name = argv[argv.index('--result_name') + 1] if '--result_name' in argv else default_name
    assert name == b.name
  assert len({b.name for b in report.BENCHMARKS}) == len(report.BENCHMARKS)


def test_write_detects_command_commit_machine_wall_and_peak_rss(tmp_path):
  path = results.write('demo', {'a': {'b': 1.5}, 'xs': [1, 2], 'ok': True, 'n': None},
                       headline={'quality': 'a.b = 1.5', 'speed': ''},
                       tables=[results.table('t', ['c', 'd'], [[1, 'x']])], notes=['a note'],
                       config={'k': (1, 2)}, results_dir=str(tmp_path), torch=False)
  assert path == str(tmp_path / 'demo.json')
  r = json.loads((tmp_path / 'demo.json').read_text())
  assert results.validate(r) == []
  assert r['schema'] == results.SCHEMA and r['name'] == 'demo'
  assert r['figures'] == {'a.b': 1.5, 'xs': '[1, 2]', 'ok': True, 'n': None}
  assert r['headline'] == {'quality': 'a.b = 1.5'}  # empty entries dropped
  assert r['tables'] == [{'title': 't', 'columns': ['c', 'd'], 'rows': [[1, 'x']]}]
  assert r['notes'] == ['a note'] and r['config'] == {'k': [1, 2]}
  assert r['command'].startswith('python ') and r['commit']
  m = r['machine']
  assert m['cores'] == os.cpu_count() and m['memory_gib'] > 0 and '(' in m['cpu']
  assert m['jax'] and m['jaxlib'] and m['python'] and m['accelerator']
  assert 'torch' not in m  # only where a torch reference ran
  assert r['started'].endswith(' UTC') and 0 <= r['wall_s'] < 36000
  assert r['peak_rss_mib'] > 10
  if importlib.util.find_spec('torch'):
    results.write('demo', {}, results_dir=str(tmp_path), torch=True)
    assert results.load(path)['machine']['torch']


def test_validate_names_what_is_wrong():
  good = {'schema': 1, 'name': 'x', 'command': 'python x.py', 'commit': 'abc', 'machine': {},
          'started': '2026-01-01 00:00 UTC', 'wall_s': 1.0, 'peak_rss_mib': None,
          'headline': {}, 'figures': {'a': 1, 'b': 'two', 'c': None}}
  assert results.validate(good) == []
  bad = dict(good, figures={'a': [1, 2]}, headline={'fast': 'yes'}, extra=1,
             tables=[{'title': 't', 'columns': ['a'], 'rows': [[1, 2]]}])
  del bad['commit']
  problems = '\n'.join(results.validate(bad))
  for what in ('commit: missing', 'figures.a: list', 'headline.fast', 'extra: unknown key',
               'table t: malformed'):
    assert what in problems
  with pytest.raises(ValueError, match='not a valid result'):
    results.save(bad, '/nonexistent')


DEMO = '''
import sys
from absl import app, flags
import numpy as np
from benchmarks import results
results.define_flags('demo')
flags.DEFINE_integer('code', 0, 'exit status')
flags.DEFINE_bool('write', True, 'write a result')
flags.DEFINE_bool('bad', False, 'write a file that is not a result')

def main(argv):
  a = np.ones(40_000_000); a += 1  # 320 MB
  print('W0000 a log line')
  if flags.FLAGS.bad:
    with open(flags.FLAGS.results_dir + '/demo.json', 'w') as f:
      f.write('{"name": "demo"}')
  elif flags.FLAGS.write:
    results.write(flags.FLAGS.result_name, {'x': float(a[0])}, headline={'quality': 'x = 2'},
                  results_dir=flags.FLAGS.results_dir)
  sys.exit(flags.FLAGS.code)

app.run(main)
'''


def _demo(tmp_path, monkeypatch, *flags_):
  (tmp_path / 'demo.py').write_text(DEMO)
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv('PYTHONPATH', REPO)
  return report.Benchmark('demo', 'test', shlex.join(['python', 'demo.py', *flags_]),
                          'a test script', 0.1)


def test_a_run_stores_the_result_file_the_script_wrote(tmp_path, monkeypatch):
  bench = _demo(tmp_path, monkeypatch)
  result = report.run_benchmark(bench, str(tmp_path / 'results'), 'DATA', note='shared CPU')
  stored = json.loads((tmp_path / 'results' / 'demo.json').read_text())
  assert stored == result and results.validate(stored) == []
  assert stored['figures'] == {'x': 2.0} and stored['notes'] == ['Run note: shared CPU']
  assert stored['command'] == f'python {tmp_path / "demo.py"}'
  assert 300 <= stored['peak_rss_mib'] < 2000
  assert stored['machine']['cores'] == os.cpu_count() and stored['wall_s'] > 0
  assert not os.path.exists(os.path.join(results.RESULTS_DIR, 'demo.json'))  # staged, not here
  log = (tmp_path / 'runs/bench/report/demo.log').read_text()
  assert log.startswith('$ python demo.py\n') and 'W0000 a log line' in log


def test_a_failed_run_keeps_the_previous_result(tmp_path, monkeypatch):
  results_dir = str(tmp_path / 'results')
  good = report.run_benchmark(_demo(tmp_path, monkeypatch), results_dir, 'DATA')
  with pytest.raises(RuntimeError, match='exit status 3; the previous result is kept'):
    report.run_benchmark(_demo(tmp_path, monkeypatch, '--code=3'), results_dir, 'DATA')
  # A script that exits 0 but writes no result file is a failure too.
  with pytest.raises(RuntimeError, match='wrote no result file demo.json'):
    report.run_benchmark(_demo(tmp_path, monkeypatch, '--nowrite'), results_dir, 'DATA')
  with pytest.raises(RuntimeError, match=r'its result file is invalid \(schema: missing'):
    report.run_benchmark(_demo(tmp_path, monkeypatch, '--bad'), results_dir, 'DATA')
  assert json.loads((tmp_path / 'results' / 'demo.json').read_text()) == good


@pytest.mark.slow  # a benchmark subprocess
def test_a_real_script_with_tiny_settings_writes_a_valid_result(tmp_path):
  cmd = [sys.executable, '-m', 'benchmarks.lm_mfu', '--steps', '1', '--batch_per_device', '1',
         '--results_dir', str(tmp_path)]
  subprocess.run(cmd, check=True, cwd=REPO, capture_output=True)
  r = results.load(str(tmp_path / 'lm_mfu.json'))
  assert results.validate(r) == []
  assert r['command'] == shlex.join(['python', *cmd[1:]])
  assert r['figures']['ms_per_step'] > 0 and r['figures']['mesh.data'] == 1
  assert 'MFU' in r['headline']['speed'] and 'ms/step' in r['headline']['speed']


@pytest.mark.slow  # a benchmark run
def test_moderation_throughput_through_the_report(tmp_path, monkeypatch):
  monkeypatch.chdir(REPO)
  bench = report.Benchmark('moderation_throughput', 'safety', 'python -m '
                           'benchmarks.moderation_throughput --num_texts 100 --rounds 1',
                           'tiny', 0.1)
  r = report.run_benchmark(bench, str(tmp_path), 'DATA')
  assert results.validate(r) == []
  assert r['figures']['num_texts'] == 100 and r['figures']['rules_only.texts_per_s'] > 0
  assert r['tables'][0]['columns'] == ['setting', 'texts/s', 'ms/1k texts']
  assert r['headline']['speed'].startswith('rules only: ')


def _result(**over):
  r = {'schema': 1, 'name': 'serve_load', 'command': 'python -m benchmarks.serve_load',
       'commit': 'abc1234', 'started': '2026-11-26 10:00 UTC', 'wall_s': 75.0,
       'peak_rss_mib': 900,
       'machine': {'cpu': 'AMD EPYC (x86_64)', 'cores': 2, 'memory_gib': 23,
                   'accelerator': '1 x cpu (cpu)', 'python': '3.11.7', 'jax': '0.10.2',
                   'jaxlib': '0.10.2'},
       'headline': {'quality': '0 errors in 8 requests', 'speed': '10 requests/s'},
       'figures': {'requests': 8, 'errors': 0, 'requests_per_s': 10.123456789, 'ok': True}}
  return r | over


def test_render_reads_only_the_result_files():
  r = _result()
  text = report.render({'serve_load': r})
  assert ('| M1 | AMD EPYC (x86_64), 2 cores, 23 GiB; 1 x cpu (cpu); jax 0.10.2, jaxlib 0.10.2, '
          'Python 3.11.7 |') in text
  assert ('| serving | [serve_load](#serve_load) | 0 errors in 8 requests | 10 requests/s | '
          '900 MiB (largest process) | M1, 2026-11-26, abc1234 | 1.2 min |') in text
  assert '| requests_per_s | 10.1235 |\n| ok | true |' in text  # the figures, 6 digits
  assert '<details>' not in text
  others = [b.name for b in report.BENCHMARKS if b.name != 'serve_load']
  assert all(f'`python -m benchmarks.report --run {n}`' in text for n in others)
  assert report.render({'serve_load': r}) == text  # deterministic
  # Tables are shown as they are; the figures then fold away; notes and torch are shown.
  r = _result(tables=[results.table('latency', ['p50', 'p99'], [['0.1 s', '0.3 s']])],
              notes=['CI shared the CPU'], headline={'memory': '1 GiB'})
  r['machine']['torch'] = '2.13.0+cpu'
  text = report.render({'serve_load': r})
  assert 'latency\n\n| p50 | p99 |\n|---|---|\n| 0.1 s | 0.3 s |\n' in text
  assert '<details><summary>All figures</summary>\n\n| figure | value |' in text
  assert 'CI shared the CPU' in text and 'PyTorch reference: torch 2.13.0+cpu' in text
  assert '|  |  | 1 GiB | M1' in text


def test_committed_results_follow_the_schema():
  names = {b.name for b in report.BENCHMARKS}
  for fn in sorted(os.listdir(report.RESULTS_DIR)):
    r = results.load(os.path.join(report.RESULTS_DIR, fn))
    assert results.validate(r) == [], fn
    assert fn == f'{r["name"]}.json' and r['name'] in names
    assert r['headline'] and r['figures']


def test_docs_benchmarks_md_is_what_the_committed_results_render_to():
  with open(os.path.join(REPO, report.DOC)) as f:
    doc = f.read()
  assert doc == report.render(report.load_results(report.RESULTS_DIR)), (
      'docs/benchmarks.md is out of date: python -m benchmarks.report')


def test_unknown_benchmark_names_the_choices():
  with pytest.raises(SystemExit, match=r"unknown benchmark\(s\) \['nope'\]; choose from"):
    report.main(['--run', 'nope', '--doc', os.devnull])


def test_list_shows_every_benchmark(capsys):
  assert report.main(['--list']) == 0
  out = capsys.readouterr().out
  assert all(b.name in out for b in report.BENCHMARKS)
  assert 'on record 2026-' in out
