"""The feedback store's backends: SQLite, and PostgreSQL on a throwaway local server.

`pg_server` is one server for the whole session (genai.feedback.local_postgres: initdb into a
temporary directory, a free loopback port, stopped and removed at the end); each test that
takes `db_url` with the 'postgresql' parameter gets a fresh database on it. Without
PostgreSQL's binaries (Debian's `postgresql` package, which .ci/run installs) or the psycopg
driver (the `feedback` extra) the PostgreSQL cases skip, saying which is missing.
"""
import uuid

import pytest

from genai.feedback import local_postgres


@pytest.fixture(scope='session')
def pg_server():
  if local_postgres.find_bin() is None:
    pytest.skip('PostgreSQL is not installed (apt-get install postgresql; .ci/run does)')
  try:
    import psycopg  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    pytest.skip('the psycopg driver is missing: pip install -e ".[feedback]"')
  with local_postgres.LocalPostgres() as pg:
    yield pg


def new_database(pg) -> str:
  """A fresh database on `pg`; its URL."""
  return pg.create_database(f't_{uuid.uuid4().hex[:12]}')


@pytest.fixture(params=['sqlite', 'postgresql'])
def db_url(request, tmp_path):
  """The URL of an empty feedback database of each backend."""
  if request.param == 'sqlite':
    return f'sqlite:///{tmp_path}/feedback.db'
  return new_database(request.getfixturevalue('pg_server'))
