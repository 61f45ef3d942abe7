"""Prepared data at corpus scale: reader memory against corpus size, preparation speed, and
input-pipeline headroom over the train step.

  python -m benchmarks.data_at_scale --sizes 10MB,1GB
  python -m benchmarks.data_at_scale --sizes 4GB --result_name data_at_scale_4gb

For each size, a corpus of shuffled paragraphs of Tiny Shakespeare and Python's docs is
written under --workdir (/tmp; never committed) and measured:
  - preparation (genai.data.prepare, char tokenizer, --workers 2) against a plain
    single-process loop that reads each file, tokenizes it and writes its records, side by
    side with the same tokenizer and record size: MB/s and tokens/s; also GPT-2 BPE on the
    first --bpe_mb MB of the corpus, the same two ways;
  - reading: a fresh process builds `prepared_lm_data` at the baby Shakespeare shape (char,
    batch 12, block 64) and reads --batches batches: its peak RSS (and the RSS before the
    first batch), batches/s; for the smallest corpus also today's in-memory path
    (load_text + encode + sequences) for comparison;
  - headroom: those batches/s against the baby train step (experiments.lm's real step,
    timed in its own process; the last recorded figure if the experiment does not build).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAKESPEARE = os.path.join(REPO, '..', 'shared', 'data', 'tinyshakespeare', 'input.txt')
GPT2_RANKS = os.path.join(REPO, '..', 'shared', 'data', 'gpt2_bpe', 'gpt2.tiktoken')
FILE_BYTES = 64 << 20
SIZES = {'10MB': 10 << 20, '100MB': 100 << 20, '1GB': 1 << 30, '4GB': 4 << 30}
BLOCK, BATCH = 64, 12


def rss_mib() -> float:
  with open('/proc/self/status') as f:
    return next(int(l.split()[1]) for l in f if l.startswith('VmRSS')) / 1024


def peak_mib() -> float:
  """This process's own peak RSS (VmHWM). Not ru_maxrss: Linux carries the parent's peak
  across fork+exec into a child's ru_maxrss."""
  with open('/proc/self/status') as f:
    return next(int(l.split()[1]) for l in f if l.startswith('VmHWM')) / 1024


def cpu_seconds() -> float:
  """CPU time of this process and of its waited-for children (the preparation workers)."""
  s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
  return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


# ------------------------------------------------------------------------ corpora.


def build_corpus(folder: str, size: int, seed: int = 0) -> list[str]:
  """Files of ~64 MB of shuffled paragraphs until `size` bytes; reused when present."""
  marker = os.path.join(folder, 'DONE')
  if os.path.exists(marker):
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith('.txt'))
  from pydoc_data import topics  # pylint: disable=import-outside-toplevel
  text = open(SHAKESPEARE, encoding='utf-8').read() + '\n\n' + '\n\n'.join(
      topics.topics[k] for k in sorted(topics.topics))
  paras = [p.strip('\n') + '\n\n' for p in re.split(r'\n\s*\n', text) if p.strip()]
  rng = random.Random(seed)
  os.makedirs(folder, exist_ok=True)
  files, written, i = [], 0, 0
  while written < size:
    path = os.path.join(folder, f'part-{i:05d}.txt')
    target = min(FILE_BYTES, size - written)
    with open(path, 'w', encoding='utf-8') as f:
      n = 0
      while n < target:
        rng.shuffle(paras)
        chunk = ''.join(paras)[:target - n]
        f.write(chunk)
        n += len(chunk.encode('utf-8'))
    files.append(path)
    written += os.path.getsize(path)
    i += 1
  open(marker, 'w').close()
  return files


# ------------------------------------------------------------ preparation speed.


