"""JAX's persistent compilation cache, on for every genai command.

A command compiles its jitted train step, eval step and decode loop once per shape; with the
cache, a second run of the same command (a resumed run, the next ablation with the same
shapes, a sampling command) loads the compiled executables from disk instead. The cache lives
in the user's cache folder, `$XDG_CACHE_HOME/genai/jax_compilation` (default
`~/.cache/genai/jax_compilation`); `GENAI_COMPILATION_CACHE` names another folder, or `off`
turns it off. A cache folder the user already set (`jax_compilation_cache_dir`, or JAX's own
`JAX_COMPILATION_CACHE_DIR`) is left as it is.
"""
from __future__ import annotations

import os

import jax

# Executables that took less than this to compile are not worth a disk read.
MIN_COMPILE_SECONDS = 0.2


def default_dir() -> str:
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'genai', 'jax_compilation')


def enable() -> str | None:
  """Turns the cache on (see the module doc); returns its folder, None when off."""
  setting = os.environ.get('GENAI_COMPILATION_CACHE', '')
  if setting.lower() in ('off', '0', 'false', 'no'):
    return None
  current = jax.config.jax_compilation_cache_dir
  if current:
    return current
  directory = setting or default_dir()
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError:
    return None  # a read-only home: run without the cache
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', MIN_COMPILE_SECONDS)
  return directory
