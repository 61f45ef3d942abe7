"""Bias mitigation of training text: near-duplicate removal, rebalancing, counterfactual swaps.

The audits (genai/safety/audit_data.py, audit_generations.py) measure bias; this module
changes the data a model trains on, once, before tokenization. The text is cut into
documents (blank-line paragraphs by default, or lines, or the whole file), and three
passes run in this order, each optional:

1. **Near-duplicate removal** (`dedup`): the audit's own duplicate clusters (exact after
   case/whitespace normalisation, and MinHash + LSH over char 5-grams verified by exact
   shingle Jaccard >= `dedup_threshold`, joined transitively); the first document of each
   cluster is kept.
2. **Rebalancing** (`rebalance='gender'`, a group of the audit's identity terms): each
   document is labelled with the category it mentions most (whole words, as the audit
   counts them; none or a tie: unlabelled, left alone). Category c with n_c documents gets
   the weight w_c = T / n_c, where T is the mean (`'balanced'`: the labelled total is kept),
   the largest (`'upsample'`) or the smallest (`'downsample'`) n_c, capped at `max_weight`.
   The weights are realised by resampling: category c ends with round(w_c n_c) documents,
   each of its documents repeated floor or ceil of that share (a seeded draw picks which).
3. **Counterfactual data augmentation** (`cda='gender'` or a swap-list file): every
   identity term of the swap list is replaced by its counterpart (whole words,
   case-insensitive, the replacement in the case of the word it replaces). `'augment'` adds
   the swapped copy of every document that has a term (Lu et al. 2018); `'substitute'`
   replaces such a document by its copy with probability `cda_probability` (Maudslay et al.
   2019), keeping the size.

Documents a pass adds (copies) go after the kept ones, in a seeded order; nothing else in
the text changes (separators are kept), so with no pass enabled the text is unchanged.

In a run: `data.mitigation.*` (configs/lm/base.py) applies it to the training part of the
LM corpus only; the held-out tail (`data.val_fraction`, cut at a document boundary) stays
as it is (`mitigate_corpus`). The retrain job takes the same fields (`--mitigation`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Mapping, Sequence

import numpy as np

from genai import paths
from genai.safety.audit_data import (_WORD_RE, DEFAULT_GROUPS, _match_terms, _tokenize,
                                     duplicate_clusters, load_groups, match_case,
                                     validate_groups)

DATA_DIR = os.path.join(os.path.dirname(__file__), 'data')
SPLITS = ('paragraphs', 'lines', 'file')
STRATEGIES = ('balanced', 'upsample', 'downsample')
CDA_MODES = ('augment', 'substitute')
_SEPARATOR_RE = {'paragraphs': re.compile(r'(\n\s*\n)'), 'lines': re.compile(r'(\n)')}
_DEFAULT_SEPARATOR = {'paragraphs': '\n\n', 'lines': '\n', 'file': '\n\n'}


@dataclasses.dataclass(frozen=True)
class Mitigation:
  """The fields of `data.mitigation` (configs/lm/base.py); every pass off by default."""
  split: str = 'paragraphs'         # documents: 'paragraphs' | 'lines' | 'file'
  dedup: bool = False               # drop near duplicates (all but the first of a cluster)
  dedup_threshold: float = 0.8      # char 5-gram Jaccard at or above which two are duplicates
  rebalance: str = ''               # '' = off; an identity group, e.g. 'gender'
  rebalance_strategy: str = 'balanced'  # 'balanced' | 'upsample' | 'downsample'
  rebalance_max_weight: float = 0.0     # cap on a category's weight (0 = none)
  cda: str = ''                     # '' = off; 'gender' (the shipped list) or a swap-list file
  cda_mode: str = 'augment'         # 'augment' (add swapped copies) | 'substitute'
  cda_probability: float = 0.5      # 'substitute': the chance a document is swapped
  groups: str = ''                  # identity groups JSON for rebalance ('' = the audit's)
  seed: int = 0

  @property
  def enabled(self) -> bool:
    return bool(self.dedup or self.rebalance or self.cda)

  def __post_init__(self):
    def bad(field, value, fix):
      raise ValueError(f'data.mitigation.{field}={value!r} {fix}.')
    if self.split not in SPLITS:
      bad('split', self.split, f'is unknown; use one of {SPLITS}')
    if not 0.0 < self.dedup_threshold <= 1.0:
      bad('dedup_threshold', self.dedup_threshold, 'must be in (0, 1]')
    if self.rebalance_strategy not in STRATEGIES:
      bad('rebalance_strategy', self.rebalance_strategy, f'is unknown; use one of {STRATEGIES}')
    if self.rebalance_max_weight < 0:
      bad('rebalance_max_weight', self.rebalance_max_weight, 'must be >= 0 (0 = no cap)')
    if self.cda_mode not in CDA_MODES:
      bad('cda_mode', self.cda_mode, f'is unknown; use one of {CDA_MODES}')
    if not 0.0 <= self.cda_probability <= 1.0:
      bad('cda_probability', self.cda_probability, 'must be in [0, 1]')

  def groups_(self) -> dict[str, dict[str, list[str]]]:
    return load_groups(self.groups) if self.groups else validate_groups(DEFAULT_GROUPS)

  def apply(self, docs: Sequence[str]) -> tuple[list[str], list[int], list[str], dict]:
    """The passes over `docs`: (the documents, swapped in place where 'substitute' swapped
    them, 0/1 whether each stays, the added documents in their seeded order, report)."""
    n = len(docs)
    copies = np.ones(n, np.int64)
    report: dict[str, Any] = {'docs_in': n}
    if self.dedup:
      copies, report['dedup'] = deduplicate(docs, self.dedup_threshold)
    groups = self.groups_()
    if self.rebalance:
      if self.rebalance not in groups:
        raise ValueError(f'data.mitigation.rebalance={self.rebalance!r} is not an identity '
                         f'group; use one of {sorted(groups)} (or data.mitigation.groups).')
      copies, report['rebalance'] = rebalance(
          docs, groups[self.rebalance], copies, strategy=self.rebalance_strategy,
          max_weight=self.rebalance_max_weight, seed=self.seed)
    docs, added = list(docs), []
    if self.cda:
      docs, added, report['cda'] = counterfactual(
          docs, load_swaps(self.cda), copies, mode=self.cda_mode,
          probability=self.cda_probability, seed=self.seed)
      report['cda']['swap_list'] = self.cda
    # Every added document (a rebalancing copy beyond the first, a swapped copy) goes
    # after the kept ones, in a seeded order.
    extra = [d for d, k in zip(docs, copies) for _ in range(max(int(k) - 1, 0))] + added
    order = np.random.default_rng([self.seed, 2]).permutation(len(extra))
    keep = [int(k > 0) for k in copies]
    report['docs_out'] = sum(keep) + len(extra)
    return docs, keep, [extra[i] for i in order], report

  def apply_to_text(self, text: str) -> tuple[str, dict[str, Any]]:
    """`text` cut into documents by `split`, mitigated, joined again with its separators
    (added documents before the trailing whitespace); the report also holds the
    identity-term mentions before and after."""
    docs, seps = split_text(text, self.split)
    live = [i for i, d in enumerate(docs) if d.strip()]
    before = [docs[i] for i in live]
    new_docs, keep, added, report = self.apply(before)
    keep_all = np.ones(len(docs), bool)
    for j, i in enumerate(live):
      docs[i], keep_all[i] = new_docs[j], bool(keep[j])
    new = ''.join(d + s for d, s, k in zip(docs, seps, keep_all) if k)
    if added:
      body = new.rstrip()
      sep = _DEFAULT_SEPARATOR[self.split]
      new = (body + sep if body else '') + sep.join(added) + new[len(body):]
    groups = self.groups_()
    report['mentions_before'] = term_mentions(before, groups)
    report['mentions_after'] = term_mentions(split_text(new, self.split)[0], groups)
    report['chars_in'], report['chars_out'] = len(text), len(new)
    return new, report


def parse(spec: Any) -> Mitigation:
  """A Mitigation from a mapping or ConfigDict of its fields, JSON text or a JSON file
  ('' or None: everything off). An unknown field is a ValueError naming the known ones."""
  if spec is None or spec == '':
    return Mitigation()
  if isinstance(spec, Mitigation):
    return spec
  if isinstance(spec, str):
    text = spec
    if os.path.isfile(spec):
      with open(spec, encoding='utf-8') as f:
        text = f.read()
    elif not spec.lstrip().startswith('{'):
      raise FileNotFoundError(f'mitigation {spec!r}: no such file; give JSON like '
                              '{"dedup": true, "cda": "gender"} or a file holding it.')
    try:
      spec = json.loads(text)
    except json.JSONDecodeError as e:
      raise ValueError(f'mitigation {spec[:60]!r} is not valid JSON: {e}.') from e
  if hasattr(spec, 'to_dict'):
    spec = spec.to_dict()
  if not isinstance(spec, Mapping):
    raise ValueError(f'mitigation must be a mapping of fields, got {spec!r:.60}.')
  fields = {f.name: f for f in dataclasses.fields(Mitigation)}
  unknown = sorted(set(spec) - set(fields))
  if unknown:
    raise ValueError(f'data.mitigation.{unknown[0]} is unknown; the fields are '
                     f'{", ".join(fields)}.')
  kw = {}
  for k, v in spec.items():
    kind = type(fields[k].default)
    if kind is float and isinstance(v, int) and not isinstance(v, bool):
      v = float(v)
    if not isinstance(v, kind) or (kind is not bool and isinstance(v, bool)):
      raise ValueError(f'data.mitigation.{k}={v!r} must be a {kind.__name__}.')
    kw[k] = v
  return Mitigation(**kw)


# =========================== Documents ================================================

def split_text(text: str, split: str) -> tuple[list[str], list[str]]:
  """(documents, the separator after each): ''.join(d + s) == text. 'paragraphs' splits at
  blank lines (as the audit does), 'lines' at newlines, 'file' not at all."""
  if split == 'file':
    return [text], ['']
  parts = _SEPARATOR_RE[split].split(text)
  return parts[0::2], parts[1::2] + ['']


def split_heldout(text: str, val_fraction: float, split: str) -> tuple[str, str]:
  """(training part, held-out tail): the tail is the last `val_fraction` of the characters,
  its start moved forward to the next document boundary (so no document is in both)."""
  if val_fraction <= 0:
    return text, ''
  cut = int(len(text) * (1.0 - val_fraction))
  m = _SEPARATOR_RE[split].search(text, cut) if split != 'file' else None
  if m is not None and m.end() < len(text):
    cut = m.end()
  return text[:cut], text[cut:]


def mitigate_corpus(text: str, data_cfg: Any, workdir: str | None = None
                    ) -> tuple[str, str] | None:
  """The LM data path's hook: None when `data_cfg.mitigation` is off; else (mitigated
  training part, held-out tail as it was). The report goes to workdir/mitigation.json."""
  mit = parse(getattr(data_cfg, 'get', lambda *_: None)('mitigation'))
  if not mit.enabled:
    return None
  train, val = split_heldout(text, float(data_cfg.get('val_fraction', 0.0)), mit.split)
  train, report = mit.apply_to_text(train)
  report['heldout_chars'] = len(val)
  if workdir:  # local or remote (gs://...), through the one path layer
    paths.write_json(paths.join(workdir, 'mitigation.json'),
                     {'config': dataclasses.asdict(mit), **report}, indent=1)
  from absl import logging  # pylint: disable=import-outside-toplevel
  logging.info('data.mitigation: %d -> %d training documents, %d -> %d characters; %s',
               report['docs_in'], report['docs_out'], report['chars_in'], report['chars_out'],
               json.dumps({k: v for k, v in report.items() if k in ('dedup', 'cda')}))
  return train, val


def check_source(data_cfg: Any) -> None:
  """A ValueError when data.mitigation is on for a source it does not apply to."""
  source = data_cfg.get('source', 'embedded')
  if source not in ('embedded', 'files', 'tfds') and parse(data_cfg.get('mitigation')).enabled:
    raise ValueError(f"data.mitigation applies to text corpora (data.source 'embedded', "
                     f"'files', 'tfds'), not data.source={source!r}; turn its passes off "
                     '(or mitigate the text before preparing it).')


# =========================== Identity-term mentions ===================================

def category_mentions(docs: Sequence[str], categories: Mapping[str, Sequence[str]]
                      ) -> np.ndarray:
  """[docs, categories] int counts of each category's terms in each document, counted as
  the audit counts them (whole words, case-insensitive, multi-word terms allowed)."""
  vocab, ids, doc_ids, _ = _tokenize(docs)
  index = {w: i for i, w in enumerate(vocab)}
  out = np.zeros((len(docs), len(categories)), np.int64)
  for j, terms in enumerate(categories.values()):
    mask = _match_terms(list(terms), index, ids, doc_ids)
    out[:, j] = np.bincount(doc_ids[mask], minlength=len(docs))
  return out


def term_mentions(docs: Sequence[str], groups: Mapping[str, Mapping[str, Sequence[str]]]
                  ) -> dict[str, Any]:
  """{group: {category: mentions, ..., 'term_rate_ratio': max/min}} (the audit's
  `<group>/term_rate_ratio`: the words per document cancel out of the ratio)."""
  out = {}
  for g, cats in groups.items():
    counts = category_mentions(docs, cats).sum(0)
    row: dict[str, Any] = {c: int(k) for c, k in zip(cats, counts)}
    lo, hi = int(counts.min()), int(counts.max())
    row['term_rate_ratio'] = hi / lo if lo > 0 else (float('inf') if hi > 0 else 1.0)
    out[g] = row
  return out


# =========================== The passes ===============================================

def deduplicate(docs: Sequence[str], threshold: float = 0.8) -> tuple[np.ndarray, dict]:
  """(keep [n] 0/1, report): the first document of each exact or near-duplicate cluster."""
  c = duplicate_clusters(docs, near_threshold=threshold, num_examples=3)
  keep = (c['first'] == np.arange(len(docs))).astype(np.int64)
  exact = int((c['exact_first'] != np.arange(len(docs))).sum())
  removed = int(len(docs) - keep.sum())
  return keep, {'threshold': threshold, 'removed': removed, 'exact': exact,
                'near': removed - exact, 'examples': c['examples']}


def document_labels(docs: Sequence[str], categories: Mapping[str, Sequence[str]]
                    ) -> list[str | None]:
  """Each document's category: the one it mentions most; None for none or a tie."""
  counts = category_mentions(docs, categories)
  names = list(categories)
  labels: list[str | None] = []
  for row in counts:
    top = row.max() if len(row) else 0
    labels.append(names[int(row.argmax())] if top > 0 and (row == top).sum() == 1 else None)
  return labels


