"""A throwaway PostgreSQL server on this machine, for tests, benchmarks and trying replicas.

  with LocalPostgres() as pg:                 # initdb into a temp dir, start, wait
    url = pg.create_database('feedback')      # postgresql+psycopg://genai:...@127.0.0.1:P/feedback
    ...                                       # pg.stop() / pg.start(): the database goes away
  # stopped (pg_ctl stop -m fast) and its directory removed

  python -m genai.feedback.local_postgres     # one for trying replicas by hand; prints its URL

It listens on a free loopback port (and a Unix socket in its own directory, nowhere else),
with password (scram-sha-256) login for user `genai`. The server keeps PostgreSQL's durable
defaults (fsync = on, synchronous_commit = on): a commit returns once its WAL is on disk.
The binaries come from $GENAI_PG_BIN, `pg_ctl` on PATH, or /usr/lib/postgresql/*/bin
(Debian's `postgresql` package); `find_bin()` is None without them. PostgreSQL refuses to
run as root: as root, initdb and the server run as the `postgres` user (which Debian's
package creates) through `runuser`.
"""
from __future__ import annotations

import atexit
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time

USER = 'genai'


def find_bin() -> str | None:
  """The folder of initdb/pg_ctl/postgres, or None when PostgreSQL is not installed."""
  candidates = [os.environ.get('GENAI_PG_BIN', '')]
  if shutil.which('pg_ctl'):
    candidates.append(os.path.dirname(os.path.realpath(shutil.which('pg_ctl'))))
  candidates += sorted(glob.glob('/usr/lib/postgresql/*/bin'),
                       key=lambda p: int(p.split('/')[-2]) if p.split('/')[-2].isdigit() else 0,
                       reverse=True)
  for c in candidates:
    if c and all(os.access(os.path.join(c, t), os.X_OK) for t in ('initdb', 'pg_ctl', 'postgres')):
      return c
  return None


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


