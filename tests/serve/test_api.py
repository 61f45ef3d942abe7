"""The HTTP API on a real uvicorn server (loopback) with an HTTP client: happy paths,
streaming, auth, limits, bad requests, concurrency, metrics, filters, hot reload."""
import concurrent.futures
import json
import shutil
import subprocess
import sys
import time

import httpx
import pytest

from conftest import REPO
from genai.serve import api
from genai.serve import limits as limits_lib
from genai.serve import models
from genai.serve import reload
from genai.serve.engine import Engine
from serving_helpers import KEY, free_port, lm_config, make_engine, running_server
# The shared fixtures (pytest finds them in this module's namespace):
from serving_helpers import client, engine, served  # pylint: disable=unused-import


@pytest.fixture(scope='module')
def records():
  return []


@pytest.fixture(scope='module')
def url(served, engine, records):
  def no_digits(text):  # a stand-in output filter: redact digits, block 'zz'
    return api.FilterResult(''.join('#' if c.isdigit() else c for c in text),
                            blocked='zz' in text, flags=('digits',) if any(
                                c.isdigit() for c in text) else ())
  limits = limits_lib.Limits(api_keys=frozenset({KEY}), max_body_bytes=4096, max_new_tokens=40)
  app = api.make_app(served, limits=limits, engine=engine, output_filter=no_digits,
                     on_generation=records.append)
  with running_server(app) as base:
    yield base


def test_health_models_and_docs(client, served):
  assert client.get('/healthz').json()['status'] == 'ok'
  models_ = client.get('/v1/models').json()
  assert models_['data'][0]['id'] == served.name and models_['data'][0]['version'] == served.version
  schema = client.get('/openapi.json').json()
  assert {'/v1/completions', '/v1/chat/completions', '/metrics'} <= set(schema['paths'])
  assert '/v1/images/generations' not in schema['paths']
  assert 'swagger' in client.get('/docs').text.lower()


def test_completion_is_reproducible_and_filtered(client, served, records):
  body = {'prompt': 'The ', 'max_tokens': 20, 'temperature': 0.9, 'seed': 11, 'n': 3}
  r = client.post('/v1/completions', json=body)
  assert r.status_code == 200, r.text
  out = r.json()
  assert out['object'] == 'text_completion' and out['model'] == served.name
  assert [c['index'] for c in out['choices']] == [0, 1, 2]
  assert out['usage'] == {'prompt_tokens': 4, 'completion_tokens': 60, 'total_tokens': 64}
  assert out == {**client.post('/v1/completions', json=body).json(), 'id': out['id'],
                 'created': out['created']}
  assert all(not any(ch.isdigit() for ch in c['text']) for c in out['choices'])  # filter ran
  rec = records[-1]
  assert rec['prompt'] == 'The ' and rec['params']['seed'] == 11 and rec['version'] == served.version
  assert rec['outputs'] == [c['text'] for c in out['choices']]