def category_weights(counts: Mapping[str, int], strategy: str = 'balanced',
                     max_weight: float = 0.0) -> dict[str, float]:
  """w_c = T / n_c over the categories with documents; T is the mean n_c ('balanced'), the
  largest ('upsample') or the smallest ('downsample'); capped at max_weight when > 0."""
  present = {c: n for c, n in counts.items() if n > 0}
  if not present:
    return {}
  n = np.asarray(list(present.values()), np.float64)
  target = {'balanced': n.mean(), 'upsample': n.max(), 'downsample': n.min()}[strategy]
  w = {c: float(target / k) for c, k in present.items()}
  return {c: min(v, max_weight) for c, v in w.items()} if max_weight > 0 else w


def resample_copies(labels: Sequence[str | None], weights: Mapping[str, float],
                    copies: np.ndarray, seed: int = 0) -> np.ndarray:
  """Copies of each document: category c (its live documents, copies > 0) gets
  round(w_c n_c) in all, each document floor or ceil of that share (a seeded draw picks
  which get one more); unlabelled documents keep their copies."""
  out = np.asarray(copies, np.int64).copy()
  rng = np.random.default_rng([seed, 0])
  for c, w in weights.items():
    members = np.asarray([i for i, (lab, k) in enumerate(zip(labels, out))
                          if lab == c and k > 0], np.int64)
    total = int(np.floor(w * len(members) + 0.5))
    base, extra = divmod(total, len(members))
    out[members] = base
    out[members[rng.permutation(len(members))[:extra]]] += 1
  return out


