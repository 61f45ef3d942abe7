"""Helpers for the serving tests: a tiny LM config, and a real uvicorn server on loopback."""
import contextlib
import socket
import threading
import time

from conftest import REPO, load_config  # pylint: disable=unused-import


def lm_config(num_steps=20):
  config = load_config(REPO / 'configs/lm/pydoc_char.py')
  config.data.block_size = 64  # context 64: room for prompts + max_tokens
  config.model.d_model = 48
  config.train.num_steps = num_steps
  config.train.checkpoint_every = num_steps
  config.train.eval_every = num_steps
  return config


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def running_server(app):
  """`app` on a real uvicorn server on a free loopback port; yields its base URL."""
  import uvicorn  # pylint: disable=g-import-not-at-top
  port = free_port()
  server = uvicorn.Server(uvicorn.Config(app, host='127.0.0.1', port=port, log_level='warning'))
  thread = threading.Thread(target=server.run, daemon=True)
  thread.start()
  deadline = time.monotonic() + 30
  while not server.started:
    if time.monotonic() > deadline or not thread.is_alive():
      raise RuntimeError('uvicorn did not start')
    time.sleep(0.02)
  try:
    yield f'http://127.0.0.1:{port}'
  finally:
    server.should_exit = True
    thread.join(timeout=10)
