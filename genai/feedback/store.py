"""Durable storage of served generations and the feedback users give on them.

`FeedbackStore(url)` works on any SQLAlchemy URL: 'sqlite:///{workdir}/feedback.db' for one
machine (`FeedbackStore.for_workdir`), 'postgresql+psycopg2://...' for a team. Its
`record_generation` is the `on_generation` hook of genai/serve/api.py.

Tables (JSON values are stored as TEXT, times as float epoch seconds):
  schema_version  version (pk), applied          one row per migration applied
  generations     id (pk, 'cmpl-...'), kind, model, version, prompt, outputs [str],
                  finish_reasons [str], params {..}, user, flags [str], time (when served),
                  created (when stored)
  ratings         id, generation_id -> generations, choice, rating (+1 | -1), comment, created
  edits           id, generation_id -> generations, choice, text (the user's better version
                  of outputs[choice]), created
  preferences     id, prompt, chosen, rejected, generation_ids [str], source ('user', ...),
                  created
  review_items    id, generation_id (not a foreign key: moderation may flag an output before
                  it is recorded), text, flags [str], status ('pending' | 'approved' |
                  'rejected'), created, reviewer, decided

Schema versions: an older database is brought up to date when opened, by applying the
missing entries of `_MIGRATIONS` in order in one transaction (v1: generations, ratings,
edits, preferences; v2: preferences.source and review_items). A database newer than this
code raises `SchemaError`.

Durability and concurrency (SQLite): every connection runs in WAL mode with
`synchronous=FULL`, so a method that wrote has committed and fsynced the WAL before it
returns: the row survives a process kill or power loss. Write transactions start with
`BEGIN IMMEDIATE` and wait on a 30 s busy timeout, so threads and processes writing the same
file queue up instead of failing with 'database is locked'; readers never block in WAL mode.
The store is safe to share between threads (one pooled connection per thread at a time).

PostgreSQL ('postgresql+psycopg://user:password@host:port/db', the `feedback` extra's psycopg
3 driver): the server's defaults are durable (fsync = on, synchronous_commit = on: a commit
returns once its WAL is on disk); several processes and machines share one database, each
row written in its own transaction; the first opens of a new database are serialized by an
advisory lock, so concurrent replicas migrate it once. Pooled connections are checked before
use (pool_pre_ping) and a connection attempt gives up after 10 s (connect_timeout), so a
server restart costs the requests made while it is down, not the pool.

Unavailable database: when the database cannot be reached or refuses the login (a
server that is down or restarting, a wrong password, an SQLite file that cannot be opened
or stays locked past the busy timeout), every method raises `StoreUnavailable`, with one
line naming the cause (the serving API answers it with a 503), and works again once the
database is back. `FeedbackStore(url, lazy=True)` does not touch the database until it is
first used, so a server can start before its database; the schema is brought up to date at
the first call that reaches it.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import sqlite3
import tempfile
import threading
import time
from typing import Any, Callable, Iterator, Sequence

from genai import _extras

with _extras.needs('feedback', 'genai.feedback.store'):
  import sqlalchemy as sa

_PENDING, _DECISIONS = 'pending', ('approved', 'rejected')
_BUSY_TIMEOUT_S = 30.0
_CONNECT_TIMEOUT_S = 10


class SchemaError(RuntimeError):
  """The database's schema cannot be used by this code (e.g. it is newer)."""


class StoreUnavailable(RuntimeError):
  """The database cannot be reached now (down, restarting, login refused, locked); the
  call did not happen and may be retried. The message is one line naming the cause."""


def _unavailable(url: sa.URL, err: sa.exc.DBAPIError) -> StoreUnavailable:
  """One line: which database (password hidden) and the driver's first line of why."""
  reason = str(err.orig if err.orig is not None else err).strip().splitlines()
  reason = reason[0].strip() if reason else type(err).__name__
  where = url.render_as_string(hide_password=True)
  return StoreUnavailable(f'the feedback database {where} is unavailable ({reason}); '
                          'retry later')


