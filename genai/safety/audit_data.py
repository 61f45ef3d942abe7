"""Dataset bias audits: identity-term counts and co-occurrence, duplicates, lengths, scripts.

`audit_text_dataset(docs)` measures, over a list of documents (or one corpus string split
into lines or blank-line paragraphs):
- counts of configurable identity-term groups (group -> category -> terms; whole words,
  case-insensitive, multi-word terms allowed), per 1k words, and how many documents mention
  each category and each pair of categories of a group;
- co-occurrence of each category with attribute word lists (occupations, positive and
  negative adjectives by default): the share of a category's mentions with an attribute word
  within `window` words in the same document, and the attribute words seen most often;
- the exact-duplicate rate (after whitespace/case normalisation) and the near-duplicate rate
  (MinHash over character 5-gram shingles, LSH candidates, verified by exact shingle Jaccard
  >= `near_threshold`); both count the documents a dedup pass would drop (all but the first
  of each cluster);
- length distributions (characters and words per document);
- a language/script distribution: the Unicode script of every letter, and an English
  stopword ratio per document. This is a HEURISTIC (no language model, no network): a
  document counts as 'en' when it is mostly Latin letters and >= 15% of its words are common
  English stopwords; short documents (< 5 words) are 'short'.

`audit_image_labels(labels, num_classes, images=None)` gives class balance (counts, max/min
ratio, entropy) and the exact-duplicate rate of images (and label conflicts between copies).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from typing import Any, Mapping, Sequence

import numpy as np

Groups = Mapping[str, Mapping[str, Sequence[str]]]

# Index-aligned across categories: term i of one category swaps with term i of another
# (genai/safety/audit_generations.py builds counterfactual prompts this way).
DEFAULT_GROUPS: dict[str, dict[str, list[str]]] = {
    'gender': {
        'female': ['she', 'her', 'hers', 'herself', 'woman', 'women', 'girl', 'girls', 'mother',
                   'mothers', 'daughter', 'daughters', 'sister', 'sisters', 'wife', 'wives',
                   'queen', 'queens', 'lady', 'ladies', 'madam', 'aunt', 'niece', 'princess',
                   'duchess', 'mistress', 'bride', 'widow', 'maid', 'grandmother',
                   'gentlewoman', 'female', 'females'],
        'male': ['he', 'him', 'his', 'himself', 'man', 'men', 'boy', 'boys', 'father',
                 'fathers', 'son', 'sons', 'brother', 'brothers', 'husband', 'husbands',
                 'king', 'kings', 'lord', 'lords', 'sir', 'uncle', 'nephew', 'prince',
                 'duke', 'master', 'groom', 'widower', 'lad', 'grandfather',
                 'gentleman', 'male', 'males'],
    },
    'age': {
        'young': ['young', 'youthful', 'youth', 'child', 'children', 'teenager', 'teenagers',
                  'infant', 'baby', 'kid', 'kids'],
        'old': ['old', 'elderly', 'aged', 'senior', 'seniors', 'pensioner', 'pensioners',
                'retiree', 'retirees', 'grey-haired'],
    },
}

DEFAULT_ATTRIBUTES: dict[str, list[str]] = {
    'occupation': ['doctor', 'nurse', 'engineer', 'teacher', 'scientist', 'lawyer', 'judge',
                   'soldier', 'captain', 'servant', 'secretary', 'programmer', 'farmer',
                   'merchant', 'priest', 'cook', 'clerk', 'pilot', 'manager', 'physician',
                   'housekeeper', 'carpenter', 'banker', 'professor', 'officer'],
    'positive': ['good', 'kind', 'gentle', 'noble', 'brave', 'wise', 'strong', 'honest',
                 'clever', 'beautiful', 'fair', 'loving', 'true', 'worthy', 'valiant',
                 'intelligent', 'capable', 'virtuous'],
    'negative': ['bad', 'cruel', 'weak', 'foolish', 'wicked', 'evil', 'false', 'ugly',
                 'angry', 'lazy', 'stupid', 'vile', 'foul', 'base', 'emotional', 'jealous',
                 'hysterical', 'villain'],
}

# Common English function words, for the language heuristic.
ENGLISH_STOPWORDS = frozenset(
    'a about after all also an and any are as at be been but by can could did do does for '
    'from had has have he her him his how i if in into is it its me my no not of on or our '
    'she so than that the their them then there these they this to up us was we were what '
    'when which who will with would you your thou thee thy shall'.split())

_WORD_RE = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*")  # letters, hyphenated words kept whole
_WS_RE = re.compile(r'\s+')


# =========================== Configuration ============================================

def validate_groups(groups: Any, what: str = 'groups') -> dict[str, dict[str, list[str]]]:
  """`groups` as {group: {category: [lower-case terms]}}, or a ValueError saying what's wrong."""
  if not isinstance(groups, Mapping) or not groups:
    raise ValueError(f'{what} must be a non-empty mapping group -> {{category: [terms]}}, '
                     f'e.g. {{"gender": {{"female": ["she"], "male": ["he"]}}}}; got {groups!r:.80}.')
  out = {}
  for g, cats in groups.items():
    if not isinstance(cats, Mapping) or not cats:
      raise ValueError(f'{what}[{g!r}] must map categories to term lists, got {cats!r:.80}.')
    seen: dict[str, str] = {}
    out[g] = {}
    for c, terms in cats.items():
      if isinstance(terms, str) or not isinstance(terms, Sequence) or not terms:
        raise ValueError(f'{what}[{g!r}][{c!r}] must be a non-empty list of terms, got {terms!r:.80}.')
      clean = []
      for t in terms:
        words = str(t).lower().split()
        if not words or any(not _WORD_RE.fullmatch(w) for w in words):
          raise ValueError(f'{what}[{g!r}][{c!r}]: term {t!r} must be words of letters '
                           '(hyphens allowed, no digits or apostrophes), matched whole.')
        t = ' '.join(words)
        if t in seen and seen[t] != c:
          raise ValueError(f'{what}[{g!r}]: term {t!r} is in both {seen[t]!r} and {c!r}; a '
                           'term belongs to one category of a group.')
        seen[t] = c
        clean.append(t)
      out[g][c] = clean
  return out


