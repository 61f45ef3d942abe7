"""The result file every benchmark script writes: `benchmarks/results/<name>.json`, one schema.

  {
   "schema": 1,
   "name": "lm_train_fast",                       # the file's stem (--result_name)
   "command": "python -m benchmarks.lm_train ...", # as it ran, from the repository root
   "commit": "c99471e",                           # '+changes': tracked code files differed
   "machine": {"cpu", "cores", "memory_gib", "accelerator", "python", "jax", "jaxlib",
               "flax", "torch" (only where torch ran in the process)},
   "started": "2026-11-26 18:11 UTC", "wall_s": 100.2,   # from the process's start
   "peak_rss_mib": 1658,                          # the largest process: this one or a child
   "headline": {"quality": str, "speed": str, "memory": str},   # each optional
   "figures": {name: number | str | bool | null}, # flat; nested names joined with '.'
   "tables": [{"title": str, "columns": [str], "rows": [[cell]]}],   # optional
   "notes": [str],                                # optional
   "config": {...}                                # optional: the settings, any JSON
  }

A script calls `write(name, figures, headline=..., ...)` once, at the end, after its
measurements succeeded; the file replaces the previous one atomically. `--results_dir`
(`add_args` for argparse, `define_flags` for absl) defaults to $GENAI_BENCH_RESULTS_DIR or
benchmarks/results; `--result_name` to the script's name. `benchmarks/report.py` renders
these files into docs/benchmarks.md and never reads a script's printed output.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from typing import Any

SCHEMA = 1
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPO, 'benchmarks', 'results')
ENV_DIR = 'GENAI_BENCH_RESULTS_DIR'
_IMPORTED = time.time()
REQUIRED = {'schema': int, 'name': str, 'command': str, 'commit': str, 'machine': dict,
            'started': str, 'wall_s': (int, float), 'peak_rss_mib': (int, type(None)),
            'headline': dict, 'figures': dict}  # key: type
OPTIONAL = {'tables': list, 'notes': list, 'config': dict}


def default_dir() -> str:
  return os.environ.get(ENV_DIR) or RESULTS_DIR


def add_args(parser, name: str) -> None:
  """--results_dir and --result_name on an argparse parser."""
  parser.add_argument('--results_dir', default=default_dir(),
                      help=f'where <result_name>.json goes (${ENV_DIR} or benchmarks/results)')
  parser.add_argument('--result_name', default=name, help='the result file\'s stem')


def define_flags(name: str) -> None:
  """--results_dir and --result_name as absl flags (read them from flags.FLAGS)."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_string('results_dir', default_dir(),
                      f'Where <result_name>.json goes (${ENV_DIR} or benchmarks/results).')
  flags.DEFINE_string('result_name', name, "The result file's stem.")


# ---- what the figures depend on ---------------------------------------------------------------


def _cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      return next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  try:
    out = subprocess.run(['lscpu'], capture_output=True, text=True, check=True).stdout
    return next(l.split(':', 1)[1].strip() for l in out.splitlines() if l.startswith('Model name'))
  except (OSError, subprocess.CalledProcessError, StopIteration):
    return platform.processor() or 'unknown CPU'


def _version(pkg: str) -> str | None:
  try:
    return importlib.metadata.version(pkg)
  except importlib.metadata.PackageNotFoundError:
    return None


def machine_info(torch: bool | None = None) -> dict[str, Any]:
  """CPU, cores, memory, accelerator and library versions. `torch`: record torch's version
  (None: when torch was imported in this process, i.e. a torch reference ran here)."""
  try:
    mem_gib = round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)
  except (ValueError, OSError, AttributeError):
    mem_gib = None
  import jax  # pylint: disable=import-outside-toplevel
  devices = jax.devices()
  info = {'cpu': f'{_cpu_model()} ({platform.machine()})', 'cores': os.cpu_count(),
          'memory_gib': mem_gib,
          'accelerator': f'{len(devices)} x {devices[0].device_kind} ({devices[0].platform})',
          'python': platform.python_version()}
  for pkg in ('jax', 'jaxlib', 'flax'):
    info[pkg] = _version(pkg)
  if torch or (torch is None and 'torch' in sys.modules):
    info['torch'] = _version('torch')
  return {k: v for k, v in info.items() if v is not None}


def _git(*args: str) -> str:
  try:
    return subprocess.run(['git', *args], capture_output=True, text=True, check=True,
                          cwd=REPO).stdout
  except (OSError, subprocess.CalledProcessError):
    return ''


def commit() -> str:
  """The short commit, '+changes' when tracked files other than Markdown and results differ."""
  head = _git('rev-parse', '--short', 'HEAD').strip() or 'unknown'
  changed = [ln for ln in _git('status', '--porcelain', '--untracked-files=no').splitlines()
             if not (ln[3:].startswith('benchmarks/results/') or ln.endswith('.md'))]
  return head + ('+changes' if changed else '')


