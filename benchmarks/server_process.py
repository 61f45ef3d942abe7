"""Starting `python -m genai.serve` in its own process for a benchmark, and waiting for it."""
from __future__ import annotations

import subprocess
import sys
import time

import httpx


def start(args: list[str], port: int, timeout_s: float = 300.0) -> subprocess.Popen:
  """`python -m genai.serve --port PORT *args`, once /healthz answers 200."""
  proc = subprocess.Popen([sys.executable, '-m', 'genai.serve', f'--port={port}', *args],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      if httpx.get(f'http://127.0.0.1:{port}/healthz', timeout=1).status_code == 200:
        return proc
    except httpx.TransportError:
      pass
    if proc.poll() is not None or time.monotonic() > deadline:
      proc.kill()
      raise RuntimeError(f'the server did not start: python -m genai.serve {" ".join(args)}')
    time.sleep(0.5)
