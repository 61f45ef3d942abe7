"""The command line every experiment shares: `--config`, `--workdir`, and one action flag.

  python -m experiments.NAME --config configs/NAME/x.py --workdir W   # train (resumes)
  python -m experiments.NAME --workdir W --sample [family flags]      # act on a workdir

An experiment defines its own extra flags after `define_flags()` and ends with

  if __name__ == '__main__':
    define_flags()
    app.run(cli.main(train_and_evaluate, _sample_from_flags, 'configs/NAME/digits.py'))

Flags are defined only when a module runs as a program, so importing an experiment (tests,
benchmarks, notebooks) defines no global flags.
"""
from __future__ import annotations

from typing import Any, Callable

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags


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
    if not f.workdir:
      raise app.UsageError('--workdir is required.')
    if f[action].value:
      action_fn(f)
      return
    if f.config is None:
      raise app.UsageError(f'--config is required for training (e.g. {example_config}).')
    train_fn(f.config, f.workdir)

  return run
