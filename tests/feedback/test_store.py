"""FeedbackStore on SQLite and on PostgreSQL (`db_url`, tests/feedback/conftest.py): round
trips, exports, durability under SIGKILL, concurrent writers, migrations."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from genai.feedback import store as store_lib
from genai.feedback.store import FeedbackStore, SchemaError
from pg_fixtures import new_database
# The fixtures (pytest finds them in this module's namespace):
from pg_fixtures import db_url, pg_server  # pylint: disable=unused-import

REPO = Path(__file__).resolve().parents[2]


def _record(gid: str, prompt: str = 'Once upon', outputs=('a time', 'a hill'), **kw) -> dict:
  rec = {'id': gid, 'kind': 'completion', 'model': 'lm', 'version': 'step-1200',
         'prompt': prompt, 'outputs': list(outputs), 'finish_reasons': ['stop'] * len(outputs),
         'params': {'max_tokens': 16, 'temperature': 0.7, 'top_p': 1.0, 'top_k': 0,
                    'stop': ['\n'], 'seed': 3, 'n': len(outputs)},
         'user': 'u1', 'flags': [], 'time': 1700000000.5}
  rec.update(kw)
  return rec


def _jsonl(path) -> list[dict]:
  return [json.loads(line) for line in Path(path).read_text(encoding='utf-8').splitlines()]


@pytest.fixture
def store(db_url):
  s = FeedbackStore(db_url)
  yield s
  s.close()


def test_for_workdir(tmp_path):
  with FeedbackStore.for_workdir(str(tmp_path / 'w')) as s:
    assert s.url == f'sqlite:///{tmp_path}/w/feedback.db' and s.schema_version() == 2
  assert (tmp_path / 'w/feedback.db').exists()


def test_round_trip(store):
  assert store.SCHEMA_VERSION == 2 and store.schema_version() == 2
  rec = _record('cmpl-1', flags=['pii'])
  assert store.record_generation(rec) == 'cmpl-1'
  assert store.record_generation(_record('cmpl-1', outputs=['other'])) == 'cmpl-1'  # idempotent
  got = store.get_generation('cmpl-1')
  assert {k: got[k] for k in rec} == rec and got['created'] > 0
  assert store.get_generation('cmpl-nope') is None

  r1 = store.add_rating('cmpl-1', 0, 1, comment='nice')
  r2 = store.add_rating('cmpl-1', 1, -1)
  e1 = store.add_edit('cmpl-1', 1, 'a hillside')
  p1 = store.add_preference('Q', 'good', 'bad', ['cmpl-1'], source='synthetic')
  p2 = store.add_preference('Q2', 'good', 'bad')
  assert r2 > r1 and e1 >= 1 and p2 > p1
  fb = store.feedback_for('cmpl-1')
  assert [(r['choice'], r['rating'], r['comment']) for r in fb['ratings']] == [
      (0, 1, 'nice'), (1, -1, None)]
  assert [(e['choice'], e['text']) for e in fb['edits']] == [(1, 'a hillside')]

  i1 = store.add_review_item('cmpl-1', 'call 555-1234', ['pii'])
  i2 = store.add_review_item(None, 'something rude', ['toxicity', 'profanity'])
  queue = store.review_queue()
  assert [q['id'] for q in queue] == [i1, i2]
  assert queue[1] == {'id': i2, 'generation_id': None, 'text': 'something rude',
                      'flags': ['toxicity', 'profanity'], 'status': 'pending',
                      'created': queue[1]['created'], 'reviewer': None, 'decided': None}
  store.decide_review(i1, 'approved', reviewer='ann')
  store.decide_review(i2, 'rejected')
  assert store.review_queue() == []
  assert store.review_queue(limit=1, status=None)[0]['id'] == i1
  (item,) = store.review_queue('approved')
  assert item['reviewer'] == 'ann' and item['decided'] >= item['created']
  assert store.stats() == {'generations': 1, 'ratings': 2, 'edits': 1, 'preferences': 2,
                           'review_items': 2, 'review_pending': 0}


def test_errors(store):
  store.record_generation(_record('cmpl-1'))
  with pytest.raises(KeyError, match='cmpl-404'):
    store.add_rating('cmpl-404', 0, 1)
  with pytest.raises(KeyError, match='cmpl-404'):
    store.add_edit('cmpl-404', 0, 'x')
  with pytest.raises(KeyError, match='cmpl-404'):
    store.add_preference('p', 'a', 'b', ['cmpl-1', 'cmpl-404'])
  for choice in (-1, 2, True, 0.0):
    with pytest.raises(ValueError, match='choice'):
      store.add_rating('cmpl-1', choice, 1)
  with pytest.raises(ValueError, match='choice'):
    store.add_edit('cmpl-1', 5, 'x')
  for rating in (0, 2, -2, True, '1'):
    with pytest.raises(ValueError, match='rating'):
      store.add_rating('cmpl-1', 0, rating)
  with pytest.raises(ValueError):
    store.add_edit('cmpl-1', 0, '  ')
  with pytest.raises(ValueError):
    store.add_preference('p', 'same', 'same')
  with pytest.raises(ValueError):
    store.record_generation({'id': 'cmpl-2', 'prompt': 'p'})
  item = store.add_review_item(None, 't', [])
  with pytest.raises(ValueError, match='decision'):
    store.decide_review(item, 'maybe')
  with pytest.raises(KeyError, match='12345'):
    store.decide_review(12345, 'approved')
  assert store.stats()['ratings'] == store.stats()['edits'] == store.stats()['preferences'] == 0


def test_exports(store, tmp_path):
  store.record_generation(_record('cmpl-a', 'pa', ['a0', 'a1', 'a2']))
  store.record_generation(_record('cmpl-b', 'pb', [''], finish_reasons=['content_filter']))
  store.add_rating('cmpl-a', 0, 1)
  store.add_rating('cmpl-a', 0, 1)     # twice up: one row
  store.add_rating('cmpl-a', 1, 1)
  store.add_rating('cmpl-a', 1, -1)    # up and down: not SFT
  store.add_rating('cmpl-a', 2, -1)
  store.add_edit('cmpl-a', 2, 'a2 fixed')
  store.add_edit('cmpl-a', 0, 'a0')    # same text as the output: SFT only
  store.add_edit('cmpl-b', 0, 'b fixed')  # over a withheld (empty) output: SFT only
  store.add_preference('pp', 'yes', 'no', ['cmpl-a'])
  time.sleep(0.01)
  mid = time.time()
  time.sleep(0.01)
  store.record_generation(_record('cmpl-c', 'pc', ['c0']))
  store.add_rating('cmpl-c', 0, 1)
  store.add_rating('cmpl-a', 0, 1)     # a0's first +1 was before `mid`
  store.add_edit('cmpl-c', 0, 'c0 better')
  store.add_preference('pq', 'up', 'down', source='synthetic')

  sft, dpo = tmp_path / 'out/sft.jsonl', tmp_path / 'out/dpo.jsonl'
  assert store.export_sft(str(sft)) == 6
  assert _jsonl(sft) == [
      {'prompt': 'pa', 'response': 'a0'}, {'prompt': 'pa', 'response': 'a2 fixed'},
      {'prompt': 'pa', 'response': 'a0'}, {'prompt': 'pb', 'response': 'b fixed'},
      {'prompt': 'pc', 'response': 'c0'}, {'prompt': 'pc', 'response': 'c0 better'}]
  assert store.export_dpo(str(dpo)) == 4
  assert _jsonl(dpo) == [
      {'prompt': 'pa', 'chosen': 'a2 fixed', 'rejected': 'a2'},
      {'prompt': 'pp', 'chosen': 'yes', 'rejected': 'no'},
      {'prompt': 'pc', 'chosen': 'c0 better', 'rejected': 'c0'},
      {'prompt': 'pq', 'chosen': 'up', 'rejected': 'down'}]

  assert store.export_sft(str(sft), since=mid) == 2  # overwrites
  assert _jsonl(sft) == [{'prompt': 'pc', 'response': 'c0'},
                         {'prompt': 'pc', 'response': 'c0 better'}]
  assert store.export_dpo(str(dpo), since=mid) == 2
  assert [r['prompt'] for r in _jsonl(dpo)] == ['pc', 'pq']
  assert store.export_dpo(str(dpo), since=time.time() + 10) == 0 and dpo.read_text() == ''
  assert sorted(os.listdir(tmp_path / 'out')) == ['dpo.jsonl', 'sft.jsonl']  # no temp files


_CHILD = textwrap.dedent('''
    import sys
    sys.path.insert(0, {repo!r})
    from genai.feedback.store import FeedbackStore
    store, tag, n = FeedbackStore({url!r}), sys.argv[1], int(sys.argv[2])  # noqa
    i = 0
    while n < 0 or i < n:
      gid = f'cmpl-{{tag}}-{{i}}'
      store.record_generation({{'id': gid, 'prompt': 'p', 'outputs': ['o'], 'time': 0.0}})
      store.add_rating(gid, 0, 1)
      print('ACK', i, flush=True)
      i += 1
    store.close()
''')


def _child(url: str, tag: str, n: int) -> subprocess.Popen:
  code = _CHILD.format(repo=str(REPO), url=url)
  return subprocess.Popen([sys.executable, '-c', code, tag, str(n)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _write_until_killed(url: str, kill) -> int:
  """Runs a writer child until it acknowledged 200 rows, then `kill(proc)`; returns the last
  row acknowledged (the kill lands while it writes the next one)."""
  proc = _child(url, 'k', -1)  # writes until killed
  acked = -1
  try:
    for line in proc.stdout:
      acked = int(line.split()[1])
      if acked >= 200:
        kill(proc)
        break
  finally:
    proc.kill()
    proc.wait()
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
  assert acked >= 200, err
  return acked


def _check_acked(url: str, acked: int) -> None:
  store = FeedbackStore(url)
  try:
    for i in range(acked + 1):
      assert store.get_generation(f'cmpl-k-{i}') is not None, i
      assert [r['rating'] for r in store.feedback_for(f'cmpl-k-{i}')['ratings']] == [1], i
    assert store.stats()['ratings'] >= acked + 1
  finally:
    store.close()


# The PostgreSQL cases of the subprocess tests are in the slow tier (a few seconds each).
_BOTH_SLOW_PG = pytest.mark.parametrize(
    'db_url', ['sqlite', pytest.param('postgresql', marks=pytest.mark.slow)], indirect=True)


@_BOTH_SLOW_PG
def test_acknowledged_rows_survive_sigkill_of_the_writer(db_url, tmp_path):
  FeedbackStore(db_url).close()
  acked = _write_until_killed(db_url, lambda proc: proc.send_signal(signal.SIGKILL))
  if db_url.startswith('sqlite'):
    with sqlite3.connect(tmp_path / 'feedback.db') as raw:
      assert raw.execute('PRAGMA integrity_check').fetchone() == ('ok',)
    raw.close()
  _check_acked(db_url, acked)


@pytest.mark.slow
def test_acknowledged_rows_survive_sigkill_of_the_database_server(pg_server):
  """PostgreSQL with its durable defaults: SIGKILL of the server and all its processes
  (no shutdown checkpoint) while a client writes; after crash recovery every row the
  client had acknowledged is there."""
  url = new_database(pg_server)
  assert pg_server.psql('SHOW fsync') == 'on'
  assert pg_server.psql('SHOW synchronous_commit') == 'on'
  FeedbackStore(url).close()
  try:
    acked = _write_until_killed(url, lambda proc: pg_server.kill())
  finally:
    pg_server.start()
  assert 'database system was interrupted' in pg_server.log_tail(40)  # crash recovery ran
  _check_acked(url, acked)


@_BOTH_SLOW_PG
def test_concurrent_writers(db_url):
  url, n = db_url, 100
  shared = FeedbackStore(url)
  procs = [_child(url, f'p{k}', n) for k in range(2)]  # they open the store concurrently too
  errors = []

  def write(tag: str) -> None:
    try:
      for i in range(n):
        gid = shared.record_generation(_record(f'cmpl-{tag}-{i}'))
        shared.add_rating(gid, i % 2, 1 if i % 3 else -1)
    except Exception as e:  # pylint: disable=broad-except
      errors.append(repr(e))

  threads = [threading.Thread(target=write, args=(f't{k}',)) for k in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  outs = [p.communicate(timeout=60) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err
    assert out.count('ACK') == n and 'locked' not in err
  assert errors == []
  assert shared.stats()['generations'] == shared.stats()['ratings'] == 6 * n
  for tag in ('t0', 't3', 'p0', 'p1'):
    assert all(shared.get_generation(f'cmpl-{tag}-{i}') for i in range(n))
  shared.close()


# The v1 schema as the v1 code created it (written out: not derived from today's code), with
# one row in each table. {serial}: the backend's auto-increment integer key.
_V1_SQL = '''
CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied FLOAT NOT NULL);
CREATE TABLE generations (
  id VARCHAR(128) PRIMARY KEY, kind VARCHAR(32) NOT NULL, model TEXT NOT NULL,
  version TEXT NOT NULL, prompt TEXT NOT NULL, outputs TEXT NOT NULL,
  finish_reasons TEXT NOT NULL, params TEXT NOT NULL, "user" TEXT, flags TEXT NOT NULL,
  time FLOAT NOT NULL, created FLOAT NOT NULL);
CREATE TABLE ratings (
  id {serial}, generation_id VARCHAR(128) NOT NULL REFERENCES generations (id),
  choice INTEGER NOT NULL, rating INTEGER NOT NULL, comment TEXT, created FLOAT NOT NULL);
CREATE TABLE edits (
  id {serial}, generation_id VARCHAR(128) NOT NULL REFERENCES generations (id),
  choice INTEGER NOT NULL, text TEXT NOT NULL, created FLOAT NOT NULL);
CREATE TABLE preferences (
  id {serial}, prompt TEXT NOT NULL, chosen TEXT NOT NULL, rejected TEXT NOT NULL,
  generation_ids TEXT NOT NULL, created FLOAT NOT NULL);
INSERT INTO schema_version VALUES (1, 1.0);
INSERT INTO generations VALUES ('cmpl-old', 'chat', 'lm', 'step-5', 'old prompt', '["o0", "o1"]',
  '["stop", "stop"]', '{{"n": 2}}', NULL, '[]', 10.0, 10.0);
INSERT INTO ratings (generation_id, choice, rating, comment, created)
  VALUES ('cmpl-old', 1, 1, 'ok', 11.0);
INSERT INTO edits (generation_id, choice, text, created) VALUES ('cmpl-old', 0, 'o0 edited', 12.0);
INSERT INTO preferences (prompt, chosen, rejected, generation_ids, created)
  VALUES ('old q', 'old good', 'old bad', '["cmpl-old"]', 13.0)
'''


def _sql(url: str, statements: str) -> list[list[tuple]]:
  """Runs `;`-separated statements in one transaction; the rows of each."""
  engine = sa.create_engine(url)
  try:
    out = []
    with engine.begin() as conn:
      for q in filter(str.strip, statements.split(';')):
        result = conn.exec_driver_sql(q)
        out.append(result.fetchall() if result.returns_rows else [])
    return out
  finally:
    engine.dispose()


def _make_v1(url: str) -> None:
  serial = 'SERIAL PRIMARY KEY' if url.startswith('postgresql') else 'INTEGER PRIMARY KEY'
  _sql(url, _V1_SQL.format(serial=serial))


def _columns(url: str) -> dict[str, list[str]]:
  engine = sa.create_engine(url)
  try:
    inspector = sa.inspect(engine)
    return {t: sorted(c['name'] for c in inspector.get_columns(t))
            for t in inspector.get_table_names()}
  finally:
    engine.dispose()


def test_migrates_v1_database(db_url):
  _make_v1(db_url)
  store = FeedbackStore(db_url)
  try:
    assert store.schema_version() == 2
    assert store.stats() == {'generations': 1, 'ratings': 1, 'edits': 1, 'preferences': 1,
                             'review_items': 0, 'review_pending': 0}
    assert store.get_generation('cmpl-old')['outputs'] == ['o0', 'o1']
    store.add_preference('new q', 'a', 'b', source='synthetic')
    store.add_review_item('cmpl-old', 'o1', ['pii'])
    assert len(store.review_queue()) == 1
    assert [r['prompt'] for r in store.dpo_rows()] == ['old prompt', 'old q', 'new q']
    assert store.sft_rows() == [{'prompt': 'old prompt', 'response': 'o1'},
                                {'prompt': 'old prompt', 'response': 'o0 edited'}]
  finally:
    store.close()
  FeedbackStore(db_url).close()  # opening a current database again changes nothing
  sources, versions = _sql(db_url, 'SELECT source FROM preferences ORDER BY id; '
                                   'SELECT version FROM schema_version ORDER BY version')
  assert sources == [('user',), ('synthetic',)] and versions == [(1,), (2,)]
  tables = {**store_lib._T, 'schema_version': store_lib._SCHEMA_VERSION_T}  # pylint: disable=protected-access
  expected = {name: sorted(c.name for c in t.columns) for name, t in tables.items()}
  assert _columns(db_url) == expected


def test_concurrent_first_opens_migrate_once(db_url):
  """Replicas starting together on an empty database: one migrates, the others wait."""
  barrier, stores, errors = threading.Barrier(4), [], []

  def open_store():
    barrier.wait()
    try:
      stores.append(FeedbackStore(db_url))
    except Exception as e:  # pylint: disable=broad-except
      errors.append(repr(e))

  threads = [threading.Thread(target=open_store) for _ in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert errors == [] and len(stores) == 4
  stores[0].record_generation(_record('cmpl-1'))
  assert [s.stats()['generations'] for s in stores] == [1] * 4
  for s in stores:
    s.close()
  assert _sql(db_url, 'SELECT version FROM schema_version ORDER BY version') == [[(1,), (2,)]]


def test_failed_migration_rolls_back(db_url, monkeypatch):
  _make_v1(db_url)

  def broken(conn):
    store_lib._migrate_to_2(conn)  # pylint: disable=protected-access
    raise RuntimeError('disk on fire')

  monkeypatch.setattr(store_lib, '_MIGRATIONS', [store_lib._migrate_to_1, broken])  # pylint: disable=protected-access
  with pytest.raises(RuntimeError, match='disk on fire'):
    FeedbackStore(db_url)
  cols = _columns(db_url)
  assert 'review_items' not in cols and 'source' not in cols['preferences']
  monkeypatch.undo()
  with FeedbackStore(db_url) as store:
    assert store.schema_version() == 2 and store.stats()['preferences'] == 1


def test_newer_database_is_refused(db_url):
  FeedbackStore(db_url).close()
  _sql(db_url, 'INSERT INTO schema_version VALUES (3, 2.0)')
  with pytest.raises(SchemaError, match='schema version 3, newer'):
    FeedbackStore(db_url)
