"""A tiny byte-level text classifier for moderation: P('unsafe') of a text.

  Model: UTF-8 bytes [B, T] -> lower-cased character n-grams (n in `ngrams`, a space
         marks both ends of the text) hashed into `num_buckets` embeddings, mean-pooled
         over the text, dense(hidden)-relu, dense(2) logits (0 = safe, 1 = unsafe).

A fastText-style bag of hashed n-grams: no tokenizer, any language's bytes, a few thousand
texts per second per core, and it learns from a few hundred labelled lines. It sees word
pieces, not word order, so it is a first-pass signal for human review, not a judge.

Train it with the shared loop (experiments/text_classifier.py); use a trained workdir with

  score = load_classifier('runs/moderation_clf')
  score(['you are an idiot', 'have a nice day'])   # -> float32 [2] probabilities

A text is scored sentence by sentence (sentences longer than the trained `max_len` bytes
in half-overlapping windows) and gets its highest score, so one abusive sentence in a long
output still counts.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Sequence

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np

from genai.data import batching

DEFAULT_DATA = os.path.join(os.path.dirname(__file__), 'data', 'moderation_tiny.jsonl')
EXPERIMENT = 'text_classifier'
_SPACE = 32
_FNV_OFFSET, _FNV_PRIME = 2166136261, 16777619


# ------------------------------------------------------------------ text -> bytes.


def _utf8(text: str) -> bytes:
  # NUL is the padding byte; lone surrogates (invalid UTF-8) become '?'.
  return text.encode('utf-8', errors='replace').replace(b'\x00', b'')


def encode_texts(texts: Sequence[str], max_len: int) -> np.ndarray:
  """UTF-8 bytes of each text, truncated to `max_len`, zero-padded: int32 tokens_NT."""
  if max_len < 1:
    raise ValueError(f'max_len={max_len} must be >= 1.')
  if isinstance(texts, str):
    raise TypeError('encode_texts takes a list of texts, not one string; wrap it: [text].')
  tokens_NT = np.zeros((len(texts), max_len), np.int32)
  for i, text in enumerate(texts):
    b = _utf8(text)[:max_len]
    tokens_NT[i, :len(b)] = np.frombuffer(b, np.uint8)
  return tokens_NT


_SENTENCE_END = re.compile(r'(?<=[.!?])\s+|\n+')


def encode_windows(texts: Sequence[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
  """(tokens_WT, owner_W): the rows a text is scored on, and the text each came from.

  A text is split into sentences (after . ! ? or at line breaks), and a sentence longer
  than `max_len` bytes into windows of `max_len` with stride max_len/2, so one abusive
  sentence in a long output is scored on its own rather than averaged away. A text with
  no non-blank sentence gets no rows (its score is 0).
  """
  stride = max(max_len // 2, 1)
  rows, owner = [], []
  for i, text in enumerate(texts):
    for sentence in _SENTENCE_END.split(text):
      b = _utf8(sentence.strip())
      start = 0
      while b:
        rows.append(b[start:start + max_len])
        owner.append(i)
        if start + max_len >= len(b):
          break
        start += stride
  tokens_WT = np.zeros((len(rows), max_len), np.int32)
  for j, b in enumerate(rows):
    tokens_WT[j, :len(b)] = np.frombuffer(b, np.uint8)
  return tokens_WT, np.asarray(owner, np.int64)


# ----------------------------------------------------------------------- the model.


class TextClassifier(nn.Module):
  """tokens_BT (int32 bytes, 0 = padding) -> logits_B2 (class 1 = unsafe)."""
  ngrams: Sequence[int] = (1, 2, 3, 4, 5)
  num_buckets: int = 1 << 14
  embed_dim: int = 32
  hidden_dim: int = 32

  def ngram_ids(self, tokens_BT: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(ids_BG bucket of every n-gram, mask_BG real n-grams), G = len(ngrams) * (T + 1)."""
    b, t = tokens_BT.shape
    real_BT = tokens_BT > 0
    x = tokens_BT.astype(jnp.uint32)
    x = jnp.where((x >= 65) & (x <= 90), x + 32, x)            # ASCII lower case
    x = jnp.where(real_BT, x, _SPACE)                          # padding reads as a space
    space_B1 = jnp.full((b, 1), _SPACE, jnp.uint32)
    x_BS = jnp.concatenate([space_B1, x], axis=1)              # a space before the text
    # An n-gram starting at s is real if s is the leading space (of a non-empty text) or
    # a real byte; n-grams may run into the trailing padding (the end-of-text boundary).
    start_BS = jnp.concatenate([real_BT[:, :1], real_BT], axis=1)
    ids, masks = [], []
    for n in self.ngrams:
      xp = jnp.concatenate([x_BS, jnp.full((b, n - 1), _SPACE, jnp.uint32)], axis=1)
      h = jnp.full((b, t + 1), _FNV_OFFSET ^ n, jnp.uint32)   # FNV-1a, seeded by n
      for k in range(n):
        h = (h ^ xp[:, k:k + t + 1]) * jnp.uint32(_FNV_PRIME)
      ids.append((h % jnp.uint32(self.num_buckets)).astype(jnp.int32))
      masks.append(start_BS)
    return jnp.concatenate(ids, axis=1), jnp.concatenate(masks, axis=1)

  @nn.compact
  def __call__(self, tokens_BT: jax.Array) -> jax.Array:
    ids_BG, mask_BG = self.ngram_ids(tokens_BT)
    emb_BGD = nn.Embed(self.num_buckets, self.embed_dim,
                       embedding_init=nn.initializers.normal(0.1), name='ngram_embed')(ids_BG)
    mask_BG1 = mask_BG[..., None].astype(emb_BGD.dtype)
    count_B1 = jnp.maximum(jnp.sum(mask_BG1, axis=1), 1.0)
    pooled_BD = jnp.sum(emb_BGD * mask_BG1, axis=1) / count_B1
    h_BH = nn.relu(nn.Dense(self.hidden_dim, name='hidden')(pooled_BD))
    return nn.Dense(2, name='logits')(h_BH)