def rebalance(docs: Sequence[str], categories: Mapping[str, Sequence[str]],
              copies: np.ndarray | None = None, *, strategy: str = 'balanced',
              max_weight: float = 0.0, seed: int = 0) -> tuple[np.ndarray, dict]:
  """(copies [n], report): the documents resampled so each category of `categories` has
  the weight `category_weights` gives it (documents with copies 0 are out already)."""
  copies = np.ones(len(docs), np.int64) if copies is None else np.asarray(copies, np.int64)
  labels = document_labels(docs, categories)
  live = copies > 0
  before = {c: int(sum(1 for lab, k in zip(labels, live) if lab == c and k)) for c in categories}
  weights = category_weights(before, strategy, max_weight)
  out = resample_copies(labels, weights, copies, seed)
  after = {c: int(sum(k for lab, k in zip(labels, out) if lab == c)) for c in categories}
  return out, {'strategy': strategy, 'max_weight': max_weight, 'docs_before': before,
               'docs_after': after, 'weights': weights,
               'unlabelled': int(sum(1 for lab, k in zip(labels, live) if lab is None and k))}


def load_swaps(spec: str) -> dict[str, str]:
  """{term: replacement} from a swap list: 'gender' (or NAME: genai/safety/data/cda_NAME.tsv)
  or a file of `a<TAB>b` lines (both directions; a direction an earlier line defined is
  kept; # comments)."""
  shipped = os.path.join(DATA_DIR, f'cda_{spec}.tsv')
  path = shipped if re.fullmatch(r'\w+', spec) and os.path.isfile(shipped) else spec
  if not os.path.isfile(path):
    names = sorted(f[4:-4] for f in os.listdir(DATA_DIR) if re.fullmatch(r'cda_\w+\.tsv', f))
    raise FileNotFoundError(f'data.mitigation.cda={spec!r}: no such swap list; use one of '
                            f'{names} or a file of "term<TAB>counterpart" lines.')
  swaps: dict[str, str] = {}
  with open(path, encoding='utf-8') as f:
    for num, line in enumerate(f, 1):
      if not line.strip() or line.lstrip().startswith('#'):
        continue
      pair = line.strip().lower().split('\t') if '\t' in line else line.lower().split()
      pair = [p.strip() for p in pair]
      if len(pair) != 2 or not all(_WORD_RE.fullmatch(p) for p in pair) or pair[0] == pair[1]:
        raise ValueError(f'{path}:{num}: {line.strip()!r} is not two different words '
                         '(letters, hyphens) separated by a tab.')
      a, b = pair
      swaps.setdefault(a, b)
      swaps.setdefault(b, a)
  if not swaps:
    raise ValueError(f'{path} holds no swap pairs.')
  return swaps


