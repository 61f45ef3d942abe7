"""The feedback store's backends for tests: SQLite, and PostgreSQL on a throwaway server.

Import the fixtures into a test module (`from pg_fixtures import db_url, pg_server`).
`pg_server` is one local server per pytest process (genai.feedback.local_postgres.shared:
initdb into a temporary directory, a free loopback port, stopped and removed at exit); each
test that takes `db_url` with the 'postgresql' parameter gets a fresh database on it.
Without PostgreSQL's binaries (Debian's `postgresql` package, which .ci/run installs) or
the psycopg driver (the `feedback` extra) the PostgreSQL cases skip, saying which is missing.
"""
import uuid

import pytest

from genai.feedback import local_postgres


@pytest.fixture
def pg_server():
  reason = local_postgres.missing()
  if reason:
    pytest.skip(reason + '; .ci/run installs it')
  return local_postgres.shared()


def new_database(pg) -> str:
  """A fresh database on `pg`; its URL."""
  return pg.create_database(f't_{uuid.uuid4().hex[:12]}')


@pytest.fixture(params=['sqlite', 'postgresql'])
def db_url(request, tmp_path):
  """The URL of an empty feedback database of each backend."""
  if request.param == 'sqlite':
    return f'sqlite:///{tmp_path}/feedback.db'
  return new_database(request.getfixturevalue('pg_server'))