def make_model(model_cfg: Any) -> TextClassifier:
  """A TextClassifier from `config.model` (ngrams, num_buckets, embed_dim, hidden_dim)."""
  ngrams = tuple(int(n) for n in model_cfg.get('ngrams', (1, 2, 3, 4, 5)))
  if not ngrams or min(ngrams) < 1:
    raise ValueError(f'model.ngrams={ngrams} must be a non-empty list of positive ints.')
  sizes = {k: int(model_cfg.get(k, d)) for k, d in
           (('num_buckets', 1 << 14), ('embed_dim', 32), ('hidden_dim', 32))}
  for k, v in sizes.items():
    if v < 1:
      raise ValueError(f'model.{k}={v} must be >= 1.')
  return TextClassifier(ngrams=ngrams, **sizes)


# ------------------------------------------------------------------------- data.


def load_jsonl(path: str | None = None) -> tuple[list[str], np.ndarray]:
  """(texts, int32 labels [N]) of a JSONL file of {"text": str, "label": 0 | 1} lines
  (default: the shipped toy set). Blank lines are skipped; bad lines name their number."""
  path = path or DEFAULT_DATA
  if not os.path.exists(path):
    raise FileNotFoundError(f'data.path={path!r} does not exist; give a JSONL file of '
                            '{"text": ..., "label": 0 or 1} lines (or leave it empty for '
                            'the shipped toy set).')
  texts, labels = [], []
  with open(path, encoding='utf-8') as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f'{path}:{lineno}: not valid JSON ({e.msg}).') from None
      if not isinstance(row, dict) or not isinstance(row.get('text'), str):
        raise ValueError(f'{path}:{lineno}: each line must be an object with a string '
                         '"text" and a "label" of 0 or 1.')
      label = row.get('label')
      if label not in (0, 1) or isinstance(label, bool):
        raise ValueError(f'{path}:{lineno}: "label" must be 0 (safe) or 1 (unsafe), got '
                         f'{label!r}.')
      texts.append(row['text'])
      labels.append(int(label))
  labels_N = np.asarray(labels, np.int32)
  if len(set(labels)) < 2:
    raise ValueError(f'{path} needs examples of both labels 0 and 1; found '
                     f'{sorted(set(labels))} in {len(labels)} lines.')
  return texts, labels_N


