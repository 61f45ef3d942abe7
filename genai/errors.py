"""User errors on the command line: one line, the right exit code, the traceback on request.

Every command line of genai (the experiments through genai/train/cli.py, `genai.serve`,
`genai.export`, `genai.evaluation.fid`, `experiments.retrain`, `genai.safety.audit`,
`genai.data.prepare`) runs its main function through `run_absl` (absl programs) or
`run_cli` (argparse programs). An exception that is a *user error* ends the program with
one line on stderr,

  error: <what is wrong>; <how to fix it>

and exit code 2 for a wrong command line (a missing, unknown or malformed flag or config
field) or 1 for anything else the user can fix (bad data, a bad config value, a damaged
checkpoint, a missing file). Everything else is a bug: it propagates with its traceback
(exit code 1, Python's own). `--verbose_errors` on any command line (removed before the
program parses its flags), or GENAI_TRACEBACK=1 in the environment, prints the traceback of
a user error too, above the same line.

What counts as a user error:
  - a `UserError` (below), raised by genai code that knows what the user should do, and
    any other exception class genai defines for a condition the user meets (e.g.
    loop.NonFiniteLossError, _extras.MissingExtra): their messages say what to do;
  - absl's `app.UsageError` and flag errors, and argparse errors (through `ArgumentParser`);
  - a ValueError or one of the file-system OSErrors (FileNotFoundError, FileExistsError,
    NotADirectoryError, IsADirectoryError, PermissionError) raised *by genai's own code*
    (the innermost frame of its traceback is in genai/, experiments/ or configs/): these
    are the checks of configs, flags and inputs. The same types raised inside numpy, jax
    or another library are bugs of ours until a genai check catches them first;
  - an ImportError raised by genai's own code for a package this environment lacks (a
    ModuleNotFoundError of a non-genai module, or a message that says `pip install ...`).

This module sits below every package of genai (docs/architecture.md): it imports nothing
from genai, so every command line can use it.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import traceback
from typing import Any, Callable, NoReturn, Sequence

VERBOSE_FLAG = '--verbose_errors'
TRACEBACK_ENV = 'GENAI_TRACEBACK'
EXIT_USAGE = 2   # the command line itself is wrong
EXIT_ERROR = 1   # anything else the user can fix (and, with a traceback, bugs)


class UserError(Exception):
  """An error the user can fix: `what` went wrong and the `fix`. Printed as one line."""
  exit_code = EXIT_ERROR

  def __init__(self, what: str, fix: str = ''):
    self.what, self.fix = what, fix
    what = what.rstrip()
    if what.endswith('.') and not what.endswith('..'):  # 'x is wrong.; fix' -> 'x is wrong; fix'
      what = what[:-1]
    super().__init__(f'{what}; {fix}' if fix else what)

  def __str__(self) -> str:  # not KeyError's quoted repr, for MissingError
    return str(self.args[0]) if self.args else ''


class UsageError(UserError):
  """The command line is wrong (exit code 2)."""
  exit_code = EXIT_USAGE


class DataError(UserError, ValueError):
  """Input data that cannot be used: names the file, the position and the fix."""


class MissingError(UserError, KeyError):
  """Something the user named (a version, a key) does not exist."""


class CheckpointError(UserError):
  """A checkpoint that cannot be restored into this run (it does not fit its model)."""


class DamagedCheckpointError(CheckpointError):
  """A checkpoint whose files are missing or truncated."""

  def __init__(self, what: str, fix: str = '', *, step: int | None = None,
               problem: str = ''):
    super().__init__(what, fix)
    self.step, self.problem = step, problem


_OS_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
              PermissionError)
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PROJECT_DIRS = tuple(os.path.join(_ROOT, d) + os.sep for d in ('genai', 'experiments', 'configs'))


def _raised_by_project(exc: BaseException) -> bool:
  """Whether the innermost frame of `exc`'s traceback is genai's own code."""
  tb = exc.__traceback__
  if tb is None:
    return False
  while tb.tb_next is not None:
    tb = tb.tb_next
  return os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(_PROJECT_DIRS)


def _usage_types() -> tuple[type, ...]:
  out: tuple[type, ...] = ()
  if 'absl.app' in sys.modules:
    from absl import app  # pylint: disable=import-outside-toplevel
    from absl import flags  # pylint: disable=import-outside-toplevel
    out = (app.UsageError, flags.Error)
  return out


def is_user_error(exc: BaseException) -> bool:
  """True for the errors the user can fix (see the module docstring); False for bugs."""
  if isinstance(exc, (UserError,) + _usage_types()):
    return True
  if type(exc).__module__.split('.')[0] == 'genai':
    return True
  if isinstance(exc, ImportError) and _raised_by_project(exc):
    # A package missing from this environment, or genai's own "pip install ..." message;
    # not a broken import inside genai (a bug).
    if isinstance(exc, ModuleNotFoundError):
      return not (exc.name or 'genai').startswith('genai')
    return 'pip install' in str(exc)
  return isinstance(exc, (ValueError,) + _OS_ERRORS) and _raised_by_project(exc)


def exit_code(exc: BaseException) -> int:
  if isinstance(exc, UserError):
    return exc.exit_code
  return EXIT_USAGE if isinstance(exc, _usage_types()) else EXIT_ERROR


def message(exc: BaseException) -> str:
  """The one line (without 'error: ') for a user error."""
  if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
    text = f'{exc.filename}: {exc.strerror.lower()}; check the path'
  elif isinstance(exc, ModuleNotFoundError) and 'pip install' not in str(exc):
    text = (f'{exc}; install the package that provides it (pip install \'genai[all]\' holds '
            'every optional part)')
  else:
    text = str(exc) or type(exc).__name__
  return one_line(text)


def one_line(text: str) -> str:
  """`text` on one line; a traceback quoted in it (ml_collections quotes the one of a config
  file's get_config) shortened to its last line."""
  marker = 'Traceback (most recent call last):'
  if marker in text:
    head, _, tb = text.partition(marker)
    lines = [l.strip() for l in tb.splitlines() if l.strip()]
    text = head + (lines[-1] if lines else '')
  return ' '.join(text.split())


def verbose() -> bool:
  return os.environ.get(TRACEBACK_ENV, '').lower() not in ('', '0', 'false', 'no')


def report(exc: BaseException, file=None) -> int:
  """Prints the error line (the traceback first when verbose); returns the exit code."""
  file = file or sys.stderr
  if verbose():
    traceback.print_exception(exc, file=file)
  print(f'error: {message(exc)}', file=file)
  file.flush()
  return exit_code(exc)


def pop_verbose_flag(argv: list[str]) -> list[str]:
  """Removes `--verbose_errors` from `argv` (in place) and sets GENAI_TRACEBACK=1 if it
  was there; returns `argv`."""
  found = [a for a in argv if a == VERBOSE_FLAG or a.startswith(VERBOSE_FLAG + '=')]
  for a in found:
    argv.remove(a)
    if a.partition('=')[2].lower() not in ('0', 'false', 'no'):
      os.environ[TRACEBACK_ENV] = '1'
  return argv


def guard(fn: Callable[..., Any]) -> Callable[..., Any]:
  """`fn` with user errors turned into the one line and `sys.exit(code)`; bugs propagate."""

  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    try:
      return fn(*args, **kwargs)
    except Exception as e:  # pylint: disable=broad-except
      if not is_user_error(e):
        raise
      code = report(e)
    sys.exit(code)

  return wrapped


def fail(exc: BaseException) -> NoReturn:
  """Reports a user error and exits with its code (for parsers outside `guard`)."""
  sys.exit(report(exc))


def parse_absl_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing with a flag error as the one line and exit code 2 (absl's own
  `parse_flags_with_usage` prints two lines and exits 1)."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(UsageError(one_line(str(e)), 'see --helpshort for the flags'))


def run_absl(main: Callable[[list[str]], Any],
             flags_parser: Callable[[list[str]], list[str]] | None = None) -> None:
  """`absl.app.run(main)` with user errors as one line (flag parsing included)."""
  from absl import app  # pylint: disable=import-outside-toplevel
  pop_verbose_flag(sys.argv)
  parser = guard(flags_parser or parse_absl_flags)
  app.run(guard(main), flags_parser=parser)


def run_cli(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> int:
  """Runs an argparse program's `main(argv)`; returns its exit code (0 for None), or the
  user error's code after printing its line. Use as `sys.exit(run_cli(main))`."""
  args = pop_verbose_flag(list(sys.argv[1:] if argv is None else argv))
  try:
    return main(args) or 0
  except Exception as e:  # pylint: disable=broad-except
    if not is_user_error(e):
      raise
    return report(e)


class ArgumentParser(argparse.ArgumentParser):
  """argparse whose errors are a `UsageError` (one line, exit code 2 under `run_cli`), not
  argparse's usage block; sub-parsers inherit it."""

  def error(self, message: str) -> NoReturn:  # pylint: disable=redefined-outer-name
    raise UsageError(f'{self.prog}: {message}', f'see {self.prog} --help')