def _translated(fn):
  """A store method whose database outage raises `StoreUnavailable`."""
  @functools.wraps(fn)
  def wrapper(self, *args, **kw):
    try:
      return fn(self, *args, **kw)
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as e:
      raise _unavailable(self._engine.url, e) from e  # pylint: disable=protected-access
  return wrapper


def _tables(meta: sa.MetaData, version: int) -> dict[str, sa.Table]:
  """The tables of schema `version`, defined on `meta`."""
  t = {}
  t['generations'] = sa.Table(
      'generations', meta,
      sa.Column('id', sa.String(128), primary_key=True),
      sa.Column('kind', sa.String(32), nullable=False),
      sa.Column('model', sa.Text, nullable=False),
      sa.Column('version', sa.Text, nullable=False),
      sa.Column('prompt', sa.Text, nullable=False),
      sa.Column('outputs', sa.Text, nullable=False),
      sa.Column('finish_reasons', sa.Text, nullable=False),
      sa.Column('params', sa.Text, nullable=False),
      sa.Column('user', sa.Text),
      sa.Column('flags', sa.Text, nullable=False),
      sa.Column('time', sa.Float, nullable=False),
      sa.Column('created', sa.Float, nullable=False, index=True))
  for name, extra in (('ratings', [sa.Column('rating', sa.Integer, nullable=False),
                                   sa.Column('comment', sa.Text)]),
                      ('edits', [sa.Column('text', sa.Text, nullable=False)])):
    t[name] = sa.Table(
        name, meta,
        sa.Column('id', sa.Integer, primary_key=True, autoincrement=True),
        sa.Column('generation_id', sa.String(128), sa.ForeignKey('generations.id'),
                  nullable=False, index=True),
        sa.Column('choice', sa.Integer, nullable=False),
        *extra,
        sa.Column('created', sa.Float, nullable=False, index=True))
  t['preferences'] = sa.Table(
      'preferences', meta,
      sa.Column('id', sa.Integer, primary_key=True, autoincrement=True),
      sa.Column('prompt', sa.Text, nullable=False),
      sa.Column('chosen', sa.Text, nullable=False),
      sa.Column('rejected', sa.Text, nullable=False),
      sa.Column('generation_ids', sa.Text, nullable=False),
      sa.Column('created', sa.Float, nullable=False, index=True),
      *([sa.Column('source', sa.String(64), nullable=False, server_default='user')]
        if version >= 2 else []))
  if version >= 2:
    t['review_items'] = sa.Table(
        'review_items', meta,
        sa.Column('id', sa.Integer, primary_key=True, autoincrement=True),
        sa.Column('generation_id', sa.String(128), index=True),
        sa.Column('text', sa.Text, nullable=False),
        sa.Column('flags', sa.Text, nullable=False),
        sa.Column('status', sa.String(16), nullable=False, server_default=_PENDING,
                  index=True),
        sa.Column('created', sa.Float, nullable=False),
        sa.Column('reviewer', sa.Text),
        sa.Column('decided', sa.Float))
  return t


def _migrate_to_1(conn: sa.Connection) -> None:
  """v1: generations, ratings, edits, preferences (without `source`)."""
  meta = sa.MetaData()
  _tables(meta, 1)
  meta.create_all(conn)


def _migrate_to_2(conn: sa.Connection) -> None:
  """v2: preferences.source (existing rows: 'user') and the review_items table."""
  conn.execute(sa.text(
      "ALTER TABLE preferences ADD COLUMN source VARCHAR(64) NOT NULL DEFAULT 'user'"))
  _tables(sa.MetaData(), 2)['review_items'].create(conn)


# Entry i migrates a version-i database to version i + 1. Append only; never edit one.
_MIGRATIONS: list[Callable[[sa.Connection], None]] = [_migrate_to_1, _migrate_to_2]

_META = sa.MetaData()
_T = _tables(_META, len(_MIGRATIONS))
_SCHEMA_VERSION_T = sa.Table(
    'schema_version', sa.MetaData(),
    sa.Column('version', sa.Integer, primary_key=True, autoincrement=False),
    sa.Column('applied', sa.Float, nullable=False))


def _dumps(value: Any) -> str:
  return json.dumps(value, ensure_ascii=False, default=str)


