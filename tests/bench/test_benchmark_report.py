"""benchmarks/report.py: parsing script output, running a script into a result file, and
docs/benchmarks.md being exactly what the committed result files render to."""
import importlib.util
import json
import os

import pytest

from benchmarks import report

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_every_benchmark_names_a_script_that_exists():
  for b in report.BENCHMARKS:
    if b.args[0] == '-m':
      assert importlib.util.find_spec(b.args[1]) is not None, b.name
    else:
      assert os.path.exists(os.path.join(REPO, b.args[0])), b.name
  assert len({b.name for b in report.BENCHMARKS}) == len(report.BENCHMARKS)


def test_json_objects_and_markdown_tables_are_read_out_of_mixed_output():
  text = '\n'.join([
      'trained in 6 s', '{"a": 1, "b": {"c": [1, 2]}}', 'RESULT {"d": 2}', '{not json',
      '{', ' "e": 3.5', '}', 'prose with {"f": 1} inside', '',
      '| model | ppl |', '|---|---|', '| int8 | 6.16 |', '| int4 | 6.19 |', 'done',
      '| not | a table |'])
  assert report.json_objects(text) == [{'a': 1, 'b': {'c': [1, 2]}}, {'d': 2}, {'e': 3.5}]
  assert report.markdown_tables(text) == [['| model | ppl |', '|---|---|', '| int8 | 6.16 |',
                                           '| int4 | 6.19 |']]
  assert report.table_rows(text) == [{'model': 'int8', 'ppl': '6.16'},
                                     {'model': 'int4', 'ppl': '6.19'}]


def test_log_lines_are_dropped_from_stored_output():
  text = ('W0000 00:00:1795706957.593819    4670 helpers.cc:364] Ignored output_format.\n'
          'WARNING:absl:read only\nI1126 10:00:00.1 x.py:1] info\n{"x": 1}\n\n| a |\n')
  assert report.clean_stdout(text) == '{"x": 1}\n| a |'


def _bench(name, code, headline=lambda objs, text: {'quality': f'x = {objs[-1]["x"]}'}):
  return report.Benchmark(name, 'test', ('-c', code), 'a test script', 0.1, (), headline)


def test_a_run_stores_command_machine_peak_rss_and_output(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  code = ('import json, numpy as np; a = np.ones(40_000_000); a += 1; '  # 320 MB
          'print("W0000 log line"); print(json.dumps({"x": float(a[0])}))')
  result = report.run_benchmark(_bench('demo', code), str(tmp_path / 'results'), 'DATA')
  stored = json.loads((tmp_path / 'results' / 'demo.json').read_text())
  assert stored == result
  assert stored['returncode'] == 0 and stored['stdout'] == '{"x": 2.0}'
  assert stored['command'].startswith("python -c 'import json")
  assert 300 <= stored['peak_rss_mib'] < 2000
  assert stored['machine']['cores'] == os.cpu_count() and stored['machine']['jax']
  assert stored['wall_s'] > 0 and stored['date'].endswith('UTC')


def test_a_failed_run_keeps_the_previous_result(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  results = str(tmp_path / 'results')
  good = report.run_benchmark(_bench('demo', 'print(\'{"x": 1}\')'), results, 'DATA')
  with pytest.raises(RuntimeError, match='exit status 3; the previous result is kept'):
    report.run_benchmark(_bench('demo', 'import sys; print("boom"); sys.exit(3)'), results,
                         'DATA')
  assert json.loads((tmp_path / 'results' / 'demo.json').read_text()) == good
  log = (tmp_path / 'runs/bench/report/demo.log').read_text()
  assert log.startswith("$ python -c 'import sys; print(\"boom\")") and 'boom\n' in log
  # A script that exits 0 but prints no figures the report can read is a failure too.
  with pytest.raises(RuntimeError, match='no headline figures'):
    report.run_benchmark(_bench('demo', 'print("no json here")'), results, 'DATA')
  assert json.loads((tmp_path / 'results' / 'demo.json').read_text()) == good


def test_render_names_machines_and_lists_what_is_not_on_record():
  stdout = '{"requests": 8, "clients": 2, "errors": 0, "requests_per_s": 10.0, ' \
           '"tokens_per_s": 120.0, "latency_p50_s": 0.1, "latency_p99_s": 0.25}'
  r = {'name': 'serve_load', 'command': 'python -m benchmarks.serve_load', 'budget': 'b',
       'commit': 'abc1234', 'date': '2026-11-26 10:00 UTC', 'wall_s': 75.0, 'returncode': 0,
       'peak_rss_mib': 900, 'stdout': stdout,
       'machine': {'cpu': 'AMD EPYC (x86_64)', 'cores': 2, 'memory_gib': 23,
                   'accelerator': '1 x cpu (cpu)', 'jax': '0.10.2', 'python': '3.11.7'}}
  text = report.render({'serve_load': r})
  assert '| M1 | AMD EPYC (x86_64), 2 cores, 23 GiB; 1 x cpu (cpu); jax 0.10.2' in text
  assert ('| serving | [serve_load](#serve_load) | 0 errors in 8 requests | 10 requests/s, '
          '120 tokens/s, latency p50 100 ms, p99 250 ms (2 clients) | 900 MiB (largest '
          'process) | M1, 2026-11-26, abc1234 | 1.2 min |') in text
  others = [b.name for b in report.BENCHMARKS if b.name != 'serve_load']
  assert all(f'`python -m benchmarks.report --run {n}`' in text for n in others)
  assert report.render({'serve_load': r}) == text  # deterministic


def test_docs_benchmarks_md_is_what_the_committed_results_render_to():
  with open(os.path.join(REPO, report.DOC)) as f:
    doc = f.read()
  assert doc == report.render(report.load_results(report.RESULTS_DIR)), (
      'docs/benchmarks.md is out of date: python -m benchmarks.report')


def test_unknown_benchmark_names_the_choices(capsys):
  with pytest.raises(SystemExit, match=r"unknown benchmark\(s\) \['nope'\]; choose from"):
    report.main(['--run', 'nope', '--doc', os.devnull])


def test_list_shows_every_benchmark(capsys):
  assert report.main(['--list']) == 0
  out = capsys.readouterr().out
  assert all(b.name in out for b in report.BENCHMARKS)