def command_line() -> str:
  """This process's command as typed from the repository root: 'python -m pkg.mod ARGS'."""
  spec = getattr(sys.modules.get('__main__'), '__spec__', None)
  if spec is not None and spec.name:
    argv = ['-m', spec.name.removesuffix('.__main__')]
  else:
    script = os.path.abspath(sys.argv[0])
    inside = script.startswith(REPO + os.sep)
    argv = [os.path.relpath(script, REPO) if inside else script]
  return shlex.join(['python', *argv, *sys.argv[1:]])


def _process_start() -> float:
  """Unix time this process started (Linux /proc; else when this module was imported)."""
  try:
    with open('/proc/self/stat') as f:
      ticks = int(f.read().rsplit(')', 1)[1].split()[19])  # field 22, starttime
    with open('/proc/uptime') as f:
      uptime = float(f.read().split()[0])
    return time.time() - uptime + ticks / os.sysconf('SC_CLK_TCK')
  except (OSError, ValueError, IndexError):
    return _IMPORTED


def peak_rss_mib() -> int:
  """The peak RSS of this process or of the largest child it waited for."""
  kib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
  return round(kib / 1024)


# ---- the file ---------------------------------------------------------------------------------


def flatten(tree: dict, prefix: str = '') -> dict[str, Any]:
  """Nested dicts to one level ('a.b'); lists and tuples to their JSON text."""
  out = {}
  for k, v in tree.items():
    key = f'{prefix}{k}'
    if isinstance(v, dict):
      out.update(flatten(v, key + '.'))
    elif isinstance(v, (list, tuple)):
      out[key] = json.dumps(v)
    elif hasattr(v, 'item'):  # numpy scalars
      out[key] = v.item()
    else:
      out[key] = v
  return out


def table(title: str, columns: list[str], rows: list[list]) -> dict:
  return {'title': title, 'columns': list(columns), 'rows': [list(r) for r in rows]}


def validate(result: dict) -> list[str]:
  """What is wrong with a result file's contents ([] when it follows the schema)."""
  problems = [f'{k}: missing or of the wrong type' for k, t in REQUIRED.items()
              if not isinstance(result.get(k), t)]
  problems += [f'{k}: not a {t.__name__}' for k, t in OPTIONAL.items()
               if k in result and not isinstance(result[k], t)]
  problems += [f'{k}: unknown key' for k in result if k not in REQUIRED and k not in OPTIONAL]
  if result.get('schema') not in (None, SCHEMA):
    problems.append(f'schema {result["schema"]}, expected {SCHEMA}')
  for k, v in (result.get('figures') or {}).items():
    if not isinstance(v, (int, float, str, bool, type(None))):
      problems.append(f'figures.{k}: {type(v).__name__}, not a number or string')
  for k, v in (result.get('headline') or {}).items():
    if k not in ('quality', 'speed', 'memory') or not isinstance(v, str):
      problems.append(f'headline.{k}: not one of quality/speed/memory with a string')
  for t in result.get('tables') or []:
    if not (isinstance(t, dict) and isinstance(t.get('columns'), list)
            and all(isinstance(r, list) and len(r) == len(t['columns']) for r in t['rows'])):
      problems.append(f'table {t.get("title") if isinstance(t, dict) else t}: malformed')
  return problems


def save(result: dict, results_dir: str) -> str:
  """Writes `result` (checked) to results_dir/<name>.json, atomically; returns the path."""
  problems = validate(result)
  if problems:
    raise ValueError(f'not a valid result: {"; ".join(problems)}')
  os.makedirs(results_dir, exist_ok=True)
  path = os.path.join(results_dir, f'{result["name"]}.json')
  with open(path + '.tmp', 'w') as f:
    json.dump(result, f, indent=1)
    f.write('\n')
  os.replace(path + '.tmp', path)
  return path


def write(name: str, figures: dict, *, headline: dict | None = None,
          tables: list[dict] | None = None, notes: list[str] | None = None,
          config: dict | None = None, results_dir: str | None = None,
          torch: bool | None = None) -> str:
  """This run's result file: the figures plus the command, commit, machine, start, wall time
  and peak RSS, detected here. Returns the path written."""
  started = _process_start()
  result = {
      'schema': SCHEMA, 'name': name, 'command': command_line(), 'commit': commit(),
      'machine': machine_info(torch),
      'started': datetime.datetime.fromtimestamp(started, datetime.timezone.utc)
                 .strftime('%Y-%m-%d %H:%M UTC'),
      'wall_s': round(time.time() - started, 1), 'peak_rss_mib': peak_rss_mib(),
      'headline': {k: v for k, v in (headline or {}).items() if v},
      'figures': flatten(figures)}
  if tables:
    result['tables'] = tables
  if notes:
    result['notes'] = list(notes)
  if config:
    result['config'] = json.loads(json.dumps(config, default=str))
  path = save(result, results_dir or default_dir())
  print(f'result: {path}', file=sys.stderr)
  return path


def load(path: str) -> dict:
  with open(path) as f:
    return json.load(f)
