"""python -m genai.data.prepare: a corpus, once per tokenizer, into ArrayRecord token shards.

Text (token ids; reading: genai.data.packed_windows.prepared_lm_data):
  python -m genai.data.prepare --out data/shakespeare --inputs input.txt \\
      --doc_split paragraph --tokenizer char --val_fraction 0.1
  python -m genai.data.prepare --out data/web --jsonl 'crawl/*.jsonl' --text_key text \\
      --tokenizer gpt2_bpe --bpe_ranks_path gpt2.tiktoken --workers 2
  python -m genai.data.prepare --out data/lm1b --tfds lm1b --tfds_split train \\
      --tokenizer sentencepiece --vocab_size 8192
Images (PNG bytes + label; reading: genai.data.image_shards.load_streamed_image_data):
  python -m genai.data.prepare --images --out data/mnist --idx ../shared/data/mnist
  python -m genai.data.prepare --images --out data/photos --folder photos/ --image_size 64
  python -m genai.data.prepare --images --out data/cifar --tfds cifar10
Apache Beam instead of the local process pool (optional dependency `apache-beam`):
  ... --runner DirectRunner [--beam_args=--direct_num_workers=2,--direct_running_mode=multi_processing]

The work is cut into units (byte ranges of files at document boundaries, or index ranges of
a TFDS split); each unit writes its own shard(s) atomically, in parallel, and the manifest
of each split is written last (see genai/data/token_shards.py for the layout).
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import time
from typing import Any, Sequence

import numpy as np

from genai import errors
from genai.data import corpus_inputs
from genai.data import token_shards
from genai.data import tokenizers
from genai.data import work_units

log = logging.getLogger('genai.data.prepare')
TOKENIZER_NAMES = ('char', 'sentencepiece', 'gpt2_bpe', 'hf')


# -------------------------------------------------------------------- tokenizer.


def build_tokenizer(spec: str | tokenizers.Tokenizer, out: str, units: list[dict], *,
                    workers: int = 0, runner: str | None = None,
                    beam_args: Sequence[str] = (), separator: str = '\n',
                    vocab_size: int = 1024, bpe_ranks_path: str = '',
                    hf_tokenizer_path: str = '', tokenizer_dir: str = '',
                    sp_sample_chars: int = 20_000_000) -> tokenizers.Tokenizer:
  """The corpus's tokenizer, saved in OUT/tokenizer: the one already there (it must be the
  same kind), a given one, one loaded from `tokenizer_dir`, or one built from the inputs
  (char: every character of the corpus plus the separator's; sentencepiece: trained on the
  first `sp_sample_chars` characters)."""
  tok_dir = os.path.join(out, token_shards.TOKENIZER_DIR)
  wanted = spec.name if isinstance(spec, tokenizers.Tokenizer) else spec
  if os.path.isfile(os.path.join(tok_dir, tokenizers.TOKENIZER_JSON)):
    tok = tokenizers.load_tokenizer(tok_dir)
    given = (spec if isinstance(spec, tokenizers.Tokenizer) else
             tokenizers.load_tokenizer(tokenizer_dir) if tokenizer_dir else None)
    if tok.name != wanted or (given is not None and given.identity() != tok.identity()):
      raise ValueError(f'{out} already holds data of a {tok.name} tokenizer '
                       f'({tok.identity()[:24]}...); prepare into another --out, or use the '
                       'same tokenizer for every split.')
    if tok.name == 'char':  # a later split may bring characters the vocabulary lacks
      _check_chars(tok, units, workers, runner, beam_args, out)
    return tok
  if isinstance(spec, tokenizers.Tokenizer):
    tok = spec
  elif tokenizer_dir:
    tok = tokenizers.load_tokenizer(tokenizer_dir)
    if tok.name != spec:
      raise ValueError(f'--tokenizer_dir={tokenizer_dir} holds a {tok.name} tokenizer, not '
                       f'--tokenizer={spec}; make them agree.')
  elif spec == 'char':
    charsets = work_units.map_units(_chars_of_unit, units, workers=workers, runner=runner,
                         beam_args=beam_args, tmp_dir=out)
    chars = set(separator).union(*(set(c) for c in charsets))
    tok = tokenizers.CharTokenizer(''.join(sorted(chars)))
  elif spec == 'sentencepiece':
    tok = tokenizers.SentencePieceTokenizer.train(_sample_text(units, sp_sample_chars),
                                                  vocab_size=vocab_size)
  elif spec == 'gpt2_bpe':
    tok = tokenizers.GPT2BPETokenizer(bpe_ranks_path)
  elif spec == 'hf':
    if not hf_tokenizer_path:
      raise ValueError('--tokenizer=hf needs --hf_tokenizer_path (a tokenizer.json or .gguf).')
    tok = tokenizers.HFTokenizer.from_file(hf_tokenizer_path)
  else:
    raise ValueError(f'--tokenizer={spec!r} is not one of {TOKENIZER_NAMES}.')
  tok.save(tok_dir)
  return tok


def _chars_of_unit(unit: dict) -> str:
  chars: set[str] = set()
  for text, *_ in corpus_inputs.documents(unit):
    chars.update(text)
  return ''.join(sorted(chars))


def _check_chars(tok, units, workers, runner, beam_args, out) -> None:
  charsets = work_units.map_units(_chars_of_unit, units, workers=workers, runner=runner,
                       beam_args=beam_args, tmp_dir=out)
  missing = set().union(*(set(c) for c in charsets)) - set(tok.chars)
  if missing:
    raise ValueError(f'these inputs have {len(missing)} characters that the char vocabulary in '
                     f'{out}/tokenizer lacks (e.g. {sorted(missing)[:5]}); prepare every split '
                     'in one run (--val_fraction), or use a subword tokenizer.')


def _sample_text(units: list[dict], max_chars: int) -> str:
  parts, total = [], 0
  for unit in units:
    for text, *_ in corpus_inputs.documents(unit):
      parts.append(text[:max_chars - total])
      total += len(parts[-1])
      if total >= max_chars:
        return '\n'.join(parts)
  return '\n'.join(parts)


def separator_ids(tok: tokenizers.Tokenizer, separator: str) -> list[int]:
  """What ends every document: the tokenizer's EOS, else the ids of `separator`."""
  if tok.eos_id is not None:
    return [int(tok.eos_id)]
  return [int(i) for i in tok.encode(separator)] if separator else []