def plain_loop(files: list[str], tok, out: str, chunk: int = 2048) -> dict:
  """The baseline: one process, each file read whole, encoded, written as records."""
  from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel
  from genai.data import token_shards  # pylint: disable=import-outside-toplevel
  os.makedirs(out, exist_ok=True)
  dtype = token_shards.token_dtype(tok.vocab_size)
  t0, tokens, nbytes, cpu0 = time.perf_counter(), 0, 0, cpu_seconds()
  for i, path in enumerate(files):
    with open(path, encoding='utf-8') as f:
      text = f.read()
    nbytes += len(text.encode('utf-8'))
    ids = tok.encode(text)
    tokens += len(ids)
    w = array_record_module.ArrayRecordWriter(os.path.join(out, f'{i:05d}.array_record'),
                                              token_shards.WRITER_OPTIONS)
    for s in range(0, len(ids), chunk):
      w.write(ids[s:s + chunk].astype(dtype).tobytes())
    w.close()
  dt, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
  return {'seconds': round(dt, 2), 'mb_per_s': round(nbytes / dt / 1e6, 2),
          'tokens_per_s': round(tokens / dt), 'tokens': tokens, 'cpu_seconds': round(cpu, 2),
          'mb_per_cpu_s': round(nbytes / cpu / 1e6, 2)}


def prepared(files: list[str], tok, out: str, workers: int) -> dict:
  from genai.data import prepare  # pylint: disable=import-outside-toplevel
  nbytes = sum(os.path.getsize(f) for f in files)
  t0, cpu0 = time.perf_counter(), cpu_seconds()
  m = prepare.prepare_text(out, inputs=files, tokenizer=tok, workers=workers)['train']
  dt, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
  return {'seconds': round(dt, 2), 'mb_per_s': round(nbytes / dt / 1e6, 2),
          'tokens_per_s': round(m['num_tokens'] / dt), 'tokens': m['num_tokens'],
          'cpu_seconds': round(cpu, 2), 'mb_per_cpu_s': round(nbytes / cpu / 1e6, 2),
          'shards': len(m['shards']),
          'shard_bytes': sum(s['bytes'] for s in m['shards'])}


def subset(files: list[str], mb: float, folder: str) -> list[str]:
  """The first `mb` MB of the corpus, as files of at most 8 MB (units for the workers)."""
  os.makedirs(folder, exist_ok=True)
  text = ''
  for f in files:
    text += open(f, encoding='utf-8').read(int(mb * 1e6) - len(text))
    if len(text) >= mb * 1e6:
      break
  out = []
  step = 8_000_000
  for i in range(0, len(text), step):
    path = os.path.join(folder, f'sub-{i // step:03d}.txt')
    with open(path, 'w', encoding='utf-8') as f:
      f.write(text[i:i + step])
    out.append(path)
  return out


# ----------------------------------------------------------------------- children.


def child_read(root: str, batches: int) -> dict:
  """Peak RSS and speed of reading `batches` baby-shape batches of a prepared corpus."""
  import grain  # pylint: disable=import-outside-toplevel,unused-import
  from genai.data import packed_windows  # pylint: disable=import-outside-toplevel
  base = rss_mib()
  it, _, info = packed_windows.prepared_lm_data(root, block_size=BLOCK, batch_size=BATCH,
                                                seed=0, val_split=None)
  next(it)
  ready = rss_mib()
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  dt = time.perf_counter() - t0
  return {'rss_after_imports_mib': round(base, 1), 'rss_ready_mib': round(ready, 1),
          'peak_rss_mib': round(peak_mib(), 1), 'batches_per_s': round(batches / dt, 1),
          'ms_per_batch': round(1e3 * dt / batches, 3), 'windows': info.train_windows}


def child_in_memory(files: list[str], batches: int) -> dict:
  """Today's path on the same corpus: the whole text in one string, encoded in memory."""
  import grain  # pylint: disable=import-outside-toplevel,unused-import
  from genai.data import sequences, tokenizers  # pylint: disable=import-outside-toplevel
  base = rss_mib()
  text = ''.join(open(f, encoding='utf-8').read() for f in files)
  tok = tokenizers.CharTokenizer.from_text(text)
  it = sequences.make_train_iterator(tok.encode(text), block_size=BLOCK, batch_size=BATCH,
                                     stride=BLOCK, seed=0, shard_index=0, shard_count=1)
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  dt = time.perf_counter() - t0
  return {'rss_after_imports_mib': round(base, 1), 'peak_rss_mib': round(peak_mib(), 1),
          'batches_per_s': round(batches / dt, 1)}


