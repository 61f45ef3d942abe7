"""Texts/s of genai.safety.moderation on this CPU: rules only, and rules + the classifier.

  python -m benchmarks.moderation_throughput                     # 10k texts, trains a
                                                                 # classifier (~10 s) first
  python -m benchmarks.moderation_throughput --workdir runs/moderation_clf --num_texts 2000

The texts are generated sentences (seeded) of 6-40 words: ordinary prose with, in about one
in five, an email, phone number, card number, IP address, blocklisted word or ticket id.
Rules: the four built-in PII rules (redact), a 20-term blocklist (block) and a regex (flag).
The classifier runs batched inside `moderate_many` (--batch_size rows per jitted call,
after one warm-up call that compiles). Best of --rounds; prints a table and the command, and
writes the result file (benchmarks/results.py).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import numpy as np

from benchmarks import results as results_lib
from genai.safety import moderation as mod

_WORDS = ('the a report meeting garden weather model server data team project river city '
          'library music train coffee review update result question answer morning night '
          'quickly slowly today tomorrow is was will be can should please thanks we you they '
          'it and or but with for about from into over under after before').split()
_EXTRAS = ('write to {name}@example.org', 'call +44 20 7946 0958', 'call (555) 123-4567',
           'card 4111 1111 1111 1111', 'host 10.1.2.3', 'you idiot', 'see TICKET-{n}',
           'shut up, loser')
_BLOCKLIST = ['idiot', 'moron', 'loser', 'shut up', 'dumbass', 'imbecile', 'halfwit',
              'numbskull', 'nitwit', 'dimwit', 'buffoon', 'cretin', 'jerk', 'scumbag',
              'lowlife', 'creep', 'freak', 'clown', 'pest', 'weirdo']


def make_texts(n: int, seed: int = 0) -> list[str]:
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    words = list(rng.choice(_WORDS, size=int(rng.integers(6, 41))))
    if rng.random() < 0.2:
      extra = _EXTRAS[int(rng.integers(len(_EXTRAS)))].format(name=f'user{i}', n=i)
      words.insert(int(rng.integers(len(words) + 1)), extra)
    out.append(' '.join(words).capitalize() + '.')
  return out


def rules() -> list[mod.Rule]:
  return mod.default_rules() + mod.load_rules([
      {'name': 'insults', 'type': 'blocklist', 'terms': _BLOCKLIST, 'action': 'block'},
      {'name': 'ticket', 'type': 'regex', 'pattern': r'TICKET-\d+', 'action': 'flag'}])


def _best_rate(fn, texts: list[str], rounds: int) -> tuple[float, list]:
  best, out = float('inf'), None
  for _ in range(rounds):
    t0 = time.perf_counter()
    out = fn(texts)
    best = min(best, time.perf_counter() - t0)
  return len(texts) / best, out


def _train_classifier(workdir: str) -> None:
  from absl import logging  # pylint: disable=import-outside-toplevel
  from configs.text_classifier import moderation  # pylint: disable=import-outside-toplevel
  from experiments import text_classifier  # pylint: disable=import-outside-toplevel
  from genai.train import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  logging.set_verbosity(logging.ERROR)
  workdir_lib.run(moderation.get_config(), workdir, text_classifier.build_task,
                  print_fn=lambda _: None)


SETTINGS = {'rules_only': 'rules only', 'classifier_only': 'classifier only',
            'rules_and_classifier': 'rules + classifier'}


def headline(fig: dict) -> dict:
  return {'speed': ', '.join(f'{label}: {fig[key + ".texts_per_s"]:,.0f} texts/s'
                             for key, label in SETTINGS.items() if key + '.texts_per_s' in fig)}


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(prog='python -m benchmarks.moderation_throughput')
  p.add_argument('--num_texts', type=int, default=10_000)
  p.add_argument('--workdir', help='trained experiments/text_classifier workdir (default: '
                 'train the shipped config into a temporary directory).')
  p.add_argument('--batch_size', type=int, default=256, help='classifier rows per call.')
  p.add_argument('--rounds', type=int, default=2)
  results_lib.add_args(p, 'moderation_throughput')
  args = p.parse_args(argv)
  texts = make_texts(args.num_texts)
  n_bytes = sum(len(t.encode()) for t in texts)

  rules_only = mod.Moderator(rules())
  rate_rules, res = _best_rate(rules_only.moderate_many, texts, args.rounds)
  fired = sum(bool(r.flags) for r in res)

  workdir = args.workdir
  tmp = None
  figures, notes = {'num_texts': len(texts), 'bytes_per_text': round(n_bytes / len(texts), 1),
                    'rounds': args.rounds}, []
  if not workdir:
    tmp = tempfile.TemporaryDirectory()
    workdir = os.path.join(tmp.name, 'clf')
    t0 = time.perf_counter()
    _train_classifier(workdir)
    figures['classifier_train_s'] = round(time.perf_counter() - t0, 1)
    notes.append(f'trained the shipped classifier config in {figures["classifier_train_s"]} s')
    print(notes[-1])
  from genai.safety import text_classifier  # pylint: disable=import-outside-toplevel
  scorer = text_classifier.load_classifier(workdir, batch_size=args.batch_size)
  scorer(texts[:args.batch_size])  # compile the full-batch shape
  scorer(texts[:1])                # and the small-tail shapes used below
  rate_clf, _ = _best_rate(scorer, texts, args.rounds)
  both = mod.Moderator(rules(), scorer, threshold=0.8)
  rate_both, res = _best_rate(both.moderate_many, texts, args.rounds)
  by_clf = sum('classifier' in r.flags for r in res)

  title = (f'{len(texts)} generated texts, {n_bytes / len(texts):.0f} bytes each on average; '
           f'best of {args.rounds} rounds; {platform.machine()}, {os.cpu_count()} CPUs')
  columns = ['setting', 'texts/s', 'ms/1k texts']
  rates = {'rules_only': ('rules only (6 rules)', rate_rules),
           'classifier_only': (f'classifier only (batch {args.batch_size})', rate_clf),
           'rules_and_classifier': ('rules + classifier (moderate_many)', rate_both)}
  cells = [[name, f'{rate:,.0f}', f'{1e6 / rate:.1f}'] for name, rate in rates.values()]
  notes.append(f'rules fired on {fired} texts; the classifier (threshold 0.8) on {by_clf}')
  print(f'\n{title}')
  print(f'{"setting":<36} {"texts/s":>10} {"ms/1k texts":>12}')
  for name, rate in rates.values():
    print(f'{name:<36} {rate:>10,.0f} {1e6 / rate:>12.1f}')
  print(notes[-1])
  print('command: python -m benchmarks.moderation_throughput ' + ' '.join(sys.argv[1:]))
  figures.update({f'{key}.texts_per_s': rate for key, (_, rate) in rates.items()})
  figures.update(rules_fired=fired, classifier_fired=by_clf)
  results_lib.write(args.result_name, figures, headline=headline(figures),
                    tables=[results_lib.table(title, columns, cells)], notes=notes,
                    config={'batch_size': args.batch_size, 'threshold': 0.8},
                    results_dir=args.results_dir)
  if tmp is not None:
    tmp.cleanup()


if __name__ == '__main__':
  main()