# ------------------------------------------------------------------ tokenizing.

_TOKENIZER_CACHE: dict[str, tokenizers.Tokenizer] = {}


def _worker_tokenizer(tok_dir: str) -> tokenizers.Tokenizer:
  if tok_dir not in _TOKENIZER_CACHE:
    _TOKENIZER_CACHE[tok_dir] = tokenizers.load_tokenizer(tok_dir)
  return _TOKENIZER_CACHE[tok_dir]


def route(key: str, val_fraction: float) -> bool:
  """True when a document goes to the validation split: a stable hash of its key/text."""
  if val_fraction <= 0:
    return False
  digest = hashlib.blake2b(key.encode('utf-8', 'surrogatepass'), digest_size=8).digest()
  return int.from_bytes(digest, 'little') / 2.0**64 < val_fraction


def tokenize_unit(item: tuple[int, dict, dict]) -> dict[str, Any]:
  """Tokenizes one unit into one shard per split; returns their manifest entries."""
  index, unit, job = item
  tok = _worker_tokenizer(job['tokenizer_dir'])
  dtype = np.dtype(job['dtype'])
  writers: dict[str, token_shards.ShardWriter] = {}
  stats: dict[str, dict[str, int]] = {}
  doc_split: dict[str, str] = {}  # the split of each open (multi-piece) document key
  try:
    for text, starts, ends, key in corpus_inputs.documents(unit):
      k = key if key is not None else text
      split = doc_split.get(k) or (job['val_split'] if route(k, job['val_fraction'])
                                   else job['split'])
      if not ends:
        doc_split[k] = split
      w = writers.get(split)
      if w is None:
        path = os.path.join(job['out'], split, token_shards.SHARD_PATTERN.format(index))
        w = writers[split] = token_shards.ShardWriter(path, chunk_tokens=job['chunk_tokens'],
                                                      dtype=dtype)
        w.set_separator(job['separator'])
        stats[split] = {'num_chars': 0}
      w.add(tok.encode(text), starts)
      stats[split]['num_chars'] += len(text)
      if ends:
        w.add_separator()
    out = {}
    for split, w in writers.items():
      entry = w.close()
      if entry:
        out[split] = {**entry, 'num_chars': stats[split]['num_chars'],
                      'max_doc_tokens': w.max_doc_tokens}
    return out
  except BaseException:
    for w in writers.values():
      w.abort()
    raise


