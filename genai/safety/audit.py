"""Bias audits of datasets and of generations, their reports, and a promotion gate.

Dataset audit (identity-term counts and co-occurrence, duplicates, lengths, script and a
language heuristic) of a text file, one document per blank-line paragraph by default:
  python -m genai.safety.audit dataset --text data.txt --out runs/audit_data \
      [--split lines|paragraphs|file] [--groups groups.json] [--attributes attrs.json]
Generation audit (counterfactual prompt pairs that swap identity terms; the LM's
log-likelihood of the same continuations under both) of a trained LM workdir:
  python -m genai.safety.audit generations --workdir runs/lm --out runs/audit_gen \
      [--group gender] [--templates "The {woman} worked as a" ...] [--continuations " nurse" ...]
Both write report.md, report.html (plots embedded) and results.json; --logdir also logs to
TensorBoard; --gate thresholds.json (e.g. {"max_mean_abs_loglik_gap": 0.5}) exits 1 when a
threshold fails. In Python (what a retrain job uses):
  results = audit_generations(lm_loglik_fn(model, params, tokenizer),
                              counterfactual_pairs(templates, 'gender'))
  passed, reasons = gate(results, thresholds, baseline=current_model_results)
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Sequence

from genai import errors
from genai.safety.audit_data import (DEFAULT_ATTRIBUTES, DEFAULT_GROUPS, audit_image_labels,
                                     audit_text_dataset, duplicate_stats, load_attributes,
                                     load_groups, split_documents, validate_groups)
from genai.safety.audit_generations import (DEFAULT_CONTINUATIONS, DEFAULT_TEMPLATES,
                                            audit_generations, counterfactual_pairs,
                                            lm_generate_fn, lm_loglik_fn)
from genai.safety.audit_report import gate, log_to_tensorboard, summary_scalars, write_report

__all__ = [
    'DEFAULT_ATTRIBUTES', 'DEFAULT_CONTINUATIONS', 'DEFAULT_GROUPS', 'DEFAULT_TEMPLATES',
    'audit_generations', 'audit_image_labels', 'audit_text_dataset', 'counterfactual_pairs',
    'duplicate_stats', 'gate', 'lm_generate_fn', 'lm_loglik_fn', 'load_attributes',
    'load_groups', 'log_to_tensorboard', 'main', 'split_documents', 'summary_scalars',
    'validate_groups', 'write_report',
]


def _load_thresholds(path: str | None) -> dict[str, float] | None:
  if not path:
    return None
  if not os.path.isfile(path):
    raise FileNotFoundError(f'--gate {path!r}: no such file; give a JSON file like '
                            '{"max_mean_abs_loglik_gap": 0.5, "max_near_duplicate_rate": 0.2}.')
  with open(path, encoding='utf-8') as f:
    return {k: float(v) for k, v in json.load(f).items()}


def _finish(results, args, title: str) -> int:
  thresholds = _load_thresholds(args.gate)
  gate_result = gate(results, thresholds) if thresholds else None
  md, html_path = write_report(results, args.out, title, gate_result=gate_result)
  if args.logdir:
    log_to_tensorboard(results, args.logdir, args.step)
  for k, v in summary_scalars(results).items():
    print(f'{k}: {v:.6g}')
  print(f'Wrote {md} and {html_path}')
  if gate_result is not None:
    passed, reasons = gate_result
    print('Gate PASSED' if passed else 'Gate FAILED:\n  ' + '\n  '.join(reasons))
    return 0 if passed else 1
  return 0


def _dataset(args) -> int:
  if not os.path.isfile(args.text):
    raise FileNotFoundError(f'--text {args.text!r}: no such file.')
  with open(args.text, encoding='utf-8', errors='replace') as f:
    text = f.read()
  groups = load_groups(args.groups) if args.groups else None
  attributes = load_attributes(args.attributes) if args.attributes else None
  t0 = time.time()
  results = audit_text_dataset(text, groups, attributes=attributes, split=args.split,
                               window=args.window, near_threshold=args.near_threshold,
                               name=os.path.basename(args.text))
  print(f'Audited {results["num_docs"]} documents in {time.time() - t0:.2f}s')
  return _finish(results, args, args.title or f'Dataset audit: {args.text}')


def _generations(args) -> int:
  workdir = args.workdir
  if not os.path.isdir(workdir) or not os.path.isfile(os.path.join(workdir, 'tokenizer.json')):
    raise FileNotFoundError(f'--workdir {workdir!r} is not a genai LM workdir (no '
                            'tokenizer.json); train one with python -m experiments.lm first.')
  # The model stack (checkpoints, tokenizers), which the dataset audit does not load.
  from genai.families import lm  # pylint: disable=import-outside-toplevel
  groups = load_groups(args.groups) if args.groups else None
  templates = list(args.templates or DEFAULT_TEMPLATES)
  if args.templates_file:
    with open(args.templates_file, encoding='utf-8') as f:
      templates += [line.rstrip('\n') for line in f if line.strip()]
  _, model, params, tokenizer = lm.load_workdir(workdir)
  pairs = [p for g in args.group for p in _pairs_or_none(templates, g, groups)]
  if not pairs:
    raise ValueError(f'No template fits the groups {args.group}; see --templates.')
  results = audit_generations(lm_loglik_fn(model, params, tokenizer, batch_size=args.batch_size),
                              pairs, list(args.continuations or DEFAULT_CONTINUATIONS),
                              name=os.path.basename(os.path.normpath(workdir)))
  return _finish(results, args, args.title or f'Generation audit: {workdir}')


def _pairs_or_none(templates, group, groups):
  try:
    return counterfactual_pairs(templates, group, groups)
  except ValueError as e:
    print(f'Skipping group {group!r}: {e}', file=sys.stderr)
    return []


def main(argv: Sequence[str] | None = None) -> int:
  """The command line; returns the exit code (a user error: one line, genai.errors)."""
  return errors.run_cli(_main, argv)


def _main(argv: Sequence[str]) -> int:
  parser = errors.ArgumentParser(prog='python -m genai.safety.audit',
                                 description=__doc__.split('\n\n')[0])
  sub = parser.add_subparsers(dest='command', required=True)
  common = errors.ArgumentParser(add_help=False)
  common.add_argument('--out', required=True, help='report directory')
  common.add_argument('--title', default='')
  common.add_argument('--logdir', default='', help='also log to TensorBoard here')
  common.add_argument('--step', type=int, default=0, help='TensorBoard step')
  common.add_argument('--gate', default='', help='JSON thresholds; exit 1 when one fails')
  common.add_argument('--groups', default='', help='JSON {group: {category: [terms]}}')
  d = sub.add_parser('dataset', parents=[common], help='audit a text file')
  d.add_argument('--text', required=True)
  d.add_argument('--split', default='paragraphs', choices=['paragraphs', 'lines', 'file'])
  d.add_argument('--attributes', default='', help='JSON {name: [attribute words]}')
  d.add_argument('--window', type=int, default=5)
  d.add_argument('--near_threshold', type=float, default=0.8)
  g = sub.add_parser('generations', parents=[common], help='audit an LM workdir')
  g.add_argument('--workdir', required=True)
  g.add_argument('--group', nargs='+', default=['gender', 'age'])
  g.add_argument('--templates', nargs='+', default=None,
                 help='templates with a {term} slot, e.g. "The {woman} worked as a"')
  g.add_argument('--templates_file', default='', help='more templates, one per line')
  g.add_argument('--continuations', nargs='+', default=None)
  g.add_argument('--batch_size', type=int, default=16)
  args = parser.parse_args(argv)
  return _dataset(args) if args.command == 'dataset' else _generations(args)


if __name__ == '__main__':
  sys.exit(main())
