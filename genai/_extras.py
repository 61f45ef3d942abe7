"""The optional parts of genai, the setup.py extra that installs each, and the one-line error
when one is missing.

`pip install genai` holds what training, sampling and evaluation need; the parts a trainer
on a TPU VM does not need are extras (setup.py's OPTIONAL names the same five):

  serve     python -m genai.serve (FastAPI, uvicorn, Prometheus metrics)
  export    python -m genai.export (orbax-export, LiteRT)
  feedback  genai.feedback's store (SQLAlchemy): serve --feedback, experiments.retrain
  gcs       gs:// paths through fsspec's gcsfs, with EPATH_USE_TF=false (genai/paths.py)
  plots     the plots of genai.safety's bias-audit reports, and the notebooks' (matplotlib)

A module of an optional part imports its third-party packages inside `needs(extra, part)`:
a missing one raises MissingExtra, an ImportError whose message is the one line
"genai.serve needs the serve extra: pip install 'genai[serve]' (missing: fastapi)".
A command line checks before it loads anything with `require(extra, part)`, which exits
with that line after 'error: ' (status 1, no traceback), as genai/errors.py prints user errors.

This module sits beside the packages of genai/, below every layer (docs/architecture.md): it
imports nothing from genai.
"""
from __future__ import annotations

import contextlib
import importlib.util
from typing import Iterator

# extra -> the modules it provides (what its code imports).
MODULES = {
    'serve': ('fastapi', 'starlette', 'pydantic', 'uvicorn', 'prometheus_client'),
    'export': ('orbax.export', 'ai_edge_litert'),
    'feedback': ('sqlalchemy',),
    'gcs': ('gcsfs',),
    'plots': ('matplotlib',),
}


class MissingExtra(ImportError):
  """An optional part ran without its extra; the message is one line naming it."""


def message(extra: str, part: str, missing: str) -> str:
  return f"{part} needs the {extra} extra: pip install 'genai[{extra}]' (missing: {missing})"


def _provided_by(extra: str, module: str | None) -> bool:
  if not module:
    return False
  tops = {m.split('.')[0] for m in MODULES[extra]}
  return module.split('.')[0] in tops


@contextlib.contextmanager
def needs(extra: str, part: str) -> Iterator[None]:
  """Around the imports of an optional part: a module of `extra` that is missing raises
  MissingExtra naming the extra (other ImportErrors pass through unchanged)."""
  if extra not in MODULES:
    raise ValueError(f'unknown extra {extra!r}; one of {sorted(MODULES)}')
  try:
    yield
  except ImportError as e:
    if isinstance(e, MissingExtra) or not _provided_by(extra, e.name):
      raise
    missing = next((m for m in MODULES[extra] if e.name == m or e.name.startswith(m + '.')),
                   e.name.split('.')[0])
    raise MissingExtra(message(extra, part, missing), name=e.name) from e


def missing_modules(extra: str) -> list[str]:
  """The modules of `extra` this environment lacks."""
  out = []
  for module in MODULES[extra]:
    try:
      found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing or blocked
      found = False
    if not found:
      out.append(module)
  return out


def require(extra: str, part: str) -> None:
  """For a command line: exit with the one-line message (status 1) if `extra` is missing."""
  missing = missing_modules(extra)
  if missing:
    raise SystemExit('error: ' + message(extra, part, ', '.join(missing)))
