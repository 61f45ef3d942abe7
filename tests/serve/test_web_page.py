"""The feedback routes and the web page on a real uvicorn server (loopback), with a real
FeedbackStore (sqlite in tmp): every route over HTTP, then the page driven in a real
headless Chromium (Playwright): generate two samples, rate, edit, prefer, review."""
import contextlib
import os

import httpx
import pytest

from genai.feedback.store import FeedbackStore
from genai.serve import api
from genai.serve import limits as limits_lib
from serving_helpers import KEY, running_server
# The shared fixtures (pytest finds them in this module's namespace):
from serving_helpers import client, engine, served  # pylint: disable=unused-import

CHROMIUM = '/usr/bin/chromium'
FLAG = 'has_e'  # the stand-in output filter flags every output with an 'e' in it


@pytest.fixture(scope='module')
def store(tmp_path_factory):
  path = tmp_path_factory.mktemp('feedback') / 'feedback.db'
  s = FeedbackStore(f'sqlite:///{path}')
  s.db_path = str(path)  # for `preferences_of`: the store has no getter for preferences
  yield s
  s.close()


def flag_e(text):
  return api.FilterResult(text, flags=(FLAG,) if 'e' in text else ())


@pytest.fixture(scope='module')
def url(served, engine, store):
  limits = limits_lib.Limits(api_keys=frozenset({KEY}), max_new_tokens=24)
  app = api.make_app(served, limits=limits, engine=engine, output_filter=flag_e,
                     feedback_store=store)
  with running_server(app) as base:
    yield base


def review_item_for(store, generation_id):
  """The first pending review item the hook queued for `generation_id` (one item per output
  the filter flagged; if it flagged none, unlikely, one is added here)."""
  gen = store.get_generation(generation_id)
  items = [it for it in store.review_queue('pending', 500) if it['generation_id'] == generation_id]
  flagged = [t for t in gen['outputs'] if flag_e(t).flags]
  assert [it['text'] for it in items] == flagged
  assert all(it['flags'] == [FLAG] for it in items) and gen['flags'] == ([FLAG] if flagged else [])
  if items:
    return items[0]['id']
  return store.add_review_item(generation_id, gen['outputs'][0], ['test'])


def ratings_of(store, generation_id):
  return [(r['choice'], r['rating'], r['comment'])
          for r in store.feedback_for(generation_id)['ratings']]


def edits_of(store, generation_id):
  return [(r['choice'], r['text']) for r in store.feedback_for(generation_id)['edits']]


def preferences_of(store, generation_id):
  """(id, prompt, chosen, rejected) of the preferences naming `generation_id`."""
  import json, sqlite3  # pylint: disable=g-import-not-at-top,multiple-imports
  with contextlib.closing(sqlite3.connect(store.db_path)) as db:
    found = db.execute('select id, prompt, chosen, rejected, generation_ids from preferences '
                       'order by id').fetchall()
  return [row[:4] for row in found if generation_id in json.loads(row[4])]


def generate(client, n=2, prompt='The '):
  r = client.post('/v1/completions', json={'prompt': prompt, 'n': n, 'max_tokens': 12,
                                           'temperature': 1.0})
  assert r.status_code == 200, r.text
  return r.json()


def error_of(r, status):
  assert r.status_code == status, r.text
  err = r.json()['error']
  assert err['code'] == str(status)
  return err