def _baby_config(path: str):
  from genai.train import cli  # pylint: disable=import-outside-toplevel
  return cli.load_config_spec(os.path.join(REPO, f'configs/lm/shakespeare_char.py:path={path}'))


def child_train(root: str, steps: int) -> dict:
  """A short run of the baby char GPT (experiments.lm's task and the shared loop) whose
  training batches stream from the prepared corpus: peak RSS and ms/step."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  import tempfile  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, REPO)
  from experiments import lm  # pylint: disable=import-outside-toplevel
  from genai.data import packed_windows, token_shards, tokenizers  # pylint: disable=import-outside-toplevel
  from genai.train import loop  # pylint: disable=import-outside-toplevel
  work = tempfile.mkdtemp(prefix='genai_bench_train_')
  # The experiment builds its char vocabulary from a text that has exactly the corpus's
  # characters, so its tokenizer is the prepared one (prepared_lm_data checks it).
  chars = token_shards.load_prepared_tokenizer(root).chars
  vocab_text = os.path.join(work, 'vocab.txt')
  with open(vocab_text, 'w', encoding='utf-8') as f:
    f.write((chars * (20_000 // len(chars) + 1))[:20_000])
  config = _baby_config(vocab_text)
  config.eval.sample_tokens = 0
  task = lm.build_task(config, os.path.join(work, 'run'))
  it, _, _ = packed_windows.prepared_lm_data(
      root, tokenizer=tokenizers.load_tokenizer(os.path.join(work, 'run')), block_size=BLOCK,
      batch_size=BATCH, seed=0, val_split=None)
  task = dataclasses.replace(task, train_iter=it, evaluate=None)
  t0 = time.perf_counter()
  loop.train(task, workdir=os.path.join(work, 'run'), num_steps=steps, log_every=steps,
             eval_every=0, checkpoint_every=steps, steps_per_call=8, print_fn=lambda _: None)
  return {'peak_rss_mib': round(peak_mib(), 1), 'steps': steps,
          'ms_per_step_incl_compile': round(1e3 * (time.perf_counter() - t0) / steps, 1)}


def child_step() -> dict:
  """The baby Shakespeare train step (experiments.lm), 1 and 8 steps per call."""
  sys.path.insert(0, REPO)
  from benchmarks.lm_train import time_step  # pylint: disable=import-outside-toplevel
  from experiments import lm  # pylint: disable=import-outside-toplevel
  import tempfile  # pylint: disable=import-outside-toplevel
  config = _baby_config(SHAKESPEARE)
  task = lm.build_task(config, tempfile.mkdtemp(prefix='genai_bench_'))
  return {'ms_per_step_k1': round(1e3 * time_step(task, 32, 1), 2),
          'ms_per_step_k8': round(1e3 * time_step(task, 64, 8), 2)}


def run_child(*args: str) -> dict:
  cmd = [sys.executable, '-m', 'benchmarks.data_at_scale', '--child', *args]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                        env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'})
  if proc.returncode:
    raise RuntimeError(f'{" ".join(cmd)} failed:\n{proc.stderr[-3000:]}')
  return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- main.


def main(argv=None):
  p = argparse.ArgumentParser()
  p.add_argument('--sizes', default='10MB,1GB')
  p.add_argument('--workdir', default='/tmp/genai_data_bench')
  p.add_argument('--batches', type=int, default=3000)
  p.add_argument('--workers', type=int, default=2)
  p.add_argument('--bpe_mb', type=float, default=40.0)
  p.add_argument('--in_memory_mb', type=float, default=100.0,
                 help="today's in-memory path on the largest corpus's first MB (0 = skip)")
  p.add_argument('--train_steps', type=int, default=200,
                 help='a short baby-GPT training run per corpus (0 = none)')
  p.add_argument('--child', nargs='*')
  try:
    from benchmarks import results as results_lib  # pylint: disable=import-outside-toplevel
    results_lib.add_args(p, 'data_at_scale')
  except ImportError:
    results_lib = None
    p.add_argument('--results_dir', default=os.path.join(REPO, 'benchmarks', 'results'))
    p.add_argument('--result_name', default='data_at_scale')
  a = p.parse_args(argv)
  if a.child is not None:
    kind, *rest = a.child
    out = (child_read(rest[0], int(rest[1])) if kind == 'read' else
           child_train(rest[0], int(rest[1])) if kind == 'train' else
           child_in_memory(rest[1:], int(rest[0])) if kind == 'memory' else child_step())
    print(json.dumps(out))
    return

  from genai.data import tokenizers  # pylint: disable=import-outside-toplevel
  figures, rows, notes = {}, [], []
  sizes = [s.strip() for s in a.sizes.split(',') if s.strip()]
  for name in sizes:
    folder = os.path.join(a.workdir, f'corpus_{name}')
    t0 = time.perf_counter()
    files = build_corpus(folder, SIZES[name])
    print(f'{name}: corpus of {len(files)} files ({time.perf_counter() - t0:.0f}s)', flush=True)
    # One vocabulary for both ways (the corpus's characters), given to each.
    chars = set()
    for f in files:
      with open(f, encoding='utf-8') as fh:
        chars.update(fh.read())
    tok = tokenizers.CharTokenizer(''.join(sorted(chars | {'\n'})))
    root = os.path.join(a.workdir, f'prepared_{name}')
    fig = {'corpus_mb': round(sum(os.path.getsize(f) for f in files) / 1e6, 1),
           'files': len(files)}
    fig['prepare'] = prepared(files, tok, root, a.workers)
    print(f'{name}: prepared {fig["prepare"]}', flush=True)
    fig['plain_loop'] = plain_loop(files, tok, os.path.join(a.workdir, f'plain_{name}'))
    print(f'{name}: plain loop {fig["plain_loop"]}', flush=True)
    fig['prepare_speedup'] = round(fig['plain_loop']['seconds'] / fig['prepare']['seconds'], 2)
    fig['read'] = run_child('read', root, str(a.batches))
    print(f'{name}: read {fig["read"]}', flush=True)
    if a.train_steps:
      try:
        fig['train_run'] = run_child('train', root, str(a.train_steps))
        print(f'{name}: training run {fig["train_run"]}', flush=True)
      except RuntimeError as e:
        notes.append(f'{name}: the short training run failed here '
                     f'({str(e).splitlines()[-1][:200]})')
    if name == sizes[0]:
      fig['in_memory_path'] = run_child('memory', str(a.batches), *files)
      print(f'{name}: in-memory path {fig["in_memory_path"]}', flush=True)
    if name == sizes[-1] and a.in_memory_mb and len(sizes) > 1:
      sub = subset(files, a.in_memory_mb, os.path.join(a.workdir, f'mem_{name}'))
      fig['in_memory_path_first_mb'] = {'mb': a.in_memory_mb,
                                        **run_child('memory', str(a.batches), *sub)}
      print(f'{name}: in-memory path on {a.in_memory_mb} MB {fig["in_memory_path_first_mb"]}',
            flush=True)
    if name == sizes[-1] and os.path.exists(GPT2_RANKS):  # BPE on the largest corpus's start
      sub = subset(files, a.bpe_mb, os.path.join(a.workdir, f'bpe_{name}'))
      gpt2 = tokenizers.GPT2BPETokenizer(GPT2_RANKS)
      fig['gpt2_prepare'] = prepared(sub, gpt2, os.path.join(a.workdir, f'bpe_prep_{name}'),
                                     a.workers)
      fig['gpt2_plain_loop'] = plain_loop(sub, gpt2, os.path.join(a.workdir, f'bpe_plain_{name}'))
      fig['gpt2_speedup'] = round(fig['gpt2_plain_loop']['seconds'] /
                                  fig['gpt2_prepare']['seconds'], 2)
      print(f'{name}: gpt2 {fig["gpt2_prepare"]} vs {fig["gpt2_plain_loop"]}', flush=True)
    figures[name] = fig
    rows.append([name, fig['corpus_mb'], fig['read']['peak_rss_mib'],
                 fig.get('train_run', {}).get('peak_rss_mib'),
                 fig['read']['batches_per_s'], fig['prepare']['mb_per_s'],
                 fig['plain_loop']['mb_per_s'], fig['prepare_speedup']])
  try:
    step = run_child('step')
  except RuntimeError as e:
    notes.append(f'the train step was not timed here ({str(e).splitlines()[-1][:200]}); '
                 'using benchmarks/results/lm_step_speed.json')
    with open(os.path.join(REPO, 'benchmarks/results/lm_step_speed.json')) as f:
      rec = json.load(f)['figures']
    step = {'ms_per_step_k1': rec['genai_k1.ms_per_step'],
            'ms_per_step_k8': rec['genai_k8.ms_per_step'], 'recorded': True}
  figures['train_step'] = step
  slowest = min(figures[n]['read']['batches_per_s'] for n in sizes)
  figures['headroom_vs_k8_step'] = round(slowest * step['ms_per_step_k8'] / 1e3, 1)
  first, last = sizes[0], sizes[-1]
  if len(sizes) > 1:
    figures['peak_rss_ratio_largest_over_smallest'] = round(
        figures[last]['read']['peak_rss_mib'] / figures[first]['read']['peak_rss_mib'], 3)
    if 'train_run' in figures[first] and 'train_run' in figures[last]:
      figures['train_peak_rss_ratio_largest_over_smallest'] = round(
          figures[last]['train_run']['peak_rss_mib'] / figures[first]['train_run']['peak_rss_mib'], 3)
  figures['load_average_at_end'] = round(os.getloadavg()[0], 2)
  notes.append(f'load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end '
               '(other jobs share this machine: parallel preparation gains little when the '
               'cores are busy; mb_per_cpu_s is the per-core rate)')
  headline = {
      'memory': ', '.join(f'{n}: {figures[n]["read"]["peak_rss_mib"]:.0f} MiB' for n in sizes)
                + ' peak RSS reading prepared data'
                + (f' (in-memory path at {first}: '
                   f'{figures[first]["in_memory_path"]["peak_rss_mib"]:.0f} MiB)'),
      'speed': f'input pipeline {slowest:.0f} batches/s at batch 12 x 64 = '
               f'{figures["headroom_vs_k8_step"]}x the train step '
               f'({step["ms_per_step_k8"]} ms); prepare '
               + ', '.join(f'{n} {figures[n]["prepare"]["mb_per_s"]} MB/s '
                           f'({figures[n]["prepare_speedup"]}x the plain loop)' for n in sizes)}
  table = {'title': 'Prepared data by corpus size (char tokenizer)',
           'columns': ['corpus', 'MB', 'reader peak RSS MiB', 'training run peak RSS MiB',
                       'batches/s',
                       'prepare MB/s (2 workers)', 'plain loop MB/s', 'speedup'],
           'rows': rows}
  config = {'sizes': sizes, 'batches': a.batches, 'workers': a.workers, 'block': BLOCK,
            'batch': BATCH, 'bpe_mb': a.bpe_mb}
  print(json.dumps(figures, indent=1))
  if results_lib is not None:
    results_lib.write(a.result_name, figures, headline=headline, tables=[table], notes=notes,
                      config=config, results_dir=a.results_dir)
  else:
    os.makedirs(a.results_dir, exist_ok=True)
    with open(os.path.join(a.results_dir, f'{a.result_name}.json'), 'w') as f:
      json.dump({'name': a.result_name, 'command': ' '.join(['python', '-m',
                 'benchmarks.data_at_scale', *sys.argv[1:]]), 'figures': figures,
                 'headline': headline, 'notes': notes, 'config': config}, f, indent=1)


if __name__ == '__main__':
  main()
