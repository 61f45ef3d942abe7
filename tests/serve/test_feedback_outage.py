"""The API when its feedback database goes away and comes back (SQLite and PostgreSQL):
one 503 with a clear message on the routes that need it, /readyz 503 while /healthz stays
200, and every route working again, with no restart, once the database is back."""
import json
import os
import shutil
import sys
from pathlib import Path

import httpx
import pytest

from genai.feedback import local_postgres
from genai.feedback.store import FeedbackStore
from genai.serve import api
from serving_helpers import make_engine, running_server
# The shared fixture (pytest finds it in this module's namespace):
from serving_helpers import served  # pylint: disable=unused-import

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'feedback'))
from pg_fixtures import new_database  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope='module')
def engine(served):  # pylint: disable=redefined-outer-name
  e = make_engine(served, num_slots=1)  # one slot: the fewest shapes to compile
  yield e
  e.stop()


class _Sqlite:
  """A database file on a 'volume' (a folder) that can be unmounted: moved away and back."""

  def __init__(self, tmp_path):
    self.volume, self.away = tmp_path / 'volume', tmp_path / 'away'
    os.makedirs(self.volume)
    self.url = f'sqlite:///{self.volume}/feedback.db'

  def down(self, store):
    store.close()  # no pooled connection keeps the moved file open
    shutil.move(self.volume, self.away)

  def up(self):
    shutil.move(self.away, self.volume)

  match = 'unable to open database file'


class _Postgres:
  def __init__(self, _):
    reason = local_postgres.missing()
    if reason:
      pytest.skip(reason + '; .ci/run installs it')
    self.pg = local_postgres.shared()
    self.url = new_database(self.pg)

  def down(self, _):
    self.pg.stop()

  def up(self):
    self.pg.start()

  match = 'connection'


@pytest.mark.parametrize('backend', [
    pytest.param(_Sqlite, id='sqlite'),
    pytest.param(_Postgres, id='postgresql', marks=pytest.mark.slow)])  # ~4 s
def test_database_down_then_back(backend, tmp_path, served, engine):
  db = backend(tmp_path)
  store = FeedbackStore(db.url, lazy=True)
  app = api.make_app(served, engine=engine, feedback_store=store)
  body = {'prompt': 'The ', 'max_tokens': 4, 'seed': 1}
  with running_server(app) as url, httpx.Client(base_url=url, timeout=60) as c:
    assert c.get('/readyz').json()['feedback'] == 'ok'
    gid = c.post('/v1/completions', json=body).json()['id']
    assert c.post('/v1/feedback', json={'generation_id': gid, 'rating': 'up'}).status_code == 200
    db.down(store)
    try:
      assert c.get('/healthz').status_code == 200  # liveness: do not restart the replica
      for r in (c.get('/readyz'), c.post('/v1/completions', json=body),
                c.post('/v1/feedback', json={'generation_id': gid, 'rating': 'down'}),
                c.get('/v1/feedback/stats')):
        assert r.status_code == 503, r.text
        assert r.headers['retry-after'] == '5'
        message = r.json()['error']['message']
        assert message.startswith('the feedback database ') and db.match in message, message
        assert message.endswith('retry later') and '\n' not in message
      events = c.post('/v1/completions', json={**body, 'stream': True}).text.split('\n\n')
      assert 'the feedback database' in json.loads(events[-3][6:])['error']['message']
      assert events[-2] == 'data: [DONE]'
    finally:
      db.up()
    assert c.get('/readyz').status_code == 200
    gid2 = c.post('/v1/completions', json=body).json()['id']
    assert c.post('/v1/feedback', json={'generation_id': gid2, 'rating': 'up'}).status_code == 200
    assert c.get('/v1/feedback/stats').json()['ratings'] == 2  # the outage wrote nothing
  store.close()


def test_server_starts_before_its_database(tmp_path, served, engine):
  """A lazy store (what `--feedback_db` makes): the replica serves /healthz, answers 503 on
  /readyz until the database exists, then migrates it at the first call."""
  store = FeedbackStore(f'sqlite:///{tmp_path}/later/feedback.db', lazy=True)
  app = api.make_app(served, engine=engine, feedback_store=store)
  with running_server(app) as url, httpx.Client(base_url=url, timeout=60) as c:
    assert c.get('/healthz').status_code == 200 and c.get('/readyz').status_code == 503
    os.makedirs(tmp_path / 'later')
    assert c.get('/readyz').json()['status'] == 'ready'
    assert c.post('/v1/completions', json={'prompt': 'a', 'max_tokens': 2}).status_code == 200
  assert store.stats()['generations'] == 1
  store.close()