def test_feedback_routes_over_http(client, url, store):
  out = generate(client)
  gid = out['id']
  assert store.get_generation(gid)['outputs'] == [c['text'] for c in out['choices']]
  texts = [c['text'] for c in out['choices']]

  # ratings
  r = client.post('/v1/feedback', json={'generation_id': gid, 'choice': 1, 'rating': 'down',
                                        'comment': 'meh'})
  assert r.status_code == 200, r.text
  assert isinstance(r.json()['id'], int) and r.json()['rating'] == 'down'
  assert client.post('/v1/feedback', json={'generation_id': gid, 'rating': 'up'}).status_code == 200
  assert sorted(ratings_of(store, gid)) == [(0, 1, None), (1, -1, 'meh')]
  assert error_of(client.post('/v1/feedback', json={'generation_id': gid, 'rating': 'meh'}),
                  422)['param'] == 'rating'
  assert error_of(client.post('/v1/feedback', json={'generation_id': gid, 'rating': 1}),
                  422)['param'] == 'rating'
  assert error_of(client.post('/v1/feedback', json={'generation_id': gid, 'choice': 2,
                                                    'rating': 'up'}), 422)['param'] == 'choice'
  err = error_of(client.post('/v1/feedback', json={'generation_id': 'cmpl-nope', 'rating': 'up'}),
                 404)
  assert err['type'] == 'not_found_error' and 'cmpl-nope' in err['message']

  # edits
  r = client.post('/v1/feedback/edit', json={'generation_id': gid, 'choice': 1, 'text': 'Better.'})
  assert r.status_code == 200, r.text
  assert edits_of(store, gid) == [(1, 'Better.')]
  error_of(client.post('/v1/feedback/edit', json={'generation_id': 'cmpl-nope', 'text': 'x'}), 404)
  error_of(client.post('/v1/feedback/edit', json={'generation_id': gid, 'choice': 7, 'text': 'x'}),
           422)
  error_of(client.post('/v1/feedback/edit', json={'generation_id': gid}), 422)
  error_of(client.post('/v1/feedback/edit', json={'generation_id': gid, 'text': ' '}), 422)

  # preferences: two choices of one generation, or free texts
  r = client.post('/v1/feedback/preference', json={'generation_id': gid, 'chosen': 1,
                                                   'rejected': 0})
  assert r.status_code == 200, r.text
  assert preferences_of(store, gid) == [(r.json()['id'], 'The ', texts[1], texts[0])]
  r2 = client.post('/v1/feedback/preference', json={'prompt': 'Q', 'chosen': 'good',
                                                    'rejected': 'bad'})
  assert r2.status_code == 200 and r2.json()['id'] == r.json()['id'] + 1
  for bad in ({'generation_id': gid, 'chosen': 0, 'rejected': 0},
              {'generation_id': gid, 'chosen': 'a', 'rejected': 'b'},
              {'generation_id': gid, 'prompt': 'Q', 'chosen': 0, 'rejected': 1},
              {'prompt': 'Q', 'chosen': 0, 'rejected': 1},
              {'chosen': 'a', 'rejected': 'b'},
              {'generation_id': gid, 'chosen': 0, 'rejected': 5},
              {'prompt': 'Q', 'chosen': 'same', 'rejected': 'same'}):
    error_of(client.post('/v1/feedback/preference', json=bad), 422)
  error_of(client.post('/v1/feedback/preference',
                       json={'generation_id': 'cmpl-nope', 'chosen': 0, 'rejected': 1}), 404)

  # review queue
  item = review_item_for(store, gid)
  queue = client.get('/v1/review').json()
  assert queue['object'] == 'list' and item in [it['id'] for it in queue['data']]
  mine = next(it for it in queue['data'] if it['id'] == item)
  assert mine['generation_id'] == gid and mine['status'] == 'pending'
  error_of(client.get('/v1/review', params={'status': 'bogus'}), 422)
  error_of(client.post(f'/v1/review/{item}', json={'decision': 'maybe'}), 422)
  r = client.post(f'/v1/review/{item}', json={'decision': 'rejected', 'reviewer': 'ann'})
  assert r.status_code == 200 and r.json()['status'] == 'rejected'
  rejected = client.get('/v1/review', params={'status': 'rejected'}).json()['data']
  assert [(it['id'], it['reviewer']) for it in rejected if it['id'] == item] == [(item, 'ann')]
  assert item not in [it['id'] for it in client.get('/v1/review').json()['data']]
  assert item in [it['id'] for it in client.get('/v1/review?status=all&limit=500').json()['data']]
  error_of(client.post('/v1/review/987654', json={'decision': 'approved'}), 404)

  stats = client.get('/v1/feedback/stats')
  assert stats.status_code == 200, stats.text
  assert stats.json() == store.stats() and stats.json()['ratings'] >= 2

  # the key: every route but the page needs it
  with httpx.Client(base_url=url, timeout=30) as anon:
    page = anon.get('/')
    assert page.status_code == 200 and page.headers['content-type'].startswith('text/html')
    assert 'id="generate"' in page.text and '<script src' not in page.text
    for method, path, body in (('POST', '/v1/feedback', {'generation_id': gid, 'rating': 'up'}),
                               ('POST', '/v1/feedback/edit', {'generation_id': gid, 'text': 'x'}),
                               ('POST', '/v1/feedback/preference',
                                {'generation_id': gid, 'chosen': 0, 'rejected': 1}),
                               ('GET', '/v1/review', None),
                               ('POST', f'/v1/review/{item}', {'decision': 'approved'}),
                               ('GET', '/v1/feedback/stats', None)):
      r = anon.request(method, path, json=body)
      assert error_of(r, 401)['type'] == 'authentication_error', path
  paths = set(client.get('/openapi.json').json()['paths'])
  assert {'/v1/feedback', '/v1/feedback/edit', '/v1/feedback/preference', '/v1/review',
          '/v1/review/{item_id}', '/v1/feedback/stats'} <= paths