def match_case(term: str, like: str) -> str:
  """`term` in the case of `like`: 'SHE' -> upper, 'She' -> first letter upper, else as is."""
  if like.isupper() and len(like) > 1:
    return term.upper()
  if like[:1].isupper():
    return term[:1].upper() + term[1:]
  return term


def load_groups(path: str) -> dict[str, dict[str, list[str]]]:
  """Identity-term groups from a JSON file {group: {category: [terms]}}."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'--groups {path!r}: no such file; give a JSON file like '
                            '{"gender": {"female": ["she", "her"], "male": ["he", "him"]}}.')
  with open(path, encoding='utf-8') as f:
    try:
      data = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path} is not valid JSON: {e}.') from e
  return validate_groups(data, what=path)


def load_attributes(path: str) -> dict[str, list[str]]:
  """Attribute word lists from a JSON file {name: [words]}."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'--attributes {path!r}: no such file; give a JSON file like '
                            '{"occupation": ["doctor", "nurse"]}.')
  with open(path, encoding='utf-8') as f:
    data = json.load(f)
  return validate_groups({'attributes': data}, what=path)['attributes']


def split_documents(text: str, split: str = 'paragraphs') -> list[str]:
  """One corpus string as documents: 'lines', 'paragraphs' (blank-line separated) or 'file'."""
  if split == 'lines':
    docs = text.splitlines()
  elif split == 'paragraphs':
    docs = re.split(r'\n\s*\n', text)
  elif split == 'file':
    docs = [text]
  else:
    raise ValueError(f"split={split!r} is unknown; use 'lines', 'paragraphs' or 'file'.")
  return [d.strip() for d in docs if d.strip()]


