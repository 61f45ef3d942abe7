"""The command line every experiment shares: `--config`, `--workdir`, and one action flag.

  python -m experiments.NAME --config configs/NAME/x.py --workdir W   # train (resumes)
  python -m experiments.NAME --workdir W --sample [family flags]      # act on a workdir

An experiment defines its own extra flags after `define_flags()` and ends with

  if __name__ == '__main__':
    define_flags()
    cli.run(cli.main(train_and_evaluate, _sample_from_flags, 'configs/NAME/digits.py'))

`run` turns a user error into one line on stderr, `error: <what>; <fix>`, with exit code 2
for a wrong command line and 1 otherwise (genai/errors.py; docs/errors.md).

Flags are defined only when a module runs as a program, so importing an experiment (tests,
benchmarks, notebooks) defines no global flags.
"""
from __future__ import annotations

import difflib
import os
import re
from typing import Any, Callable

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from genai import errors
from genai.parallel import cpu_devices
from genai.train import compile_cache


def define_flags(action: str = 'sample',
                 action_help: str = 'Sample from --workdir instead of training.') -> None:
  """--config, --workdir and the boolean action flag (default --sample)."""
  config_flags.DEFINE_config_file('config', None, 'Path to a config file.')
  flags.DEFINE_string('workdir', None, 'Where checkpoints, logs and samples go.')
  flags.DEFINE_bool(action, False, action_help)


def main(train_fn: Callable[[Any, str], Any], action_fn: Callable[[Any], None],
         example_config: str, action: str = 'sample') -> Callable[[list[str]], None]:
  """absl main: `action_fn(FLAGS)` when --<action> is set, else `train_fn(config, workdir)`.

  Usage errors name the missing flag and an example config. orbax and clu log every save at
  INFO, so the default verbosity is WARNING unless --verbosity is given.
  """

  def run(argv):
    del argv
    f = flags.FLAGS
    if not f['verbosity'].present:
      logging.set_verbosity(logging.WARNING)
      # TensorFlow (TensorBoard's writer, tfds) prints an INFO banner on import otherwise.
      os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
    compile_cache.enable()
    if not f.workdir:
      raise app.UsageError('--workdir is required.')
    if f[action].value:
      action_fn(f)
      return
    if f.config is None:
      raise app.UsageError(f'--config is required for training (e.g. {example_config}).')
    try:
      cpu_devices.configure(f.config)  # Before JAX starts its CPU backend.
    except ValueError as e:
      raise app.UsageError(str(e)) from None
    train_fn(f.config, f.workdir)

  return run


def unknown_field(argv: list[str], config: Any) -> str | None:
  """The first `--config.a.b=...` in argv that names no field of `config`, explained."""
  for arg in argv[1:]:
    m = re.match(r'--config\.([\w.]+)', arg)
    if not m or config is None:
      continue
    node, path = config, m.group(1).split('.')
    for i, key in enumerate(path):
      if isinstance(node, ml_collections.ConfigDict) and key in node:
        node = node[key]
        continue
      where = '.'.join(path[:i]) or 'the config'
      known = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
      hint = (f' did you mean {", ".join(".".join(path[:i] + [c]) for c in close)}?'
              if close else '')
      fields = f' Fields of {where}: {", ".join(known)}.' if known else (
          f' {where} is a {type(node).__name__}, not a block.')
      return (f'{arg.split("=")[0]}: {".".join(path[:i + 1])!r} is not a config field;'
              f'{hint}{fields} docs/configs.md lists every field.')
  return None


def load_config_spec(spec: str) -> Any:
  """`get_config(arg)` of a config file given as 'path.py[:arg]' (what --config takes)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  path, _, config_arg = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location('_genai_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(config_arg or None)


def _config_from_argv(argv: list[str]) -> Any:
  """`get_config(arg)` of the `--config path.py[:arg]` in argv (None if there is none)."""
  spec = None
  for i, arg in enumerate(argv[1:], 1):
    if arg.startswith('--config='):
      spec = arg.split('=', 1)[1]
    elif arg == '--config' and i + 1 < len(argv):
      spec = argv[i + 1]
  return load_config_spec(spec) if spec else None


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a flag error as one line and exit code 2 (genai.errors), and
  an override of a field the config does not have as one line naming it and the close
  names, not an ml_collections traceback."""
  try:
    return errors.parse_absl_flags(argv)
  except (AttributeError, KeyError):
    message = unknown_field(argv, _config_from_argv(argv))
    if message is None:
      raise
    errors.fail(errors.UsageError(message))


def run(main_fn: Callable[[list[str]], Any]) -> None:
  """`app.run(main_fn)` with these flags and user errors as one line (genai.errors)."""
  errors.run_absl(main_fn, flags_parser=parse_flags)