@pytest.fixture(scope='module')
def browser():
  sync_api = pytest.importorskip('playwright.sync_api')
  if not os.path.exists(CHROMIUM):
    pytest.skip(f'no {CHROMIUM} (apt-get install chromium)')
  with sync_api.sync_playwright() as p:
    b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                          args=['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'])
    yield b
    b.close()


@pytest.mark.slow  # a headless browser
def test_web_page_in_chromium(browser, url, store):
  from playwright.sync_api import expect  # pylint: disable=g-import-not-at-top
  page = browser.new_page()
  page.set_default_timeout(30_000)
  errors = []
  page.on('pageerror', lambda e: errors.append(str(e)))
  requests = []
  page.on('request', lambda r: requests.append(r.url))
  page.goto(url + '/')
  status = page.get_by_test_id('status')
  expect(status).to_have_text('Ready.')

  # without a key the API says so, and the page shows it
  page.get_by_test_id('prompt').fill('The ')
  page.get_by_test_id('generate').click()
  expect(status).to_contain_text('401')
  expect(status).to_have_attribute('data-state', 'error')

  page.get_by_test_id('api-key').fill(KEY)
  assert page.evaluate("localStorage.getItem('genai.apiKey')") == KEY
  page.get_by_test_id('max-tokens').fill('12')
  page.get_by_test_id('temperature').fill('1')
  page.get_by_test_id('generate').click()
  expect(status).to_contain_text('Generated 2 samples')
  expect(page.get_by_test_id('sample-a')).to_be_visible()
  expect(page.get_by_test_id('sample-b')).to_be_visible()
  gid = page.get_by_test_id('generation-id').text_content()
  gen = store.get_generation(gid)
  assert gen is not None and gen['params']['n'] == 2
  shown = [page.get_by_test_id(f'sample-{n}-text').text_content() for n in 'ab']
  assert shown == gen['outputs']

  # thumbs up on A, with a comment
  page.get_by_test_id('comment-a').fill('nice')
  page.get_by_test_id('up-a').click()
  expect(status).to_contain_text('Rated A: up')
  expect(status).to_have_attribute('data-state', 'ok')
  assert ratings_of(store, gid) == [(0, 1, 'nice')]

  # edit B
  page.get_by_test_id('edit-b').fill('A fixed sample.')
  page.get_by_test_id('submit-edit-b').click()
  expect(status).to_contain_text('Saved edit of B')
  assert edits_of(store, gid) == [(1, 'A fixed sample.')]

  # A is better
  page.get_by_test_id('prefer-a').click()
  expect(status).to_contain_text('Preferred A over B')
  assert [p[1:] for p in preferences_of(store, gid)] == [
      ('The ', gen['outputs'][0], gen['outputs'][1])]

  # review queue: approve this generation's item
  item = review_item_for(store, gid)
  page.get_by_test_id('tab-review').click()
  expect(status).to_contain_text('pending item(s)')
  row = page.get_by_test_id(f'review-item-{item}')
  expect(row).to_be_visible()
  page.get_by_test_id(f'approve-{item}').click()
  expect(status).to_contain_text(f'Review item #{item} approved')
  expect(row).to_have_count(0)  # gone from the pending list
  decided = [it for it in store.review_queue('approved', 500) if it['id'] == item]
  assert decided and decided[0]['reviewer'] == 'web' and decided[0]['generation_id'] == gid

  assert not errors, errors
  assert all(r.startswith(url) for r in requests), requests  # nothing leaves the server
  page.close()