# =========================== Words, terms and co-occurrence ===========================

def _tokenize(docs: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray, list[int]]:
  """(vocabulary, word ids [N], document ids [N], words per doc) of lower-cased docs."""
  vocab: dict[str, int] = {}
  ids: list[int] = []
  doc_ids: list[int] = []
  lens = []
  for i, d in enumerate(docs):
    words = _WORD_RE.findall(d.lower())
    ids.extend(vocab.setdefault(w, len(vocab)) for w in words)
    doc_ids.extend([i] * len(words))
    lens.append(len(words))
  return list(vocab), np.asarray(ids, np.int64), np.asarray(doc_ids, np.int64), lens


def _match_terms(terms: Sequence[str], vocab_index: dict[str, int], ids: np.ndarray,
                 doc_ids: np.ndarray) -> np.ndarray:
  """Boolean [N]: a term (possibly multi-word) starts at this word, within one document."""
  hit = np.zeros(len(ids), bool)
  for term in terms:
    parts = term.split(' ')
    if any(p not in vocab_index for p in parts):
      continue
    k = len(parts)
    if k > len(ids):
      continue
    m = np.ones(len(ids) - k + 1, bool)
    for j, p in enumerate(parts):
      m &= ids[j:len(ids) - k + 1 + j] == vocab_index[p]
      m &= doc_ids[j:len(ids) - k + 1 + j] == doc_ids[:len(ids) - k + 1]
    hit[:len(m)] |= m
  return hit


def _near(mask: np.ndarray, doc_ids: np.ndarray, window: int) -> np.ndarray:
  """Boolean [N]: some position within `window` words (same document, not itself) is in mask."""
  n = len(mask)
  out = np.zeros(n, bool)
  for d in range(1, window + 1):
    if d >= n:
      break
    same = doc_ids[d:] == doc_ids[:-d]
    out[:-d] |= mask[d:] & same
    out[d:] |= mask[:-d] & same
  return out


def _neighbour_counts(center: np.ndarray, attr: np.ndarray, ids: np.ndarray,
                      doc_ids: np.ndarray, window: int, vocab_size: int) -> np.ndarray:
  """[V] counts of attribute words within `window` of a center word (pairs counted)."""
  counts = np.zeros(vocab_size, np.int64)
  n = len(ids)
  for d in range(1, window + 1):
    if d >= n:
      break
    same = doc_ids[d:] == doc_ids[:-d]
    fwd = center[:-d] & attr[d:] & same          # attribute after the center word
    bwd = center[d:] & attr[:-d] & same          # attribute before it
    counts += np.bincount(ids[d:][fwd], minlength=vocab_size)
    counts += np.bincount(ids[:-d][bwd], minlength=vocab_size)
  return counts


def _term_stats(docs_n: int, vocab: list[str], ids: np.ndarray, doc_ids: np.ndarray,
                groups: dict[str, dict[str, list[str]]], attributes: dict[str, list[str]],
                window: int, top_k: int) -> tuple[dict, dict]:
  index = {w: i for i, w in enumerate(vocab)}
  n_words = max(len(ids), 1)
  attr_masks = {a: _match_terms(ws, index, ids, doc_ids) for a, ws in attributes.items()}
  any_attr = np.zeros(len(ids), bool)
  for m in attr_masks.values():
    any_attr |= m
  terms_out, cooc_out = {}, {}
  for g, cats in groups.items():
    g_terms: dict[str, Any] = {}
    g_cooc: dict[str, Any] = {}
    docs_with = {}
    for c, terms in cats.items():
      per_term = {t: int(_match_terms([t], index, ids, doc_ids).sum()) for t in terms}
      mask = _match_terms(terms, index, ids, doc_ids)
      total = int(mask.sum())
      docs_with[c] = np.unique(doc_ids[mask])
      g_terms[c] = {'count': total, 'per_1k_words': 1000.0 * total / n_words,
                    'docs': int(len(docs_with[c])), 'terms': per_term}
      shares = {}
      for a, am in attr_masks.items():
        with_attr = int((mask & _near(am, doc_ids, window)).sum())
        shares[a] = {'mentions_with_attribute': with_attr,
                     'share': with_attr / total if total else 0.0}
      neigh = _neighbour_counts(mask, any_attr, ids, doc_ids, window, len(vocab))
      top = np.argsort(-neigh, kind='stable')[:top_k]
      shares['top_attribute_words'] = [[vocab[i], int(neigh[i])] for i in top if neigh[i] > 0]
      g_cooc[c] = shares
    names = list(cats)
    pairs = {}
    for i, a in enumerate(names):
      for b in names[i + 1:]:
        pairs[f'{a}+{b}'] = int(len(np.intersect1d(docs_with[a], docs_with[b])))
    g_terms['_docs_mentioning_both'] = pairs
    g_terms['_doc_fraction'] = {c: len(docs_with[c]) / max(docs_n, 1) for c in names}
    terms_out[g] = g_terms
    cooc_out[g] = g_cooc
  return terms_out, cooc_out


