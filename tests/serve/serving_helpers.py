"""Helpers for the serving tests: a tiny LM config, a real uvicorn server on loopback, and
the fixtures the HTTP tests share (import them into a test module to use them there:
`from serving_helpers import client, engine, served`; module-scoped fixtures stay per module)."""
import contextlib
import socket
import threading
import time

import httpx
import pytest

from conftest import REPO, load_config  # pylint: disable=unused-import
from genai.serve import models
from genai.serve.engine import Engine

KEY = 'sk-test-123'  # the API key of the test servers that need one


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


def make_engine(served_model, **kw):
  """A warmed-up, started engine of a loaded model (4 slots, 4 decode steps a tick)."""
  e = Engine(served_model.model, served_model.params, served_model.tokenizer,
             version=served_model.version, num_slots=kw.pop('num_slots', 4), steps_per_tick=4,
             **kw)
  e.warmup()
  e.start()
  return e


# The shared fixtures. pylint: disable=redefined-outer-name


@pytest.fixture(scope='module')
def served(lm_workdir):
  """The session's trained char LM, loaded for serving."""
  return models.load(lm_workdir)


@pytest.fixture(scope='module')
def engine(served):
  e = make_engine(served)
  yield e
  e.stop()


@pytest.fixture()
def client(url):
  """An HTTP client of the module's `url` fixture (its server), sending `KEY`."""
  with httpx.Client(base_url=url, timeout=60, headers={'Authorization': f'Bearer {KEY}'}) as c:
    yield c