class FeedbackStore:
  """Generations, ratings, edits, preferences and the review queue in one database."""

  SCHEMA_VERSION: int = len(_MIGRATIONS)

  def __init__(self, url: str, *, lazy: bool = False):
    """Opens the database at SQLAlchemy `url` and brings its schema up to date (raising
    `StoreUnavailable` if it cannot be reached); `lazy`: only at the first call."""
    self.url = url
    self._sqlite = url.startswith('sqlite')
    self._schema_ok = False
    self._schema_lock = threading.Lock()
    try:
      self._engine = self._create_engine(url)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as e:
      shown = url.split('://', 1)[0] + '://...' if '://' in url else url[:40]  # no password
      raise ValueError(f'feedback database URL {shown!r} is not one SQLAlchemy can '
                       f'open ({type(e).__name__}); give sqlite:////abs/path/feedback.db or '
                       'postgresql+psycopg://user:password@host:5432/dbname') from None
    if lazy:
      return
    try:
      self._ensure_schema()
    except BaseException:
      self._engine.dispose()
      raise

  def _create_engine(self, url: str) -> sa.Engine:
    if self._sqlite:
      engine = sa.create_engine(url, connect_args={'timeout': _BUSY_TIMEOUT_S})
      sa.event.listen(engine, 'connect', _sqlite_connect)
      sa.event.listen(engine, 'begin', _sqlite_begin)
      return engine
    parsed = sa.make_url(url)
    connect_args = ({} if 'connect_timeout' in parsed.query or
                    not parsed.drivername.startswith('postgresql')
                    else {'connect_timeout': _CONNECT_TIMEOUT_S})
    return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)

  @classmethod
  def for_workdir(cls, workdir: str) -> FeedbackStore:
    """The store of a training/serving workdir: sqlite:///{workdir}/feedback.db."""
    os.makedirs(workdir, exist_ok=True)
    return cls(f'sqlite:///{os.path.abspath(os.path.join(workdir, "feedback.db"))}')

  # --- connections and schema ---

  @contextlib.contextmanager
  def _write(self, migrating: bool = False) -> Iterator[sa.Connection]:
    """A transaction that holds the write lock from its start (SQLite: BEGIN IMMEDIATE)."""
    if not migrating:
      self._ensure_schema()
    with self._engine.begin() as conn:
      yield conn

  @contextlib.contextmanager
  def _read(self, migrating: bool = False) -> Iterator[sa.Connection]:
    """A read transaction: one consistent snapshot, no lock held (SQLite: BEGIN DEFERRED)."""
    if not migrating:
      self._ensure_schema()
    with self._engine.connect() as conn:
      conn.execution_options(genai_read_only=True)
      with conn.begin():
        yield conn

  def _ensure_schema(self) -> None:
    if self._schema_ok:
      return
    with self._schema_lock:
      if not self._schema_ok:
        self._migrate()
        self._schema_ok = True

  @_translated
  def ping(self) -> None:
    """Raises `StoreUnavailable` unless the database answers now (a readiness check)."""
    self._ensure_schema()
    with self._engine.connect() as conn:
      conn.execute(sa.text('SELECT 1'))

  def _db_version(self, conn: sa.Connection) -> int:
    if not sa.inspect(conn).has_table('schema_version'):
      return 0
    return conn.execute(sa.select(sa.func.max(_SCHEMA_VERSION_T.c.version))).scalar() or 0

  def _check_not_newer(self, version: int) -> None:
    if version > self.SCHEMA_VERSION:
      raise SchemaError(
          f'feedback database {self._engine.url!r} has schema version {version}, newer than '
          f'the {self.SCHEMA_VERSION} this code knows: upgrade genai to open it')

  @_translated
  def _migrate(self) -> None:
    """Creates the schema, or applies the missing migrations in one transaction."""
    with self._read(migrating=True) as conn:
      version = self._db_version(conn)
    self._check_not_newer(version)
    if version == self.SCHEMA_VERSION:
      return
    with self._write(migrating=True) as conn:
      if conn.dialect.name == 'postgresql':  # serialize concurrent first opens
        conn.execute(sa.text('SELECT pg_advisory_xact_lock(4242001)'))
      _SCHEMA_VERSION_T.create(conn, checkfirst=True)
      version = self._db_version(conn)  # another process may have migrated meanwhile
      self._check_not_newer(version)
      for v in range(version, self.SCHEMA_VERSION):
        _MIGRATIONS[v](conn)
        conn.execute(_SCHEMA_VERSION_T.insert().values(version=v + 1, applied=time.time()))

  @_translated
  def schema_version(self) -> int:
    """The version the database is at (== SCHEMA_VERSION once opened)."""
    with self._read() as conn:
      return self._db_version(conn)

  def close(self) -> None:
    """Closes all pooled connections (SQLite: the last one out checkpoints the WAL)."""
    self._engine.dispose()

  def __enter__(self) -> FeedbackStore:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  # --- generations ---

  @_translated
  def record_generation(self, record: dict[str, Any]) -> str:
    """Stores one served generation (the serving `on_generation` hook); a second call with
    the same id keeps the first. Returns the id."""
    missing = [k for k in ('id', 'prompt', 'outputs') if k not in record]
    if missing:
      raise ValueError(f'generation record lacks {missing}: {sorted(record)}')
    gid, outputs = str(record['id']), record['outputs']
    if isinstance(outputs, str) or not isinstance(outputs, Sequence):
      raise ValueError(f'generation {gid!r}: outputs must be a list of strings')
    now = time.time()
    row = dict(id=gid, kind=str(record.get('kind', 'completion')),
               model=str(record.get('model', '')), version=str(record.get('version', '')),
               prompt=str(record['prompt']), outputs=_dumps([str(o) for o in outputs]),
               finish_reasons=_dumps(list(record.get('finish_reasons', ()))),
               params=_dumps(dict(record.get('params') or {})), user=record.get('user'),
               flags=_dumps(list(record.get('flags', ()))),
               time=float(record.get('time', now)), created=now)
    try:
      with self._write() as conn:
        if conn.execute(sa.select(_T['generations'].c.id)
                        .where(_T['generations'].c.id == gid)).first() is None:
          conn.execute(_T['generations'].insert().values(**row))
    except sa.exc.IntegrityError:  # PostgreSQL: a concurrent insert of the same id won
      pass
    return gid

  @_translated
  def get_generation(self, generation_id: str) -> dict[str, Any] | None:
    """The stored record (the hook's keys plus 'created'), or None."""
    with self._read() as conn:
      row = conn.execute(sa.select(_T['generations'])
                         .where(_T['generations'].c.id == generation_id)).mappings().first()
    return None if row is None else _generation_dict(row)

  @_translated
  def feedback_for(self, generation_id: str) -> dict[str, list[dict[str, Any]]]:
    """The ratings and edits given on one generation, oldest first."""
    out = {}
    with self._read() as conn:
      for name in ('ratings', 'edits'):
        t = _T[name]
        rows = conn.execute(sa.select(t).where(t.c.generation_id == generation_id)
                            .order_by(t.c.id)).mappings()
        out[name] = [dict(r) for r in rows]
    return out

  def _outputs(self, conn: sa.Connection, generation_id: str) -> list[str]:
    g = _T['generations']
    outputs = conn.execute(sa.select(g.c.outputs).where(g.c.id == generation_id)).scalar()
    if outputs is None:
      raise KeyError(f'unknown generation id {generation_id!r}')
    return json.loads(outputs)

  def _check_choice(self, conn: sa.Connection, generation_id: str, choice: int) -> None:
    n = len(self._outputs(conn, generation_id))
    if isinstance(choice, bool) or not isinstance(choice, int) or not 0 <= choice < n:
      raise ValueError(f'choice {choice!r} out of range for generation {generation_id!r} '
                       f'with {n} output(s)')

  # --- feedback ---

  @_translated
  def add_rating(self, generation_id: str, choice: int, rating: int,
                 comment: str | None = None) -> int:
    """A thumbs up (+1) or down (-1) on outputs[choice]. Returns the rating's id."""
    if isinstance(rating, bool) or rating not in (1, -1):
      raise ValueError(f'rating must be +1 or -1, got {rating!r}')
    with self._write() as conn:
      self._check_choice(conn, generation_id, choice)
      return conn.execute(_T['ratings'].insert().values(
          generation_id=generation_id, choice=choice, rating=int(rating), comment=comment,
          created=time.time())).inserted_primary_key[0]

  @_translated
  def add_edit(self, generation_id: str, choice: int, text: str) -> int:
    """A user's better version of outputs[choice]. Returns the edit's id."""
    if not isinstance(text, str) or not text.strip():
      raise ValueError('edit text must be a non-empty string')
    with self._write() as conn:
      self._check_choice(conn, generation_id, choice)
      return conn.execute(_T['edits'].insert().values(
          generation_id=generation_id, choice=choice, text=text,
          created=time.time())).inserted_primary_key[0]

  @_translated
  def add_preference(self, prompt: str, chosen: str, rejected: str,
                     generation_ids: Sequence[str] = (), source: str = 'user') -> int:
    """`chosen` is a better response to `prompt` than `rejected`. Any `generation_ids`
    given must be stored generations. Returns the preference's id."""
    if chosen == rejected:
      raise ValueError('a preference needs two different responses')
    ids = [str(i) for i in generation_ids]
    with self._write() as conn:
      for gid in ids:
        self._outputs(conn, gid)
      return conn.execute(_T['preferences'].insert().values(
          prompt=prompt, chosen=chosen, rejected=rejected, generation_ids=_dumps(ids),
          source=source, created=time.time())).inserted_primary_key[0]

  # --- human review of moderated outputs ---

  @_translated
  def add_review_item(self, generation_id: str | None, text: str,
                      flags: Sequence[str]) -> int:
    """Queues an output flagged by moderation for human review. Returns the item's id."""
    with self._write() as conn:
      return conn.execute(_T['review_items'].insert().values(
          generation_id=generation_id, text=text, flags=_dumps(list(flags)),
          status=_PENDING, created=time.time())).inserted_primary_key[0]

  @_translated
  def review_queue(self, status: str | None = 'pending', limit: int = 50) -> list[dict]:
    """Review items with `status` (None: all), oldest first."""
    t = _T['review_items']
    q = sa.select(t).order_by(t.c.created, t.c.id).limit(limit)
    if status is not None:
      q = q.where(t.c.status == status)
    with self._read() as conn:
      rows = conn.execute(q).mappings().all()
    return [dict(r, flags=json.loads(r['flags'])) for r in rows]

  @_translated
  def decide_review(self, item_id: int, decision: str, reviewer: str | None = None) -> None:
    """Records a reviewer's decision ('approved' | 'rejected'); a later one overrides it."""
    if decision not in _DECISIONS:
      raise ValueError(f'decision must be one of {_DECISIONS}, got {decision!r}')
    t = _T['review_items']
    with self._write() as conn:
      n = conn.execute(t.update().where(t.c.id == item_id).values(
          status=decision, reviewer=reviewer, decided=time.time())).rowcount
    if n == 0:
      raise KeyError(f'unknown review item id {item_id!r}')

  # --- exports for retraining ---

  @_translated
  def sft_rows(self, since: float = 0.0) -> list[dict[str, str]]:
    """{"prompt", "response"}: every edit made at/after `since`, and every output with a +1
    and no -1 whose first +1 came at/after `since`; oldest first."""
    g, r, e = _T['generations'], _T['ratings'], _T['edits']
    with self._read() as conn:
      edits = conn.execute(
          sa.select(e.c.created, e.c.id, g.c.prompt, e.c.text)
          .join(g, g.c.id == e.c.generation_id).where(e.c.created >= since)).all()
      rated = conn.execute(
          sa.select(sa.func.min(sa.case((r.c.rating > 0, r.c.created))).label('first_up'),
                    r.c.generation_id, r.c.choice, g.c.prompt, g.c.outputs)
          .join(g, g.c.id == r.c.generation_id)
          .group_by(r.c.generation_id, r.c.choice, g.c.prompt, g.c.outputs)
          .having(sa.func.min(r.c.rating) > 0)).all()
    rows = [(c, 0, i, {'prompt': p, 'response': text}) for c, i, p, text in edits]
    rows += [(c, 1, f'{gid}/{k}', {'prompt': p, 'response': json.loads(outs)[k]})
             for c, gid, k, p, outs in rated if c >= since]
    return [row for *_, row in sorted(rows, key=lambda x: x[:3])]

  @_translated
  def dpo_rows(self, since: float = 0.0) -> list[dict[str, str]]:
    """{"prompt", "chosen", "rejected"}: preferences made at/after `since`, and each edit made
    at/after `since` over the output it replaces (unless that output was empty, e.g.
    withheld by a filter, or the same text); oldest first."""
    g, e, p = _T['generations'], _T['edits'], _T['preferences']
    with self._read() as conn:
      prefs = conn.execute(sa.select(p.c.created, p.c.id, p.c.prompt, p.c.chosen, p.c.rejected)
                           .where(p.c.created >= since)).all()
      edits = conn.execute(
          sa.select(e.c.created, e.c.id, g.c.prompt, e.c.text, e.c.choice, g.c.outputs)
          .join(g, g.c.id == e.c.generation_id).where(e.c.created >= since)).all()
    rows = [(c, 0, i, {'prompt': pr, 'chosen': ch, 'rejected': rj})
            for c, i, pr, ch, rj in prefs]
    for c, i, pr, text, k, outs in edits:
      original = json.loads(outs)[k]
      if original.strip() and original != text:
        rows.append((c, 1, i, {'prompt': pr, 'chosen': text, 'rejected': original}))
    return [row for *_, row in sorted(rows, key=lambda x: x[:3])]

  def export_sft(self, path: str, since: float = 0.0) -> int:
    """Writes `sft_rows(since)` to `path` as JSONL, atomically. Returns the rows written."""
    return _write_jsonl(path, self.sft_rows(since))

  def export_dpo(self, path: str, since: float = 0.0) -> int:
    """Writes `dpo_rows(since)` to `path` as JSONL, atomically. Returns the rows written."""
    return _write_jsonl(path, self.dpo_rows(since))

  @_translated
  def stats(self) -> dict[str, int]:
    """Rows per table, and the review items still pending."""
    with self._read() as conn:
      out = {name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar()
             for name, t in _T.items()}
      t = _T['review_items']
      out['review_pending'] = conn.execute(
          sa.select(sa.func.count()).select_from(t).where(t.c.status == _PENDING)).scalar()
    return out