def prepare_text(out: str, *, inputs: Sequence[str] = (), jsonl: Sequence[str] = (),
                 tfds: str = '', tfds_split: str = 'train', tfds_data_dir: str = '',
                 text_key: str = 'text', split: str = 'train', val_fraction: float = 0.0,
                 val_split: str = 'validation', doc_split: str = 'file',
                 tokenizer: str | tokenizers.Tokenizer = 'char', separator: str = '\n',
                 chunk_tokens: int = token_shards.DEFAULT_CHUNK_TOKENS,
                 piece_bytes: int = corpus_inputs.DEFAULT_PIECE_BYTES,
                 encoding_errors: str = 'strict', workers: int = 0,
                 runner: str | None = None, beam_args: Sequence[str] = (),
                 command: str = '', **tokenizer_options) -> dict[str, dict[str, Any]]:
  """Prepares text into OUT/<split>/ (and OUT/<val_split>/ with `val_fraction`): token
  shards and a manifest per split, the tokenizer in OUT/tokenizer. Returns the manifests.
  `tokenizer_options`: vocab_size, bpe_ranks_path, hf_tokenizer_path, tokenizer_dir,
  sp_sample_chars (see build_tokenizer)."""
  t0 = time.perf_counter()
  if not 0.0 <= val_fraction < 1.0:
    raise ValueError(f'--val_fraction={val_fraction} must be in [0, 1).')
  if sum(bool(x) for x in (inputs, jsonl, tfds)) != 1:
    raise ValueError('give exactly one of --inputs (text files), --jsonl or --tfds.')
  skipped: dict[str, list[str]] = {}
  if tfds:
    n = len(corpus_inputs.tfds_source(tfds, tfds_split, tfds_data_dir or None))
    units = corpus_inputs.tfds_units(tfds, tfds_split, tfds_data_dir or None, text_key, n,
                                     per_unit=max(1, min(50_000, -(-n // 64))),
                                     encoding_errors=encoding_errors)
    source = {'tfds': tfds, 'tfds_split': tfds_split, 'examples': n}
  else:
    kind = 'jsonl' if jsonl else 'text'
    files = corpus_inputs.resolve_files(list(jsonl or inputs))
    units = corpus_inputs.file_units(files, kind=kind, doc_split=doc_split,
                                     piece_bytes=piece_bytes, text_key=text_key,
                                     encoding_errors=encoding_errors, skipped=skipped)
    source = {kind: files if len(files) <= 20 else files[:20] + ['...'],
              'num_files': len(files)}
  if skipped:
    log.warning('skipped %s', _counts(skipped))
  if not units:
    raise ValueError(f'no text to prepare: every input was skipped: {_counts(skipped)}; '
                     'pass non-empty UTF-8 text files.')
  os.makedirs(out, exist_ok=True)
  splits = [split] + ([val_split] if val_fraction > 0 else [])
  for s in splits:  # a split being rewritten is never read as complete meanwhile
    stale = os.path.join(out, s, token_shards.MANIFEST)
    if os.path.exists(stale):
      os.remove(stale)
  tok = build_tokenizer(tokenizer, out, units, workers=workers, runner=runner,
                        beam_args=beam_args, separator=separator, **tokenizer_options)
  job = {'out': os.path.abspath(out), 'split': split, 'val_split': val_split,
         'val_fraction': val_fraction, 'chunk_tokens': int(chunk_tokens),
         'dtype': token_shards.token_dtype(tok.vocab_size).name,
         'separator': separator_ids(tok, separator),
         'tokenizer_dir': os.path.abspath(os.path.join(out, token_shards.TOKENIZER_DIR))}
  results = work_units.map_units(tokenize_unit, [(i, u, job) for i, u in enumerate(units)],
                      workers=workers, runner=runner, beam_args=beam_args, tmp_dir=out)
  manifests = {}
  for s in splits:
    shards = [r[s] for r in results if s in r]
    if not shards:
      if s == split:
        raise ValueError(f'the inputs hold no text for split {s!r} ({len(units)} units, '
                         f'{_counts(skipped)}); check the inputs and --val_fraction.')
      log.warning('--val_fraction=%g sent no document to %r; use --doc_split paragraph or '
                  'line (or more files) to hold documents out.', val_fraction, s)
      continue
    manifest = {
        'format': token_shards.FORMAT, 'split': s, 'command': command,
        'created': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
        'tokenizer': {'name': tok.name, 'identity': tok.identity(),
                      'vocab_size': int(tok.vocab_size),
                      'eos_id': None if tok.eos_id is None else int(tok.eos_id)},
        'separator': job['separator'],
        'separator_text': None if tok.eos_id is not None else separator,
        'dtype': job['dtype'], 'chunk_tokens': job['chunk_tokens'],
        'num_tokens': sum(x['num_tokens'] for x in shards),
        'num_docs': sum(x['num_docs'] for x in shards),
        'num_chars': sum(x['num_chars'] for x in shards),
        'max_doc_tokens': max(x['max_doc_tokens'] for x in shards),
        'doc_split': 'example' if tfds else 'line' if jsonl else doc_split,
        'val_fraction': val_fraction, 'source': source,
        'skipped': {k: {'count': len(v), 'examples': v[:20]} for k, v in skipped.items()},
        'shards': [{k: x[k] for k in ('file', 'num_records', 'num_tokens', 'num_docs', 'bytes')}
                   for x in shards],
    }
    token_shards.write_json_atomic(os.path.join(out, s, token_shards.MANIFEST), manifest)
    work_units.remove_unlisted(os.path.join(out, s), {x['file'] for x in shards},
                               token_shards.MANIFEST)
    manifests[s] = manifest
  dt = time.perf_counter() - t0
  for s, m in manifests.items():
    log.info('%s/%s: %d docs, %d tokens in %d shards (%.1fs)', out, s, m['num_docs'],
             m['num_tokens'], len(m['shards']), dt)
  return manifests


def _counts(skipped: dict[str, list[str]]) -> str:
  """'1 empty file (a.txt), 2 binary files (b.bin, c.bin)'."""
  return ', '.join(
      f'{len(v)} {k.replace("_files", "")} file{"s" if len(v) > 1 else ""} '
      f'({", ".join(v[:3])}{", ..." if len(v) > 3 else ""})'
      for k, v in skipped.items()) or 'none skipped'


# ----------------------------------------------------------------------- the CLI.


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  p = errors.ArgumentParser(prog='python -m genai.data.prepare', description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--out', required=True, help='output folder (one subfolder per split)')
  p.add_argument('--inputs', nargs='*', default=[], help='text files / globs')
  p.add_argument('--jsonl', nargs='*', default=[], help='JSONL files / globs (--text_key)')
  p.add_argument('--tfds', default='', help='a TFDS dataset name, read by tfds.data_source')
  p.add_argument('--tfds_split', default='', help="TFDS split ('' = train, or train+test "
                 'for --images)')
  p.add_argument('--tfds_data_dir', default='')
  p.add_argument('--text_key', default='text', help='JSONL field / TFDS feature of the text')
  p.add_argument('--split', default='', help="split name written (default: 'train', or "
                 'the TFDS split)')
  p.add_argument('--val_fraction', type=float, default=0.0,
                 help='documents held out (by a stable hash) into --val_split')
  p.add_argument('--val_split', default='validation')
  p.add_argument('--doc_split', default='file', choices=corpus_inputs.DOC_SPLITS,
                 help='a text file is one document, or one per paragraph / line')
  p.add_argument('--tokenizer', default='char', choices=TOKENIZER_NAMES)
  p.add_argument('--tokenizer_dir', default='', help='reuse a saved genai tokenizer '
                 '(a workdir, or another prepared corpus\'s tokenizer/)')
  p.add_argument('--vocab_size', type=int, default=1024, help='sentencepiece')
  p.add_argument('--bpe_ranks_path', default='', help='gpt2_bpe: gpt2.tiktoken')
  p.add_argument('--hf_tokenizer_path', default='', help='hf: tokenizer.json or .gguf')
  p.add_argument('--separator', default='\n', help='ends each document when the tokenizer '
                 'has no EOS (char)')
  p.add_argument('--chunk_tokens', type=int, default=token_shards.DEFAULT_CHUNK_TOKENS,
                 help='tokens per record')
  p.add_argument('--piece_mb', type=float, default=corpus_inputs.DEFAULT_PIECE_BYTES / 2**20,
                 help='text per work unit (MB)')
  p.add_argument('--encoding_errors', default='strict', choices=('strict', 'replace', 'ignore'))
  p.add_argument('--workers', type=int, default=0, help='processes (0 = one per CPU)')
  p.add_argument('--runner', default='', help='Apache Beam runner (DirectRunner, '
                 'DataflowRunner, FlinkRunner, SparkRunner, ...); empty = local processes')
  p.add_argument('--beam_args', default='', help='more Beam pipeline options, comma-separated')
  p.add_argument('--images', action='store_true', help='prepare images instead of text')
  p.add_argument('--folder', default='', help='images: PNG/JPEG folder (class subfolders)')
  p.add_argument('--idx', default='', help='images: a folder of MNIST-format IDX files')
  p.add_argument('--image_size', type=int, default=0, help='images: resize to N x N (0 = keep)')
  p.add_argument('--images_per_shard', type=int, default=10_000)
  return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  """The command line; returns the exit code. Bad inputs are one `error:` line with exit
  code 1, a wrong command line exit code 2 (genai.errors)."""
  return errors.run_cli(_main, argv)


def _main(argv: Sequence[str]) -> int:
  logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')
  args = parse_args(argv)
  command = 'python -m genai.data.prepare ' + ' '.join(argv)
  common = dict(workers=args.workers, runner=args.runner or None,
                beam_args=[a for a in args.beam_args.split(',') if a], command=command)
  if args.images:
    from genai.data import image_shards  # pylint: disable=import-outside-toplevel
    manifests = image_shards.prepare_images(
        args.out, folder=args.folder, idx=args.idx, tfds=args.tfds,
        tfds_splits=[s for s in args.tfds_split.split(',') if s],
        tfds_data_dir=args.tfds_data_dir, image_size=args.image_size,
        images_per_shard=args.images_per_shard, **common)
  else:
    manifests = prepare_text(
        args.out, inputs=args.inputs, jsonl=args.jsonl, tfds=args.tfds,
        tfds_split=args.tfds_split or 'train', tfds_data_dir=args.tfds_data_dir,
        text_key=args.text_key, split=args.split or args.tfds_split or 'train',
        val_fraction=args.val_fraction, val_split=args.val_split, doc_split=args.doc_split,
        tokenizer=args.tokenizer, separator=args.separator, chunk_tokens=args.chunk_tokens,
        piece_bytes=int(args.piece_mb * 2**20), encoding_errors=args.encoding_errors,
        vocab_size=args.vocab_size, bpe_ranks_path=args.bpe_ranks_path,
        hf_tokenizer_path=args.hf_tokenizer_path, tokenizer_dir=args.tokenizer_dir,
        **common)
  for split, m in manifests.items():
    what = (f"{m['num_images']} images" if args.images else
            f"{m['num_docs']} documents, {m['num_tokens']} tokens")
    print(f"{os.path.join(args.out, split)}: {what} in {len(m['shards'])} shards")
  return 0


if __name__ == '__main__':
  sys.exit(main())