def split_indices(labels_N: np.ndarray, eval_fraction: float, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
  """(train, eval) indices: a seeded split stratified by label (same share of each class)."""
  if not 0.0 < eval_fraction < 1.0:
    raise ValueError(f'data.eval_fraction={eval_fraction} must be in (0, 1).')
  rng = np.random.default_rng(seed)
  train, held = [], []
  for c in np.unique(labels_N):
    idx = rng.permutation(np.flatnonzero(labels_N == c))
    k = min(max(int(round(eval_fraction * len(idx))), 1), len(idx) - 1)
    held.append(idx[:k])
    train.append(idx[k:])
  return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


class _Gather:
  def __init__(self, tokens_NT: np.ndarray, labels_N: np.ndarray):
    self.tokens_NT, self.labels_N = tokens_NT, labels_N

  def __call__(self, idx: np.ndarray) -> dict[str, np.ndarray]:
    return {'tokens': self.tokens_NT[idx], 'label': self.labels_N[idx]}


def make_text_iterator(tokens_NT: np.ndarray, labels_N: np.ndarray, *, batch_size: int,
                       seed: int, shard_index: int | None = None,
                       shard_count: int | None = None) -> grain.DatasetIterator:
  """Endless shuffled {'tokens': int32 [B, T], 'label': int32 [B]} batches (per host), with
  get_state()/set_state() for exact resume."""
  shard_index, shard_count = batching.resolve_shard(shard_index, shard_count)
  per_host = batching.items_per_shard(len(tokens_NT), shard_index, shard_count)
  if per_host < batch_size:
    raise ValueError(f'this host has {per_host} training texts but batch_size={batch_size}; '
                     'use a smaller train.batch_size or more data.')
  ds = batching.index_batches(len(tokens_NT), batch_size=batch_size, seed=seed,
                              shard_index=shard_index, shard_count=shard_count)
  ds = ds.map(_Gather(np.ascontiguousarray(tokens_NT), np.asarray(labels_N, np.int32)))
  return iter(ds.to_iter_dataset(batching.NO_PREFETCH))


# ------------------------------------------------------------- a trained workdir.


@dataclasses.dataclass
class TextScorer:
  """callable(texts) -> float32 [N] P(unsafe), from a trained workdir (`load_classifier`)."""
  model: TextClassifier
  params: Any
  max_len: int
  batch_size: int
  workdir: str
  step: int

  def __post_init__(self):
    model = self.model
    self._probs = jax.jit(lambda p, x: jax.nn.softmax(model.apply({'params': p}, x))[:, 1])
    self.params = jax.device_put(self.params)

  def probs_of_tokens(self, tokens_WT: np.ndarray) -> np.ndarray:
    """P(unsafe) of each row; rows are padded to a few fixed batch shapes (few compiles)."""
    n = len(tokens_WT)
    if n == 0:
      return np.zeros((0,), np.float32)
    size = self.batch_size if n >= self.batch_size else max(8, 1 << (n - 1).bit_length())
    out = [np.asarray(self._probs(self.params, x))[:real]
           for real, (x,) in batching.fixed_size_batches((tokens_WT,), size)]
    return np.concatenate(out).astype(np.float32)

  def __call__(self, texts: Sequence[str]) -> np.ndarray:
    if isinstance(texts, str):
      raise TypeError('the classifier takes a list of texts, not one string; wrap it: [text].')
    tokens_WT, owner_W = encode_windows(texts, self.max_len)
    probs_W = self.probs_of_tokens(tokens_WT)
    probs_N = np.zeros((len(texts),), np.float32)
    np.maximum.at(probs_N, owner_W, probs_W)  # a text scores its worst sentence
    return probs_N


def load_classifier(workdir: str, step: int | None = None, batch_size: int = 256
                    ) -> TextScorer:
  """The newest (or given) checkpoint of a workdir trained by experiments/text_classifier.py,
  as callable(texts) -> float32 [N] P(unsafe)."""
  from genai.train import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  config = workdir_lib.load_config(workdir, EXPERIMENT)
  model = make_model(config.model)
  params, step = workdir_lib.restore_params(
      workdir, step, train_hint=f'train first: python -m experiments.text_classifier '
      f'--workdir {workdir} --config configs/text_classifier/moderation.py')
  return TextScorer(model=model, params=params, max_len=int(config.data.max_len),
                    batch_size=int(batch_size), workdir=os.path.abspath(workdir),
                    step=int(step))