def _generation_dict(row) -> dict[str, Any]:
  d = dict(row)
  for k in ('outputs', 'finish_reasons', 'params', 'flags'):
    d[k] = json.loads(d[k])
  return d


def _write_jsonl(path: str, rows: list[dict[str, str]]) -> int:
  """Writes `rows` to a temp file beside `path`, fsyncs it and renames it over `path`."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + '.', suffix='.tmp', dir=directory)
  try:
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
      for row in rows:
        f.write(json.dumps(row, ensure_ascii=False) + '\n')
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise
  return len(rows)


def _sqlite_connect(dbapi_conn, _record) -> None:
  """Per connection: transactions under our control, busy wait, WAL, fsync on commit."""
  dbapi_conn.isolation_level = None  # the driver issues no BEGIN/COMMIT of its own
  cur = dbapi_conn.cursor()
  cur.execute(f'PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}')
  # Switching a new file to WAL needs it to itself, and SQLite answers 'database is locked'
  # at once instead of waiting (several processes opening a new database together): retry.
  deadline = time.monotonic() + _BUSY_TIMEOUT_S
  while True:
    try:
      cur.execute('PRAGMA journal_mode = WAL')
      break
    except sqlite3.OperationalError as e:
      if 'locked' not in str(e) or time.monotonic() > deadline:
        raise
      time.sleep(0.01)
  cur.execute('PRAGMA synchronous = FULL')
  cur.execute('PRAGMA foreign_keys = ON')
  cur.close()


def _sqlite_begin(conn: sa.Connection) -> None:
  """Writes take the write lock up front, so a busy database is waited on (a deferred
  transaction that later upgrades to write can fail at once with 'database is locked')."""
  read_only = conn.get_execution_options().get('genai_read_only', False)
  conn.exec_driver_sql('BEGIN' if read_only else 'BEGIN IMMEDIATE')
