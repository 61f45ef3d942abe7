"""`pip install`, keeping the JAX this environment already has (a Colab runtime, a TPU VM, a
GPU box with its CUDA build).

  python requirements/keep_jax.py -e ".[serve]"          # any `pip install` arguments
  python requirements/keep_jax.py --print                 # only show what it would pin

It pins every installed JAX distribution (jax, jaxlib, libtpu and the jax-cuda/rocm plugins)
at its installed version in a constraints file and runs `pip install -c <that file> ARGS`.
pip then keeps them, or stops and names the conflict when genai's range (setup.py: jax
>=0.10.1,<0.11) does not hold the installed JAX, instead of replacing an accelerator build
with the CPU one. Plain `pip install -e .` keeps a JAX inside the range too (a range is
satisfied by what is there); this script makes "never replace it" a guarantee. It needs
nothing but the standard library, so it runs before genai is installed.
"""
from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tempfile

JAX_DISTS = re.compile(r'^(jax|jaxlib|libtpu|libtpu-nightly|jax-cuda\d+-(plugin|pjrt)|'
                       r'jax-rocm\d*-(plugin|pjrt))$')


def installed_jax() -> list[str]:
  """'name==version' of each JAX distribution installed here, sorted."""
  out = set()
  for dist in importlib.metadata.distributions():
    name = re.sub(r'[-_.]+', '-', (dist.metadata['Name'] or '')).lower()
    if JAX_DISTS.match(name):
      out.add(f'{name}=={dist.version}')
  return sorted(out)


def main(argv: list[str]) -> int:
  pins = installed_jax()
  if argv == ['--print']:
    print('\n'.join(pins) if pins else '(no JAX installed: nothing to keep)')
    return 0
  if not pins:
    print('keep_jax: no JAX installed here; installing as asked.', file=sys.stderr)
  with tempfile.NamedTemporaryFile('w', suffix='-keep-jax.txt', delete=False) as f:
    f.write('\n'.join(pins) + '\n')
  try:
    print(f'keep_jax: keeping {", ".join(pins) or "nothing"}', file=sys.stderr)
    code = subprocess.run([sys.executable, '-m', 'pip', 'install', '-c', f.name, *argv],
                          check=False).returncode
  finally:
    os.unlink(f.name)
  if code:
    print(f'keep_jax: pip failed; if it names a jax conflict, this environment\'s JAX '
          f'({", ".join(pins)}) is outside genai\'s supported range (setup.py).',
          file=sys.stderr)
  return code


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
