"""The HTTP API's edges (issue 24): with API keys, /docs, /redoc and /openapi.json need one
too; a list of prompts in /v1/completions as in the OpenAI API; each 4xx names the problem."""
import json

import httpx
import pytest

from genai.serve import api
from genai.serve import limits as limits_lib
from genai.serve import models
from genai.serve.engine import Engine
from serving_helpers import running_server

KEY = 'sk-errors-1'


@pytest.fixture(scope='module')
def served(lm_workdir):
  return models.load(lm_workdir)


@pytest.fixture(scope='module')
def engine(served):
  e = Engine(served.model, served.params, served.tokenizer, version=served.version,
             num_slots=4, steps_per_tick=4)
  e.warmup()
  e.start()
  yield e
  e.stop()


@pytest.fixture(scope='module')
def records():
  return []


@pytest.fixture(scope='module')
def url(served, engine, records):
  app = api.make_app(served, engine=engine, on_generation=records.append,
                     limits=limits_lib.Limits(api_keys=frozenset({KEY}), max_new_tokens=40))
  with running_server(app) as base:
    yield base


@pytest.fixture()
def client(url):
  with httpx.Client(base_url=url, timeout=60,
                    headers={'Authorization': f'Bearer {KEY}'}) as c:
    yield c


def test_docs_and_schema_need_the_key(url, client, served, engine):
  with httpx.Client(base_url=url, timeout=30) as anon:
    assert anon.get('/healthz').status_code == 200
    for path in ('/docs', '/redoc', '/openapi.json'):
      r = anon.get(path)
      assert r.status_code == 401, path
      assert r.json()['error']['message'].startswith('Missing API key')
  schema = client.get('/openapi.json').json()
  assert '/v1/completions' in schema['paths'] and '/docs' not in schema['paths']
  assert 'needs an API key' in schema['info']['description']
  assert 'swagger' in client.get('/docs').text.lower()
  assert 'redoc' in client.get('/redoc').text.lower()
  # Without keys every route is open, the docs too.
  with running_server(api.make_app(served, engine=engine)) as base:
    with httpx.Client(base_url=base, timeout=30) as anon:
      assert all(anon.get(p).status_code == 200 for p in ('/docs', '/redoc', '/openapi.json'))


def test_a_list_of_prompts_gets_n_choices_each(client, records):
  body = {'prompt': ['The ', 'a'], 'n': 2, 'max_tokens': 6, 'temperature': 0.9, 'seed': 3}
  r = client.post('/v1/completions', json=body)
  assert r.status_code == 200, r.text
  out = r.json()
  assert [c['index'] for c in out['choices']] == [0, 1, 2, 3]
  assert out['usage']['prompt_tokens'] == 5 and out['usage']['completion_tokens'] == 24
  # Choice j * n + i is prompt j's sample i, drawn with seed + j * n + i.
  first = client.post('/v1/completions', json={**body, 'prompt': 'The '}).json()
  second = client.post('/v1/completions', json={**body, 'prompt': 'a', 'seed': 5}).json()
  assert [c['text'] for c in out['choices']] == (
      [c['text'] for c in first['choices']] + [c['text'] for c in second['choices']])
  listed = [rec for rec in records if rec['id'].startswith(out['id'])]
  assert [(rec['id'], rec['prompt'], len(rec['outputs'])) for rec in listed] == [
      (f'{out["id"]}:0', 'The ', 2), (f'{out["id"]}:1', 'a', 2)]


def test_a_streamed_list_of_prompts(client):
  body = {'prompt': ['The ', 'a', 'b'], 'max_tokens': 4, 'stream': True, 'seed': 1}
  with client.stream('POST', '/v1/completions', json=body) as r:
    assert r.status_code == 200
    events = [json.loads(l[6:]) for l in r.iter_lines() if l.startswith('data: {')]
  finished = sorted(e['choices'][0]['index'] for e in events if e['choices'][0]['finish_reason'])
  assert finished == [0, 1, 2]


DEEP = b'[' * 10_000 + b']' * 10_000


@pytest.mark.parametrize('body, content_type, status, message', [
    (DEEP, 'application/json', 400, 'The JSON body is nested too deeply for the parser'),
    (b'{"prompt": "\xff\xfe"}', 'application/json', 400,
     'The body is not UTF-8 (byte 0xff at offset 12 cannot be decoded); send UTF-8 JSON.'),
    (b'{"prompt": "a",', 'application/json', 422, 'The body is not valid JSON'),
    (b'prompt=a', 'text/plain', 422, 'The body was sent as text/plain, not JSON; send a JSON '
     'object with Content-Type: application/json.'),
    ({'prompt': []}, None, 422, 'prompt: prompt is an empty list; send at least one prompt'),
    ({'prompt': ['a', 7]}, None, 422, 'prompt: prompt[1] is a int; send text (token-id '
     'prompts are not supported)'),
    ({'prompt': ['a'] * 33}, None, 422, 'prompt: prompt lists 33 prompts; send at most 32'),
    ({'prompt': 5}, None, 422, 'prompt: prompt is a int; send a string or a list of strings'),
    ({'prompt': ''}, None, 422, 'prompt: prompt is empty; send at least one character'),
    ({'prompt': ['a', '\u6771']}, None, 422, 'prompt[1] cannot be tokenised'),
    ({'prompt': ['a'] * 9, 'n': 8}, None, 422, '9 prompts x n=8 is 72 choices; a request may '
     'ask for at most 64.'),
    ({'prompt': ['a', 'b' * 30], 'max_tokens': 40}, None, 422,
     'prompt[1] (30 tokens) + max_tokens (40) exceeds the model context of 64 tokens'),
])
def test_each_4xx_names_the_problem(client, body, content_type, status, message):
  if content_type is None:
    r = client.post('/v1/completions', json=body)
  else:
    r = client.post('/v1/completions', content=body, headers={'content-type': content_type})
  assert r.status_code == status, r.text
  assert message in r.json()['error']['message'], r.json()
