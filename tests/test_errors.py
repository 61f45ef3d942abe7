"""genai/errors.py: a user error is one line `error: <what>; <fix>` with exit code 2 (usage)
or 1; a bug keeps its traceback; --verbose_errors / GENAI_TRACEBACK=1 add the traceback."""
import subprocess
import sys

import numpy as np
import pytest

from genai import errors
from genai.data import text_sources
from genai.train import loop


@pytest.fixture(autouse=True)
def _no_traceback_env(monkeypatch):
  monkeypatch.setenv(errors.TRACEBACK_ENV, '0')  # restored after the test, whoever set it


def _raise_value_error_in_genai():
  text_sources.load_text(type('C', (), {'source': 'nope'})())


def _raise_value_error_in_numpy():
  np.zeros(3).reshape(4)


def _caught(fn):
  try:
    fn()
  except Exception as e:  # pylint: disable=broad-except
    return e
  raise AssertionError('no exception')


def test_what_counts_as_a_user_error():
  assert errors.is_user_error(errors.DataError('x', 'y'))
  assert errors.is_user_error(_caught(_raise_value_error_in_genai))  # genai's own check
  assert not errors.is_user_error(_caught(_raise_value_error_in_numpy))  # a library's: a bug
  assert not errors.is_user_error(TypeError('bug'))
  assert not errors.is_user_error(ValueError('no traceback, not raised by genai'))
  assert errors.is_user_error(loop.NonFiniteLossError('NaN at step 3; lower the lr'))
  from absl import app  # pylint: disable=g-import-not-at-top
  assert errors.is_user_error(app.UsageError('--workdir is required.'))
  assert errors.exit_code(app.UsageError('x')) == 2


def test_the_line_and_the_exit_codes(capsys):
  assert errors.report(errors.DataError('a.txt is not UTF-8.', 'convert it')) == 1
  assert capsys.readouterr().err == 'error: a.txt is not UTF-8; convert it\n'
  assert errors.report(errors.UsageError('--x is required', 'see --help')) == 2
  assert capsys.readouterr().err == 'error: --x is required; see --help\n'
  assert errors.report(errors.MissingError('version v9 is not in r')) == 1
  assert capsys.readouterr().err == 'error: version v9 is not in r\n'  # not KeyError's quotes
  assert errors.report(ValueError('two\n  lines')) == 1
  assert capsys.readouterr().err == 'error: two lines\n'
  e = _caught(lambda: open('/nonexistent/x.txt'))  # pylint: disable=consider-using-with
  assert errors.message(e) == '/nonexistent/x.txt: no such file or directory; check the path'


def test_run_cli_user_error_bug_and_verbose(capsys):

  def main(argv):
    if argv == ['bug']:
      raise TypeError('a bug')
    if argv and argv[0] == 'data':
      _raise_value_error_in_genai()
    return 0

  assert errors.run_cli(main, []) == 0
  assert errors.run_cli(main, ['data']) == 1
  err = capsys.readouterr().err
  assert err.startswith("error: data.source='nope' is not a known text source") and (
      'Traceback' not in err and len(err.splitlines()) == 1)
  with pytest.raises(TypeError):
    errors.run_cli(main, ['bug'])
  assert errors.run_cli(main, ['data', '--verbose_errors']) == 1  # the flag is removed
  err = capsys.readouterr().err
  assert 'Traceback' in err and err.splitlines()[-1].startswith('error: data.source=')


def test_argument_parser_errors_are_usage_errors(capsys):
  def main(argv):
    p = errors.ArgumentParser(prog='prog')
    sub = p.add_subparsers(dest='cmd', required=True)
    sub.add_parser('go').add_argument('--root', required=True)
    p.parse_args(argv)

  assert errors.run_cli(main, ['go']) == 2
  assert capsys.readouterr().err == ('error: prog go: the following arguments are required: '
                                     '--root; see prog go --help\n')


def test_an_absl_program_end_to_end(tmp_path):
  """run_absl: a user error in main, a flag error, a bug (traceback), GENAI_TRACEBACK=1."""
  prog = tmp_path / 'prog.py'
  prog.write_text(
      'import sys\n'
      'from absl import flags\n'
      'from genai import errors\n'
      "flags.DEFINE_string('mode', 'ok', '')\n"
      'def main(argv):\n'
      "  if flags.FLAGS.mode == 'user':\n"
      "    raise errors.DataError('x.png is 1x1', 'delete it')\n"
      "  if flags.FLAGS.mode == 'bug':\n"
      "    raise KeyError('bug')\n"
      "  print('fine')\n"
      "errors.run_absl(main)\n")

  def run(*args, env=None):
    import os  # pylint: disable=g-import-not-at-top
    return subprocess.run([sys.executable, str(prog), *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})

  r = run('--mode=user')
  assert (r.returncode, r.stderr) == (1, 'error: x.png is 1x1; delete it\n')
  r = run('--mod=user')
  assert r.returncode == 2 and r.stderr.splitlines() == [
      "error: Unknown command line flag 'mod'. Did you mean: mode ?; see --helpshort for the "
      'flags']
  r = run('--mode=bug')
  assert r.returncode == 1 and 'Traceback' in r.stderr and "KeyError: 'bug'" in r.stderr
  r = run('--mode=user', env={'GENAI_TRACEBACK': '1'})
  assert r.returncode == 1 and 'Traceback' in r.stderr
  assert r.stderr.splitlines()[-1] == 'error: x.png is 1x1; delete it'
  assert run().stdout == 'fine\n'
