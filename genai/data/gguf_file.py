"""Reading the key/value metadata of a GGUF file (llama.cpp's model format).

The tokenizer (genai/data/tokenizers.py) reads its vocabulary from here; the weights are
read by genai/pretrained/gguf.py on top of the same reader.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np


def reader(path: str | os.PathLike):
  """A gguf.GGUFReader of `path`, with errors that name the file."""
  import gguf  # pylint: disable=import-outside-toplevel
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: no such GGUF file. For SmolLM2 run '
                            '`python -m genai.pretrained.fetch smollm2`, or pass the path '
                            'of a .gguf file.')
  try:
    return gguf.GGUFReader(path)
  except (ValueError, IndexError, KeyError, TypeError, OSError, UnicodeDecodeError) as e:
    raise ValueError(f'{path} is not a readable GGUF file (truncated or another format): '
                     f'{type(e).__name__}: {e}. Download it again (for SmolLM2: `python -m '
                     'genai.pretrained.fetch smollm2 --force`).') from e


def _field_value(field) -> Any:
  value = field.contents()
  return value.item() if isinstance(value, np.generic) else value


def read_metadata(path_or_reader: Any) -> dict[str, Any]:
  """All key/value metadata of a GGUF file as Python values (arrays as lists)."""
  r = path_or_reader if hasattr(path_or_reader, 'fields') else reader(path_or_reader)
  return {name: _field_value(f) for name, f in r.fields.items()}
