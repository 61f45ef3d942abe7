"""Command line: export a trained workdir to a TF SavedModel and/or TFLite files.

  python -m genai.export --workdir runs/pydoc --out exports/pydoc [--format both]
      [--quantize int8] [--batch_size 1] [--prompt_len 32] [--num_tokens 64]  # LM
  python -m genai.export --workdir runs/diff_digits --out exports/diff --steps 20  # diffusion

See genai/export/workdir.py for the output layout, and each family's `export_signatures`
(genai/families/<family>.py) for its signatures.
"""
from __future__ import annotations

from absl import app
from absl import flags

from genai import errors

FLAGS = flags.FLAGS


def define_flags() -> None:
  from genai.export import tflite, workdir  # pylint: disable=import-outside-toplevel
  flags.DEFINE_string('workdir', None, 'Trained workdir (holds config.json and checkpoints).')
  flags.DEFINE_string('out', None, 'Output folder.')
  flags.DEFINE_string('format', 'both', f'One of {workdir.FORMATS}.')
  flags.DEFINE_string('quantize', 'none', f'TFLite weights: one of {tflite.QUANTIZE}; int8 '
                      'writes <signature>_int8.tflite as well as the float file.')
  flags.DEFINE_integer('batch_size', 1, 'Fixed batch size of every signature.')
  flags.DEFINE_integer('prompt_len', 32, 'LM: prompt length P of the generate signature.')
  flags.DEFINE_integer('num_tokens', 64, 'LM: tokens N the generate signature samples.')
  flags.DEFINE_integer('cache_len', None, 'LM: KV cache length S of decode_step (default max_len).')
  flags.DEFINE_integer('top_k', 0, 'LM: top-k of the generate signature (0 = off), baked in.')
  flags.DEFINE_integer('steps', None,
                       'Diffusion: DDIM steps baked in (default config.sample.steps).')
  flags.DEFINE_integer('version', 1, 'SavedModel version folder (TF Serving reads the newest).')
  flags.DEFINE_list('platforms', ['cpu'], 'SavedModel lowering platforms, e.g. cpu,cuda '
                    '(TFLite needs cpu alone).')


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments {argv[1:]}; every option is a --flag.')
  from genai.export import workdir  # pylint: disable=import-outside-toplevel
  for name in ('workdir', 'out'):
    if not FLAGS[name].value:
      raise app.UsageError(f'--{name} is required: python -m genai.export --workdir W --out DIR.')
  options = dict(batch_size=FLAGS.batch_size, prompt_len=FLAGS.prompt_len,
                 num_tokens=FLAGS.num_tokens, cache_len=FLAGS.cache_len, top_k=FLAGS.top_k,
                 steps=FLAGS.steps)
  info = workdir.export_workdir(FLAGS.workdir, FLAGS.out, format=FLAGS.format,
                                quantize=FLAGS.quantize, version=FLAGS.version,
                                platforms=tuple(FLAGS.platforms), **options)
  print(f'exported {info["family"]} workdir {FLAGS.workdir} to {FLAGS.out}:')
  for path, size in info['files'].items():
    print(f'  {path}: {size / 1e6:.2f} MB')
  for name, sig in info['signatures'].items():
    ins = ', '.join(f'{k} {v}' for k, v in sig['inputs'].items())
    outs = ', '.join(f'{k} {v}' for k, v in sig['outputs'].items())
    print(f'  signature {name}: ({ins}) -> ({outs})')


if __name__ == '__main__':
  from genai import _extras  # pylint: disable=import-outside-toplevel
  _extras.require('export', 'genai.export')  # one line naming the extra, before the flags
  define_flags()
  errors.run_absl(main)