class LocalPostgres:
  """One server in a temporary directory (see the module docstring)."""

  def __init__(self, bin_dir: str | None = None, port: int | None = None):
    self.bin_dir = bin_dir or find_bin()
    if self.bin_dir is None:
      raise FileNotFoundError('PostgreSQL is not installed (no initdb/pg_ctl/postgres found in '
                              '$GENAI_PG_BIN, on PATH or in /usr/lib/postgresql/*/bin); '
                              'apt-get install postgresql')
    self.port = port or _free_port()
    self.password = secrets.token_hex(8)
    self.dir = tempfile.mkdtemp(prefix='genai-pg-')
    self.data = os.path.join(self.dir, 'data')
    self.log = os.path.join(self.dir, 'server.log')
    self._as = []
    if os.getuid() == 0:  # postgres will not run as root
      try:
        owner = pwd.getpwnam('postgres')
      except KeyError as e:
        raise PermissionError('PostgreSQL refuses to run as root and there is no `postgres` '
                              'user to run it as; create one (useradd postgres) or run as '
                              'another user') from e
      os.chown(self.dir, owner.pw_uid, owner.pw_gid)
      self._as = ['runuser', '-u', 'postgres', '--']
    self._initdb()

  # ------------------------------------------------------------------ the server
  def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([*self._as, os.path.join(self.bin_dir, tool), *args],
                          capture_output=True, text=True, check=check)

  def _initdb(self) -> None:
    pwfile = os.path.join(self.dir, 'pw')
    with open(pwfile, 'w') as f:
      f.write(self.password + '\n')
    if self._as:
      owner = pwd.getpwnam('postgres')
      os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    try:
      # --no-sync: initdb itself skips its final fsync (a throwaway cluster); the running
      # server keeps fsync = on.
      self._run('initdb', '-D', self.data, '-U', USER, '--auth=scram-sha-256',
                f'--pwfile={pwfile}', '-E', 'UTF8', '--no-sync', '--locale=C')
    except subprocess.CalledProcessError as e:
      raise RuntimeError(f'initdb failed: {e.stderr.strip() or e.stdout.strip()}') from e
    finally:
      os.unlink(pwfile)

  def start(self, timeout_s: float = 60.0) -> LocalPostgres:
    """Starts the server (again) and waits until it accepts connections."""
    opts = (f'-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 '
            '-c max_connections=200 -c shared_buffers=32MB -c recovery_init_sync_method=syncfs')
    r = self._run('pg_ctl', '-D', self.data, '-l', self.log, '-w', '-t', str(int(timeout_s)),
                  '-o', opts, 'start', check=False)
    if r.returncode != 0:
      raise RuntimeError(f'PostgreSQL did not start ({r.stderr.strip()}); its log:\n'
                         + self.log_tail())
    return self

  def stop(self, mode: str = 'fast') -> None:
    """pg_ctl stop: 'fast' disconnects clients and shuts down cleanly."""
    if self.running():
      self._run('pg_ctl', '-D', self.data, '-m', mode, '-w', 'stop', check=False)

  def pid(self) -> int | None:
    try:
      with open(os.path.join(self.data, 'postmaster.pid')) as f:
        return int(f.readline())
    except (FileNotFoundError, ValueError):
      return None

  def running(self) -> bool:
    pid = self.pid()
    return pid is not None and _alive(pid)

  def kill(self) -> None:
    """SIGKILL to the server and all its processes (a crash: no shutdown checkpoint); the
    next `start` runs crash recovery from the WAL."""
    pid = self.pid()
    if pid is None:
      return
    family = [pid] + _children(pid)
    for p in family:
      try:
        os.kill(p, signal.SIGKILL)
      except ProcessLookupError:
        pass
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in family) and time.monotonic() < deadline:
      time.sleep(0.05)
    # A killed postmaster may stay a zombie (when nothing reaps orphans), which `pg_ctl
    # start` would take for a running server: its lock files go, as after a reboot.
    if not any(_alive(p) for p in family):
      for lock in (os.path.join(self.data, 'postmaster.pid'),
                   os.path.join(self.dir, f'.s.PGSQL.{self.port}.lock')):
        try:
          os.unlink(lock)
        except FileNotFoundError:
          pass

  def log_tail(self, n: int = 20) -> str:
    try:
      with open(self.log, errors='replace') as f:
        return ''.join(f.readlines()[-n:])
    except OSError:
      return ''

  def close(self) -> None:
    """Stops the server and removes its directory."""
    try:
      self.stop('immediate')
    finally:
      # Its thousand-odd files take seconds to delete on a busy disk: in the background.
      subprocess.Popen(['rm', '-rf', '--', self.dir], start_new_session=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

  def __enter__(self) -> LocalPostgres:
    return self.start()

  def __exit__(self, *exc) -> None:
    self.close()

  # ------------------------------------------------------------------ databases
  def url(self, database: str = 'postgres', password: str | None = None,
          user: str = USER) -> str:
    """The SQLAlchemy URL of `database` (psycopg 3 driver) over loopback TCP."""
    pw = self.password if password is None else password
    return f'postgresql+psycopg://{user}:{pw}@127.0.0.1:{self.port}/{database}'

  def psql(self, sql: str, database: str = 'postgres') -> str:
    """Runs `sql` with psql over the Unix socket; returns its unaligned output."""
    env = {**os.environ, 'PGPASSWORD': self.password}
    r = subprocess.run([os.path.join(self.bin_dir, 'psql'), '-h', self.dir, '-p',
                        str(self.port), '-U', USER, '-d', database, '-v', 'ON_ERROR_STOP=1',
                        '-At', '-c', sql], capture_output=True, text=True, env=env)
    if r.returncode != 0:
      raise RuntimeError(f'psql: {r.stderr.strip()}')
    return r.stdout.strip()

  def create_database(self, name: str) -> str:
    """Creates database `name` (a plain identifier); returns its URL."""
    if not name.replace('_', '').isalnum():
      raise ValueError(f'database name {name!r}: letters, digits and _ only')
    self.psql(f'CREATE DATABASE {name}')
    return self.url(name)


def _children(pid: int) -> list[int]:
  out = []
  for stat in glob.glob('/proc/[0-9]*/stat'):
    try:
      with open(stat) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    except OSError:
      continue
    if int(fields[1]) == pid:
      out.append(int(stat.split('/')[2]))
  return out


def _alive(pid: int) -> bool:
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except OSError:
    return False


def missing() -> str | None:
  """Why a local server cannot run here (no binaries, no psycopg driver), or None."""
  if find_bin() is None:
    return 'PostgreSQL is not installed (apt-get install postgresql)'
  try:
    import psycopg  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return 'the psycopg driver is missing: pip install -e ".[feedback]"'
  return None


_SHARED: LocalPostgres | None = None


def shared() -> LocalPostgres:
  """One started server for this process (tests, benchmarks), closed when it exits."""
  global _SHARED
  if _SHARED is None or not os.path.isdir(_SHARED.data):
    _SHARED = LocalPostgres().start()
    atexit.register(_SHARED.close)
  elif not _SHARED.running():
    _SHARED.start()
  return _SHARED


def main() -> None:
  """Starts one server and prints its URL; Ctrl-C stops it and removes its files."""
  with LocalPostgres() as pg:
    url = pg.create_database('feedback')
    print(f'PostgreSQL {pg.port} (data in {pg.dir}); feedback database:\n  {url}', flush=True)
    try:
      while pg.running():
        time.sleep(1)
    except KeyboardInterrupt:
      pass


if __name__ == '__main__':
  main()