def test_chat_completion(client):
  r = client.post('/v1/chat/completions', json={
      'messages': [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Hi'}],
      'max_tokens': 8, 'temperature': 0})
  assert r.status_code == 200, r.text
  choice = r.json()['choices'][0]
  assert choice['message']['role'] == 'assistant' and choice['finish_reason'] in ('length', 'stop')


def sse_events(client, path, body):
  with client.stream('POST', path, json=body) as r:
    assert r.status_code == 200 and r.headers['content-type'].startswith('text/event-stream')
    lines = [l for l in r.iter_lines() if l]
  assert lines[-1] == 'data: [DONE]'
  return [json.loads(l[len('data: '):]) for l in lines[:-1]]


def test_streaming_matches_the_whole_response(client):
  body = {'prompt': 'The ', 'max_tokens': 25, 'temperature': 0.0}
  whole = client.post('/v1/completions', json=body).json()['choices'][0]
  events = sse_events(client, '/v1/completions', {**body, 'stream': True})
  assert len(events) > 2
  assert ''.join(e['choices'][0]['text'] for e in events) == whole['text']
  assert events[-1]['choices'][0]['finish_reason'] == whole['finish_reason']
  chat = sse_events(client, '/v1/chat/completions', {
      'messages': [{'role': 'user', 'content': 'Hi'}], 'max_tokens': 9, 'stream': True, 'n': 2})
  assert chat[0]['object'] == 'chat.completion.chunk'
  assert {e['choices'][0]['index'] for e in chat} == {0, 1}
  assert sum(e['choices'][0]['finish_reason'] is not None for e in chat) == 2


def test_stop_string(client):
  body = {'prompt': 'The ', 'max_tokens': 30, 'temperature': 0.0}
  full = client.post('/v1/completions', json=body).json()['choices'][0]['text']
  stop = full[6:8]
  out = client.post('/v1/completions', json={**body, 'stop': [stop]}).json()['choices'][0]
  assert out['finish_reason'] == 'stop' and out['text'] == full[:full.find(stop)]


def test_auth(url):
  with httpx.Client(base_url=url, timeout=30) as anon:
    assert anon.get('/healthz').status_code == 200  # health needs no key
    for path in ('/v1/models', '/metrics'):
      r = anon.get(path)
      assert r.status_code == 401 and r.json()['error']['type'] == 'authentication_error'
    r = anon.post('/v1/completions', json={'prompt': 'a'}, headers={'Authorization': 'Bearer no'})
    assert r.status_code == 401 and r.json()['error']['message'] == 'Invalid API key.'
    assert anon.post('/v1/completions', json={'prompt': 'a', 'max_tokens': 2},
                     headers={'x-api-key': KEY}).status_code == 200


@pytest.mark.parametrize('body, status, match', [
    (b'{"prompt": "a", ', 422, 'not valid JSON'),
    (b'[1, 2]', 422, 'valid dictionary'),
    (json.dumps({'prompt': 'a', 'max_tokens': 'many'}), 422, 'max_tokens'),
    (json.dumps({'prompt': 5}), 422, 'prompt'),
    (json.dumps({'max_tokens': 3}), 422, 'prompt: Field required'),
    (json.dumps({'prompt': 'a', 'temperature': -1}), 422, 'temperature'),
    (json.dumps({'prompt': 'a', 'top_p': 0}), 422, 'top_p'),
    (json.dumps({'prompt': 'a', 'n': 100}), 422, 'n:'),
    (json.dumps({'prompt': 'a', 'stop': ['a', 'b', 'c', 'd', 'e']}), 422, 'at most 4'),
    (json.dumps({'prompt': 'a', 'max_tokens': 41}), 422, 'limit of 40'),
    (json.dumps({'prompt': 'a' * 30, 'max_tokens': 40}), 422, 'exceeds the model context'),
    (json.dumps({'prompt': 'a' * 64}), 422, 'at most 63'),
    (json.dumps({'prompt': '\u6771\u4eac'}), 422, 'cannot be tokenised'),
    (json.dumps({'prompt': 'a', 'model': 'gpt-9'}), 404, 'not served here'),
    (json.dumps({'prompt': 'a' * 5000}), 413, 'over 4096 bytes'),
])
def test_bad_requests_get_a_json_4xx(client, body, status, match):
  r = client.post('/v1/completions', content=body, headers={'content-type': 'application/json'})
  assert r.status_code == status, r.text
  assert match in r.json()['error']['message']


def test_chunked_body_over_the_limit(client):
  def chunks():
    for _ in range(10):
      yield b' ' * 1000
  r = client.post('/v1/completions', content=chunks(), headers={'content-type': 'application/json'})
  assert r.status_code == 413


def test_unknown_route_and_method(client):
  assert client.get('/v1/nothing').json()['error']['code'] == '404'
  assert client.get('/v1/completions').status_code == 405


def test_concurrent_requests(client, url):
  bodies = [{'prompt': 'The ', 'max_tokens': 10 + i, 'temperature': 0.8, 'seed': i}
            for i in range(12)]
  alone = [client.post('/v1/completions', json=b).json()['choices'][0]['text'] for b in bodies[:3]]

  def call(b):
    with httpx.Client(base_url=url, timeout=60, headers={'Authorization': f'Bearer {KEY}'}) as c:
      return c.post('/v1/completions', json=b)
  with concurrent.futures.ThreadPoolExecutor(12) as pool:
    results = list(pool.map(call, bodies))
  assert all(r.status_code == 200 for r in results)
  assert [r.json()['choices'][0]['text'] for r in results[:3]] == alone
  assert [r.json()['usage']['completion_tokens'] for r in results] == [10 + i for i in range(12)]


def test_a_client_that_disconnects_frees_its_slot(client, engine):
  with client.stream('POST', '/v1/completions', json={'prompt': 'a', 'max_tokens': 40,
                                                      'stream': True}) as r:
    next(r.iter_lines())
  deadline = time.monotonic() + 10
  while engine.active and time.monotonic() < deadline:
    time.sleep(0.05)
  assert engine.active == 0


def test_metrics(client):
  client.post('/v1/completions', json={'prompt': 'a', 'max_tokens': 3})
  text = client.get('/metrics').text
  for name in ('genai_requests_total{code="200",route="/v1/completions"}',
               'genai_request_latency_seconds_bucket', 'genai_queue_depth', 'genai_active_slots',
               'genai_generated_tokens', 'genai_decode_tokens_per_second', 'genai_model_info'):
    assert name in text, name
  assert 'genai_requests_total{code="401",route="/v1/models"}' in text


def test_output_filter_blocks(served, engine):
  app = api.make_app(served, engine=engine,
                     output_filter=lambda t: api.FilterResult(t, blocked=len(t) > 3))
  with running_server(app) as base, httpx.Client(base_url=base, timeout=60) as c:
    out = c.post('/v1/completions', json={'prompt': 'a', 'max_tokens': 10}).json()['choices'][0]
    assert out == {'index': 0, 'text': '', 'finish_reason': 'content_filter', 'logprobs': None}
    events = sse_events(c, '/v1/completions', {'prompt': 'a', 'max_tokens': 30, 'stream': True})
    assert events[-1]['choices'][0]['finish_reason'] == 'content_filter'
    assert len(''.join(e['choices'][0]['text'] for e in events)) <= 3


def test_rate_limit_and_queue_full(served, engine):
  app = api.make_app(served, engine=engine,
                     limits=limits_lib.Limits(requests_per_minute=3))
  with running_server(app) as base, httpx.Client(base_url=base, timeout=60) as c:
    codes = [c.get('/v1/models').status_code for _ in range(5)]
    assert codes[:3] == [200] * 3 and codes[3] == 429
    r = c.get('/v1/models')
    assert r.json()['error']['type'] == 'rate_limit_error' and int(r.headers['retry-after']) >= 1
  idle = Engine(served.model, served.params, served.tokenizer, max_queue=1)  # never started
  app = api.make_app(served, engine=idle)
  with running_server(app) as base, httpx.Client(base_url=base, timeout=60) as c:
    r = c.post('/v1/completions', json={'prompt': 'a', 'max_tokens': 2, 'n': 2})
    assert r.status_code == 503 and r.json()['error']['type'] == 'overloaded_error'


def test_hot_reload_keeps_serving(tmp_path, lm_workdir):
  from experiments import lm  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / 'w'
  shutil.copytree(lm_workdir, workdir)
  served = models.load(str(workdir))
  engine = make_engine(served)
  app = api.make_app(served, engine=engine)
  reloader = reload.Reloader(str(workdir), app.state.served, interval=0.2)
  try:
    with running_server(app) as base, httpx.Client(base_url=base, timeout=60) as c:
      body = {'prompt': 'The ', 'max_tokens': 30, 'temperature': 0.0}
      before = c.post('/v1/completions', json=body).json()
      assert before['system_fingerprint'] == 'step-20'
      config = lm_config(num_steps=30)
      lm.train_and_evaluate(config, str(workdir))  # resumes at 20, writes step 30
      reloader.start()
      with concurrent.futures.ThreadPoolExecutor(4) as pool:  # requests during the swap
        futures = [pool.submit(c.post, '/v1/completions', json=body) for _ in range(8)]
        deadline = time.monotonic() + 60
        while c.get('/healthz').json()['version'] != 'step-30':
          assert time.monotonic() < deadline, reloader.last_error
          time.sleep(0.1)
        results = [f.result() for f in futures]
      assert all(r.status_code == 200 for r in results)
      after = c.post('/v1/completions', json=body).json()
      assert after['system_fingerprint'] == 'step-30'
      assert c.get('/v1/models').json()['data'][0]['version'] == 'step-30'
  finally:
    reloader.stop()
    engine.stop()


@pytest.mark.slow  # a server subprocess
def test_command_line_server(lm_workdir, tmp_path):
  port = free_port()
  proc = subprocess.Popen(
      [sys.executable, '-m', 'genai.serve', f'--workdir={lm_workdir}', f'--port={port}',
       '--api_keys=k1,k2', '--num_slots=2', '--reload_interval=0', '--moderation=default',
       '--feedback', f'--feedback_db=sqlite:///{tmp_path}/fb.db'],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    deadline = time.monotonic() + 120
    while True:
      assert proc.poll() is None, proc.stdout.read()
      try:
        if httpx.get(f'http://127.0.0.1:{port}/healthz', timeout=1).status_code == 200:
          break
      except httpx.TransportError:
        pass
      assert time.monotonic() < deadline
      time.sleep(0.5)
    r = httpx.post(f'http://127.0.0.1:{port}/v1/completions', timeout=60,
                   json={'prompt': 'The ', 'max_tokens': 5}, headers={'Authorization': 'Bearer k2'})
    assert r.status_code == 200 and r.json()['usage']['completion_tokens'] == 5
    # --feedback: the generation is in the store and can be rated; the page is served.
    rated = httpx.post(f'http://127.0.0.1:{port}/v1/feedback', timeout=30,
                       json={'generation_id': r.json()['id'], 'rating': 'up'},
                       headers={'Authorization': 'Bearer k2'})
    assert rated.status_code == 200, rated.text
    assert '<html' in httpx.get(f'http://127.0.0.1:{port}/', timeout=30).text.lower()
  finally:
    proc.terminate()
    proc.wait(timeout=30)


def test_command_line_errors(tmp_path):
  """One start of the command line in the fast tier (it covers genai/serve/__main__.py)."""
  r = subprocess.run([sys.executable, '-m', 'genai.serve', f'--workdir={tmp_path}'], cwd=REPO,
                     capture_output=True, text=True, timeout=120)
  assert r.returncode != 0 and 'a genai workdir? Train first' in r.stderr
  assert 'Traceback' not in r.stderr


@pytest.mark.slow  # a second start of the command line
def test_command_line_needs_one_model_source():
  r = subprocess.run([sys.executable, '-m', 'genai.serve'], cwd=REPO, capture_output=True,
                     text=True, timeout=120)
  assert r.returncode != 0 and 'exactly one of --workdir, --pretrained or --registry' in r.stderr
