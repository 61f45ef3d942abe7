"""Tests for genai.data.sequences."""

import json

import numpy as np
import pytest

from genai.data import sequences


def test_window_content_and_counts():
  tokens = np.arange(100, dtype=np.int64)
  for block, stride in [(8, 8), (8, 1), (8, 3), (99, 1)]:
    w = sequences.TokenWindows(tokens, block_size=block, stride=stride)
    assert len(w) == (100 - block - 1) // stride + 1
    for i in sorted({0, min(1, len(w) - 1), len(w) - 1}):
      ex = w[i]
      assert ex['inputs'].dtype == np.int32 and ex['inputs'].shape == (block,)
      np.testing.assert_array_equal(ex['inputs'], np.arange(i * stride, i * stride + block))
      np.testing.assert_array_equal(ex['targets'], ex['inputs'] + 1)
    batch = w.gather([0, len(w) - 1])
    np.testing.assert_array_equal(batch['inputs'][1], w[len(w) - 1]['inputs'])
    np.testing.assert_array_equal(batch['targets'], batch['inputs'] + 1)
  # stride == block_size: packed blocks that tile the stream without overlap.
  w = sequences.TokenWindows(tokens, block_size=10, stride=10)
  assert len(w) == 9
  np.testing.assert_array_equal(
      np.concatenate([w[i]['inputs'] for i in range(len(w))]), np.arange(90))
  with pytest.raises(IndexError):
    w[9]


def test_block_too_long():
  with pytest.raises(ValueError, match=r'block_size \+ 1 = 11 tokens but the '
                     'token stream has only 10.*smaller data.block_size'):
    sequences.TokenWindows(np.arange(10), block_size=10, stride=1)


def test_split_train_val():
  tokens = np.arange(1000)
  train, val = sequences.split_train_val(tokens, 0.1)
  assert len(train) == 900 and len(val) == 100
  np.testing.assert_array_equal(np.concatenate([train, val]), tokens)
  train, val = sequences.split_train_val(tokens, 0.0, block_size=64)
  assert len(train) == 1000 and len(val) == 0
  with pytest.raises(ValueError, match='leaves 10 validation tokens'):
    sequences.split_train_val(tokens, 0.01, block_size=64)
  with pytest.raises(ValueError, match=r'must be in \[0, 1\)'):
    sequences.split_train_val(tokens, 1.0)


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_train_iterator_batches_and_resume():
  tokens = np.arange(5000, dtype=np.int32) % 997
  kw = dict(block_size=16, batch_size=4, stride=1, seed=3, shard_index=0,
            shard_count=1)
  it = sequences.make_train_iterator(tokens, **kw)
  first = _take(it, 5)
  for b in first:
    assert set(b) == {'inputs', 'targets'}
    assert b['inputs'].shape == (4, 16) and b['inputs'].dtype == np.int32
    np.testing.assert_array_equal(b['targets'][:, :-1], b['inputs'][:, 1:])
  state = it.get_state()
  state = json.loads(json.dumps(state))  # Must survive a JSON round trip.
  expected = _take(it, 3)
  fresh = sequences.make_train_iterator(tokens, **kw)
  fresh.set_state(state)
  for want, got in zip(expected, _take(fresh, 3)):
    for k in want:
      np.testing.assert_array_equal(want[k], got[k])
  # Same seed: same stream from scratch; another seed: another order.
  again = _take(sequences.make_train_iterator(tokens, **kw), 5)
  np.testing.assert_array_equal(again[0]['inputs'], first[0]['inputs'])
  other = _take(sequences.make_train_iterator(tokens, **{**kw, 'seed': 4}), 1)
  assert not np.array_equal(other[0]['inputs'], first[0]['inputs'])


def test_train_iterator_reshuffles_each_epoch():
  # Tokens 0..36 with block 4, stride 4: 9 windows whose first token (0, 4,
  # ..., 32) identifies them; batch 3 -> one epoch per 3 batches.
  tokens = np.arange(37, dtype=np.int32)
  it = sequences.make_train_iterator(tokens, block_size=4, batch_size=3,
                                     stride=4, seed=0, shard_index=0,
                                     shard_count=1)
  epochs = []
  for _ in range(4):
    ids = np.concatenate([b['inputs'][:, 0] for b in _take(it, 3)]).tolist()
    assert sorted(ids) == list(range(0, 36, 4))  # Each epoch is a permutation.
    epochs.append(ids)
  assert len({tuple(e) for e in epochs}) > 1, 'order should change per epoch'


def test_shards_are_disjoint():
  tokens = np.arange(2001, dtype=np.int32)
  seen = []
  for shard in range(2):
    it = sequences.make_train_iterator(tokens, block_size=10, batch_size=5,
                                       stride=10, seed=0, shard_index=shard,
                                       shard_count=2)
    # 200 windows / 2 shards = 100 per shard = 20 batches per epoch.
    starts = np.concatenate([b['inputs'][:, 0] for b in _take(it, 20)])
    assert len(set(starts.tolist())) == 100
    seen.append(set(starts.tolist()))
  assert not seen[0] & seen[1]
  assert seen[0] | seen[1] == set(range(0, 2000, 10))


def test_shard_errors():
  with pytest.raises(ValueError, match='shard_index=2 must be in'):
    sequences.make_train_iterator(np.arange(100), block_size=4, batch_size=2,
                                  stride=1, seed=0, shard_index=2, shard_count=2)
  with pytest.raises(ValueError, match='this host gets none'):
    sequences.make_train_iterator(np.arange(5), block_size=4, batch_size=2,
                                  stride=4, seed=0, shard_index=1, shard_count=2)


def test_default_shard_uses_jax_process():
  it = sequences.make_train_iterator(np.arange(100), block_size=4,
                                     batch_size=2, stride=1, seed=0)
  assert next(it)['inputs'].shape == (2, 4)


def test_eval_batches():
  tokens = np.arange(1000, dtype=np.int32)
  # 1000 tokens, block 10 -> 99 windows -> 12 full batches of 8.
  all_b = sequences.eval_batches(tokens, block_size=10, batch_size=8, max_batches=0)
  assert len(all_b) == 12
  again = sequences.eval_batches(tokens, block_size=10, batch_size=8, max_batches=0)
  for a, b in zip(all_b, again):
    np.testing.assert_array_equal(a['inputs'], b['inputs'])
  starts = np.concatenate([b['inputs'][:, 0] for b in all_b])
  np.testing.assert_array_equal(starts, np.arange(0, 960, 10))
  np.testing.assert_array_equal(all_b[0]['targets'], all_b[0]['inputs'] + 1)
  assert len(sequences.eval_batches(tokens, block_size=10, batch_size=8,
                                    max_batches=3)) == 3
  # Fewer windows than a batch: one smaller batch rather than nothing.
  small = sequences.eval_batches(tokens[:35], block_size=10, batch_size=8,
                                 max_batches=0)
  assert len(small) == 1 and small[0]['inputs'].shape == (3, 10)
  with pytest.raises(ValueError, match='smaller data.block_size'):
    sequences.eval_batches(tokens[:10], block_size=10, batch_size=8,
                           max_batches=0)