def swap_terms(text: str, swaps: Mapping[str, str]) -> tuple[str, int]:
  """(text with every swap-list word replaced in its case, number replaced). Words are
  what the audit counts: runs of letters, hyphenated words whole ('he' in 'the' or in
  'he-goat' is not a word 'he')."""
  count = 0

  def repl(m):
    nonlocal count
    word = m.group(0)
    new = swaps.get(word.lower())
    if new is None:
      return word
    count += 1
    return match_case(new, word)

  return _WORD_RE.sub(repl, text), count


def counterfactual(docs: Sequence[str], swaps: Mapping[str, str], copies: Sequence[int],
                   *, mode: str = 'augment', probability: float = 0.5, seed: int = 0
                   ) -> tuple[list[str], list[str], dict]:
  """(documents, added documents, report) for the documents with copies > 0 that hold a
  swap-list term. 'augment': one swapped copy added per copy; 'substitute': the document
  replaced in place by its swapped copy with `probability` (one seeded draw per input
  document, drawn whether or not it has a term)."""
  out = list(docs)
  draws = np.random.default_rng([seed, 1]).random(len(docs))
  added: list[str] = []
  swapped = terms = 0
  for i, d in enumerate(docs):
    if not copies[i]:
      continue
    new, k = swap_terms(d, swaps)
    if not k:
      continue
    if mode == 'augment':
      added += [new] * int(copies[i])
    elif draws[i] < probability:
      out[i] = new
    else:
      continue
    swapped += int(copies[i])
    terms += k * int(copies[i])
  return out, added, {'mode': mode, 'docs_swapped': swapped, 'terms_swapped': terms,
                      'probability': probability if mode == 'substitute' else None}
