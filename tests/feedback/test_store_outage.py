"""FeedbackStore when its database is unavailable: one clear `StoreUnavailable`, and the same
store object works again once the database is back (SQLite and PostgreSQL)."""
from __future__ import annotations

import os
import sqlite3
import uuid

import pytest

from genai.feedback import store as store_lib
from genai.feedback.store import FeedbackStore, StoreUnavailable
from pg_fixtures import new_database
# The fixture (pytest finds it in this module's namespace):
from pg_fixtures import pg_server  # pylint: disable=unused-import


def _record(gid: str) -> dict:
  return {'id': gid, 'prompt': 'p', 'outputs': ['o']}


def _all_calls_unavailable(store: FeedbackStore, match: str) -> None:
  calls = [store.ping, store.stats, store.schema_version, lambda: store.get_generation('g0'),
           lambda: store.record_generation(_record('g-down')),
           lambda: store.add_rating('g0', 0, 1), lambda: store.review_queue(),
           lambda: store.add_preference('q', 'a', 'b')]
  for call in calls:
    with pytest.raises(StoreUnavailable, match=match) as e:
      call()
    message = str(e.value)
    assert '\n' not in message and message.endswith('retry later'), message


def test_postgres_down_then_back(pg_server):
  url = new_database(pg_server)
  store = FeedbackStore(url)
  try:
    store.record_generation(_record('g0'))
    pg_server.stop()
    try:
      _all_calls_unavailable(store, r'feedback database postgresql\+psycopg://genai:\*\*\*@'
                             r'127\.0\.0\.1:\d+/t_\w+ is unavailable \(.+\); retry later')
      assert pg_server.password not in str(pytest.raises(StoreUnavailable, store.ping).value)
      with pytest.raises(StoreUnavailable, match='unavailable'):
        FeedbackStore(url)  # opening while it is down: the same one line
    finally:
      pg_server.start()
    # The pool's dead connections are replaced: the same store works again.
    store.add_rating('g0', 0, 1)
    assert store.stats()['ratings'] == 1 and store.get_generation('g-down') is None
  finally:
    store.close()


def test_sqlite_locked_past_the_busy_timeout_then_free(tmp_path, monkeypatch):
  """Another process holds SQLite's write lock for longer than the busy timeout."""
  monkeypatch.setattr(store_lib, '_BUSY_TIMEOUT_S', 0.2)
  path = tmp_path / 'feedback.db'
  store = FeedbackStore(f'sqlite:///{path}')
  try:
    store.record_generation(_record('g0'))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute('BEGIN EXCLUSIVE')
    try:
      for call in (lambda: store.record_generation(_record('g-down')),
                   lambda: store.add_rating('g0', 0, 1)):
        with pytest.raises(StoreUnavailable, match=r'is unavailable \(database is locked\)'):
          call()
      assert store.get_generation('g0') is not None  # WAL: readers still read
    finally:
      holder.execute('ROLLBACK')
      holder.close()
    store.add_rating('g0', 0, 1)
    assert store.stats()['ratings'] == 1 and store.get_generation('g-down') is None
  finally:
    store.close()


def test_postgres_refused_login_then_allowed(pg_server):
  """A wrong password: StoreUnavailable naming the refusal (a lazy store waits for the first
  call); once the role's password matches, the same store migrates and works."""
  role, db = f'r_{uuid.uuid4().hex[:8]}', f't_{uuid.uuid4().hex[:12]}'
  pg_server.psql(f"CREATE ROLE {role} LOGIN PASSWORD 'right-one'")
  pg_server.psql(f'CREATE DATABASE {db} OWNER {role}')
  url = pg_server.url(db, password='new-one', user=role)
  with pytest.raises(StoreUnavailable, match='password authentication failed'):
    FeedbackStore(url)
  store = FeedbackStore(url, lazy=True)
  try:
    _all_calls_unavailable(store, f'password authentication failed for user "{role}"')
    assert 'new-one' not in str(pytest.raises(StoreUnavailable, store.ping).value)
    pg_server.psql(f"ALTER ROLE {role} PASSWORD 'new-one'")
    store.record_generation(_record('g0'))
    assert store.schema_version() == store.SCHEMA_VERSION and store.stats()['generations'] == 1
  finally:
    store.close()


def test_sqlite_unopenable_then_openable(tmp_path):
  """The folder of the database file is missing (an unmounted volume): unavailable until it
  is there; a lazy store then creates the schema at its first call."""
  url = f'sqlite:///{tmp_path}/volume/feedback.db'
  with pytest.raises(StoreUnavailable, match=r'unavailable \(unable to open database file\)'):
    FeedbackStore(url)
  store = FeedbackStore(url, lazy=True)
  try:
    _all_calls_unavailable(store, 'unable to open database file')
    os.makedirs(tmp_path / 'volume')
    store.record_generation(_record('g0'))
    assert store.stats()['generations'] == 1
  finally:
    store.close()