# =========================== Duplicates ===============================================

def _normalise(doc: str) -> str:
  return _WS_RE.sub(' ', doc.lower()).strip()


class _UnionFind:

  def __init__(self, n: int):
    self.parent = np.arange(n)

  def find(self, i: int) -> int:
    p = self.parent
    root = i
    while p[root] != root:
      root = p[root]
    while p[i] != root:
      p[i], i = root, p[i]
    return root

  def union(self, i: int, j: int) -> None:
    a, b = self.find(i), self.find(j)
    if a != b:
      self.parent[max(a, b)] = min(a, b)


def _shingle_hashes(docs: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
  """(uint64 hashes of every char k-gram of every doc, doc offsets [n + 1]); a doc shorter
  than k is one shingle."""
  mult = np.uint64(0x9E3779B97F4A7C15)
  chunks, offsets = [], [0]
  for d in docs:
    cp = np.frombuffer(d.encode('utf-32-le'), np.uint32).astype(np.uint64)
    m = max(len(cp) - k + 1, 1)
    h = np.zeros(m, np.uint64)
    for j in range(min(k, len(cp))):
      h = (h ^ cp[j:j + m]) * mult  # FNV-like mixing, wraps mod 2**64
    chunks.append(h)
    offsets.append(offsets[-1] + m)
  return (np.concatenate(chunks) if chunks else np.zeros(0, np.uint64)), np.asarray(offsets)


def _minhash(hashes: np.ndarray, offsets: np.ndarray, num_perm: int, seed: int = 0,
             chunk: int = 65536) -> np.ndarray:
  """[n, num_perm] MinHash signatures (multiply-xorshift hash family), uint32."""
  rng = np.random.default_rng(seed)
  a = rng.integers(1, 2 ** 63, num_perm, dtype=np.uint64) | np.uint64(1)
  b = rng.integers(0, 2 ** 63, num_perm, dtype=np.uint64)
  n = len(offsets) - 1
  sig = np.full((n, num_perm), np.iinfo(np.uint32).max, np.uint32)
  doc_of = np.repeat(np.arange(n), np.diff(offsets))
  for s in range(0, len(hashes), chunk):
    h = hashes[s:s + chunk, None]
    v = ((h ^ b) * a) >> np.uint64(32)
    np.minimum.at(sig, doc_of[s:s + chunk], v.astype(np.uint32))
  return sig


def duplicate_clusters(docs: Sequence[str], *, near_threshold: float = 0.8, shingle: int = 5,
                       num_perm: int = 64, bands: int = 16, max_bucket: int = 50,
                       num_examples: int = 5) -> dict[str, Any]:
  """Clusters of exact and near-duplicate docs: {'exact_first': [n], 'first': [n] (the
  index of the first doc of each doc's exact / near cluster; a dedup pass keeps the docs
  with first[i] == i), 'near_pairs_verified', 'examples'}. Near: MinHash + LSH candidates,
  verified by exact shingle Jaccard >= near_threshold, clusters joined transitively."""
  n = len(docs)
  norm = [_normalise(d) for d in docs]
  first: dict[str, int] = {}
  rep = np.empty(n, np.int64)
  for i, d in enumerate(norm):
    rep[i] = first.setdefault(d, i)
  uniq = np.unique(rep)  # representatives, in order
  uf = _UnionFind(n)
  for i in range(n):
    uf.union(i, int(rep[i]))
  hashes, offsets = _shingle_hashes([norm[i] for i in uniq], shingle)
  examples = []
  verified = 0
  if len(uniq) > 1:
    with np.errstate(over='ignore'):
      sig = _minhash(hashes, offsets, num_perm)
    sets = [np.unique(hashes[offsets[j]:offsets[j + 1]]) for j in range(len(uniq))]
    rows = num_perm // bands
    checked = set()
    for bnd in range(bands):
      band = np.ascontiguousarray(sig[:, bnd * rows:(bnd + 1) * rows])
      keys = band.view(np.dtype((np.void, band.dtype.itemsize * rows))).ravel()
      _, inv, cnt = np.unique(keys, return_inverse=True, return_counts=True)
      order = np.argsort(inv, kind='stable')
      starts = np.concatenate([[0], np.cumsum(cnt)])
      for bkt in np.nonzero(cnt > 1)[0]:
        members = order[starts[bkt]:starts[bkt + 1]]
        if len(members) <= max_bucket:
          cand = [(members[x], members[y]) for x in range(len(members))
                  for y in range(x + 1, len(members))]
        else:  # a huge bucket: compare with its first member only
          cand = [(members[0], m) for m in members[1:]]
        for x, y in cand:
          if (x, y) in checked:
            continue
          checked.add((x, y))
          inter = len(np.intersect1d(sets[x], sets[y], assume_unique=True))
          jac = inter / (len(sets[x]) + len(sets[y]) - inter)
          if jac >= near_threshold:
            verified += 1
            uf.union(int(uniq[x]), int(uniq[y]))
            if len(examples) < num_examples:
              examples.append({'jaccard': round(float(jac), 3), 'a': docs[uniq[x]][:200],
                               'b': docs[uniq[y]][:200]})
  roots = np.asarray([uf.find(i) for i in range(n)], np.int64)
  return {'exact_first': rep, 'first': roots, 'near_pairs_verified': verified,
          'examples': examples}


def duplicate_stats(docs: Sequence[str], *, near_threshold: float = 0.8, shingle: int = 5,
                    num_perm: int = 64, bands: int = 16, max_bucket: int = 50,
                    num_examples: int = 5) -> dict[str, Any]:
  """Exact and near-duplicate rates: the fraction of docs a dedup pass would drop."""
  n = len(docs)
  c = duplicate_clusters(docs, near_threshold=near_threshold, shingle=shingle,
                         num_perm=num_perm, bands=bands, max_bucket=max_bucket,
                         num_examples=num_examples)
  exact_dups = int((c['exact_first'] != np.arange(n)).sum())
  near_dups = int((c['first'] != np.arange(n)).sum())
  return {
      'num_docs': n,
      'exact_duplicates': exact_dups,
      'exact_duplicate_rate': exact_dups / n if n else 0.0,
      'near_duplicates': near_dups,
      'near_duplicate_rate': near_dups / n if n else 0.0,
      'near_pairs_verified': c['near_pairs_verified'],
      'method': (f'exact: lower-cased, whitespace-collapsed text; near: MinHash ({num_perm} '
                 f'hashes, {bands} LSH bands) over char {shingle}-grams, pairs verified by '
                 f'exact shingle Jaccard >= {near_threshold}; near includes exact'),
      'examples': c['examples'],
  }


# =========================== Lengths and scripts ======================================

def length_stats(values: Sequence[float], bins: int = 20) -> dict[str, Any]:
  """mean/std/min/percentiles/max and a histogram of per-document lengths."""
  v = np.asarray(values, np.float64)
  if not len(v):
    return {'count': 0}
  counts, edges = np.histogram(v, bins=bins)
  pct = np.percentile(v, [10, 50, 90, 99])
  return {'count': int(len(v)), 'mean': float(v.mean()), 'std': float(v.std()),
          'min': float(v.min()), 'p10': float(pct[0]), 'p50': float(pct[1]),
          'p90': float(pct[2]), 'p99': float(pct[3]), 'max': float(v.max()),
          'hist_counts': counts.tolist(), 'hist_edges': edges.tolist()}


def _script(ch: str) -> str:
  """The Unicode script of a letter, from its character name (LATIN, CYRILLIC, CJK, ...)."""
  name = unicodedata.name(ch, '')
  return name.split(' ')[0] if name else 'UNKNOWN'


def script_stats(docs: Sequence[str], vocab: list[str], ids: np.ndarray, doc_ids: np.ndarray,
                 stop_threshold: float = 0.15, min_words: int = 5) -> dict[str, Any]:
  """Letters by Unicode script, and per-document language labels (a heuristic)."""
  n = len(docs)
  cps = [np.frombuffer(d.encode('utf-32-le'), np.uint32) for d in docs]
  all_cp = np.concatenate(cps) if cps else np.zeros(0, np.uint32)
  doc_of = np.repeat(np.arange(n), [len(c) for c in cps])
  uniq, inv = np.unique(all_cp, return_inverse=True)
  scripts = sorted({_script(chr(c)) for c in uniq.tolist() if chr(c).isalpha()})
  sid = {s: i for i, s in enumerate(scripts)}
  cp_script = np.asarray([sid[_script(chr(c))] if chr(c).isalpha() else -1
                          for c in uniq.tolist()], np.int64)
  letter_script = cp_script[inv]
  is_letter = letter_script >= 0
  total_letters = int(is_letter.sum())
  per_script = np.bincount(letter_script[is_letter], minlength=len(scripts))
  # Per-doc letters per script -> dominant script.
  per_doc = np.zeros((n, max(len(scripts), 1)), np.int64)
  np.add.at(per_doc, (doc_of[is_letter], letter_script[is_letter]), 1)
  # English stopword ratio per doc.
  stop = np.asarray([w in ENGLISH_STOPWORDS for w in vocab], bool)
  words = np.bincount(doc_ids, minlength=n)
  stops = np.bincount(doc_ids, weights=stop[ids].astype(np.float64) if len(ids) else None,
                      minlength=n)
  ratio = np.where(words > 0, stops / np.maximum(words, 1), 0.0)
  labels: dict[str, int] = {}
  latin = sid.get('LATIN', -1)
  for i in range(n):
    if words[i] < min_words:
      lab = 'short (<%d words)' % min_words
    elif per_doc[i].sum() and per_doc[i].argmax() != latin:
      lab = f'script:{scripts[per_doc[i].argmax()].lower()}'
    elif ratio[i] >= stop_threshold:
      lab = 'en'
    else:
      lab = 'latin, not en'
    labels[lab] = labels.get(lab, 0) + 1
  return {
      'letters_by_script': {s: int(c) for s, c in zip(scripts, per_script)},
      'letter_share_by_script': {s: float(c) / max(total_letters, 1)
                                 for s, c in zip(scripts, per_script)},
      'stopword_ratio': float(stops.sum() / max(words.sum(), 1)),
      'doc_language': dict(sorted(labels.items(), key=lambda kv: -kv[1])),
      'doc_language_share': {k: v / max(n, 1) for k, v in labels.items()},
      'method': (f'HEURISTIC: Unicode script of letters; a doc is "en" when its dominant '
                 f'script is Latin and >= {stop_threshold:.0%} of its words are common '
                 f'English stopwords ({len(ENGLISH_STOPWORDS)} words); docs with < {min_words} '
                 'words are "short". Not a language identifier.'),
  }


# =========================== The audits ===============================================

def audit_text_dataset(texts: Sequence[str] | str, groups: Groups | None = None, *,
                       attributes: Mapping[str, Sequence[str]] | None = None,
                       split: str = 'paragraphs', window: int = 5,
                       near_threshold: float = 0.8, top_k: int = 10,
                       name: str = 'dataset') -> dict[str, Any]:
  """Audit a text dataset: a list of documents, or one corpus string split by `split`
  ('lines', 'paragraphs' or 'file'). Returns a JSON-serialisable dict (kind='dataset')."""
  docs = split_documents(texts, split) if isinstance(texts, str) else [
      str(t).strip() for t in texts if str(t).strip()]
  dropped = 0 if isinstance(texts, str) else len(texts) - len(docs)
  groups_ = validate_groups(DEFAULT_GROUPS if groups is None else groups)
  attrs = validate_groups({'a': DEFAULT_ATTRIBUTES if attributes is None else attributes},
                          'attributes')['a']
  vocab, ids, doc_ids, word_lens = _tokenize(docs)
  terms, cooc = _term_stats(len(docs), vocab, ids, doc_ids, groups_, attrs, window, top_k)
  return {
      'kind': 'dataset',
      'name': name,
      'num_docs': len(docs),
      'empty_docs_dropped': dropped,
      'split': split if isinstance(texts, str) else 'given',
      'num_words': int(len(ids)),
      'num_chars': int(sum(len(d) for d in docs)),
      'groups': groups_,
      'attributes': attrs,
      'window': window,
      'terms': terms,
      'cooccurrence': cooc,
      'duplicates': duplicate_stats(docs, near_threshold=near_threshold),
      'length_chars': length_stats([len(d) for d in docs]),
      'length_words': length_stats(word_lens),
      'language': script_stats(docs, vocab, ids, doc_ids),
  }


def audit_image_labels(labels: np.ndarray, num_classes: int, *, images: np.ndarray | None = None,
                       class_names: Sequence[str] | None = None,
                       name: str = 'images') -> dict[str, Any]:
  """Class balance of integer (or one-hot) labels, and exact-duplicate images (byte hash)."""
  labels = np.asarray(labels)
  if labels.ndim == 2:
    labels = labels.argmax(-1)
  labels = labels.astype(np.int64).ravel()
  if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f'labels must be in [0, {num_classes}), got range '
                     f'[{labels.min()}, {labels.max()}].')
  counts = np.bincount(labels, minlength=num_classes)
  p = counts / max(counts.sum(), 1)
  nz = p[p > 0]
  entropy = float(-(nz * np.log(nz)).sum())
  names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
  out: dict[str, Any] = {
      'kind': 'images',
      'name': name,
      'num_examples': int(len(labels)),
      'num_classes': int(num_classes),
      'class_names': names,
      'class_counts': counts.tolist(),
      'class_share': p.tolist(),
      'empty_classes': [names[i] for i in np.nonzero(counts == 0)[0]],
      'class_imbalance_ratio': (float(counts.max() / counts.min()) if counts.min() > 0
                                else float('inf')),
      'label_entropy': entropy,
      'label_entropy_normalised': entropy / np.log(num_classes) if num_classes > 1 else 1.0,
  }
  if images is not None:
    images = np.asarray(images)
    if len(images) != len(labels):
      raise ValueError(f'{len(images)} images but {len(labels)} labels.')
    first: dict[bytes, int] = {}
    dups = conflicts = 0
    for i, im in enumerate(images):
      h = hashlib.blake2b(np.ascontiguousarray(im).tobytes(), digest_size=16).digest()
      j = first.setdefault(h, i)
      if j != i:
        dups += 1
        conflicts += int(labels[j] != labels[i])
    out.update({'image_duplicates': dups,
                'image_duplicate_rate': dups / max(len(images), 1),
                'duplicate_label_conflicts': conflicts})
  return out
