"""genai.data.packed_windows: windows of prepared shards are the packed token stream, with
the loss masked across documents; every epoch reads each window once (split over hosts);
a resumed iterator (in-process, in worker processes, or through the training loop's
checkpoints) is bit-identical to an uninterrupted one."""
import json

import numpy as np
import pytest

from genai.data import packed_windows
from genai.data import prepare
from genai.data import token_shards


def random_docs(n, seed=0):
  rng = np.random.default_rng(seed)
  letters = np.array(list('abcdefghijklmnopqrstuvwxyz .,;'))
  return [''.join(rng.choice(letters, rng.integers(5, 120))) for _ in range(n)]


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  """400 random documents (one per line) prepared in small records and several shards."""
  d = tmp_path_factory.mktemp('packed')
  docs = random_docs(400)
  (d / 'docs.txt').write_text('\n'.join(docs) + '\n')
  prepare.prepare_text(str(d / 'out'), inputs=[str(d / 'docs.txt')], doc_split='line',
                       chunk_tokens=50, piece_bytes=3000, workers=1)
  tok = token_shards.load_prepared_tokenizer(str(d / 'out'))
  stream, starts = [], []
  for doc in docs:
    starts.append(len(stream))
    stream += tok.encode(doc).tolist() + tok.encode('\n').tolist()
  return str(d / 'out'), np.array(stream), set(starts), tok


def window_index(windows):
  """{window bytes: index} over every window (random text: all distinct)."""
  batch = windows.gather(np.arange(len(windows)))
  rows = {batch['inputs'][i].tobytes() + batch['targets'][i][-1:].tobytes(): i
          for i in range(len(windows))}
  assert len(rows) == len(windows)
  return rows


def ids_of(batches, index):
  return [index[b['inputs'][i].tobytes() + b['targets'][i][-1:].tobytes()]
          for b in batches for i in range(len(b['inputs']))]


@pytest.mark.parametrize('block', [7, 64, 130])
def test_windows_are_the_packed_stream(corpus, block):
  root, stream, starts, _ = corpus
  m = token_shards.read_manifest(root, 'train')
  assert len(m['shards']) > 3 and m['chunk_tokens'] == 50
  w = packed_windows.PackedWindows(root, 'train', block_size=block, segment_ids=True)
  assert len(w) == (len(stream) - 1) // block
  batch = w.gather(np.arange(len(w)))
  for i in range(len(w)):
    win = stream[i * block:i * block + block + 1]
    np.testing.assert_array_equal(batch['inputs'][i], win[:-1])
    np.testing.assert_array_equal(batch['targets'][i], win[1:])
    is_start = np.array([i * block + t in starts for t in range(block + 1)])
    # The loss skips exactly the targets that open a new document.
    np.testing.assert_array_equal(batch['mask'][i], ~is_start[1:])
    np.testing.assert_array_equal(batch['segment_ids'][i],
                                  1 + np.cumsum(np.r_[False, is_start[1:block]]))
  assert batch['inputs'].dtype == np.int32 and batch['mask'].dtype == np.int32
  single = w[len(w) - 1]
  np.testing.assert_array_equal(single['inputs'], batch['inputs'][-1])


def test_an_epoch_reads_every_window_once_split_over_hosts(corpus):
  root, _, _, _ = corpus
  w = packed_windows.PackedWindows(root, 'train', block_size=16)
  index = window_index(w)
  n, batch = len(w), 8
  epochs = {}
  for host in (0, 1):
    it = iter(packed_windows.make_train_dataset(w, batch_size=batch, seed=5, shard_index=host,
                                                shard_count=2))
    share = len(range(host, n, 2))
    ids = ids_of([next(it) for _ in range(-(-2 * share // batch) + 1)], index)
    epochs[host] = (ids[:share], ids[share:2 * share])
  for e in (0, 1):
    both = epochs[0][e] + epochs[1][e]
    assert sorted(both) == list(range(n))  # none twice, none missing
  assert epochs[0][0] != epochs[0][1]  # a fresh permutation every epoch
  assert set(epochs[0][0]) != set(epochs[0][1])  # ... of all windows, not a fixed half


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_resumed_iterator_is_bit_identical(corpus):
  root, _, _, _ = corpus
  it, val, info = packed_windows.prepared_lm_data(root, block_size=32, batch_size=4, seed=1,
                                                  val_split=None, segment_ids=True)
  assert val == [] and info.val_manifest is None
  first = _take(it, 5)
  state = json.loads(json.dumps(it.get_state()))  # as the checkpoint stores it
  rest = _take(it, 30)
  again, _, _ = packed_windows.prepared_lm_data(root, block_size=32, batch_size=4, seed=1,
                                                val_split=None, segment_ids=True)
  again.set_state(state)
  _assert_same(_take(again, 30), rest)
  fresh, _, _ = packed_windows.prepared_lm_data(root, block_size=32, batch_size=4, seed=1,
                                                val_split=None, segment_ids=True)
  _assert_same(_take(fresh, 5), first)
  other, _, _ = packed_windows.prepared_lm_data(root, block_size=32, batch_size=4, seed=2,
                                                val_split=None)
  assert not np.array_equal(next(other)['inputs'], first[0]['inputs'])


@pytest.mark.slow  # worker processes
def test_worker_processes_give_the_same_batches_and_resume(corpus):
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags
  root, _, _, _ = corpus
  kw = dict(block_size=32, batch_size=4, seed=3, val_split=None)
  plain, _, _ = packed_windows.prepared_lm_data(root, **kw)
  want = _take(plain, 12)
  it, _, _ = packed_windows.prepared_lm_data(root, num_workers=2, prefetch=2, **kw)
  try:
    got = _take(it, 5)
    state = it.get_state()
    got += _take(it, 7)
  finally:
    it.close()
  _assert_same(got, want)
  resumed, _, _ = packed_windows.prepared_lm_data(root, num_workers=2, **kw)
  try:
    resumed.set_state(state)
    _assert_same(_take(resumed, 7), want[5:])
  finally:
    resumed.close()
  threads, _, _ = packed_windows.prepared_lm_data(root, prefetch=3, **kw)
  _assert_same(_take(threads, 12), want)


def test_prepared_lm_data_validation_and_info(tmp_path):
  docs = random_docs(300, seed=1)
  (tmp_path / 'd.txt').write_text('\n'.join(docs))
  prepare.prepare_text(str(tmp_path / 'o'), inputs=[str(tmp_path / 'd.txt')], doc_split='line',
                       val_fraction=0.3, workers=1)
  it, val, info = packed_windows.prepared_lm_data(str(tmp_path / 'o'), block_size=16,
                                                  batch_size=4, seed=0, eval_batch_size=8,
                                                  eval_max_batches=3)
  vm = info.val_manifest
  assert len(val) == 3 and all(b['inputs'].shape == (8, 16) for b in val)
  w = packed_windows.PackedWindows(str(tmp_path / 'o'), 'validation', block_size=16)
  _assert_same(val, [w.gather(np.arange(8 * b, 8 * b + 8)) for b in range(3)])
  assert info.val_windows == len(w) == (vm['num_tokens'] - 1) // 16
  assert info.chars_per_token == pytest.approx(vm['num_chars'] / vm['num_tokens'])
  train = packed_windows.PackedWindows(str(tmp_path / 'o'), 'train', block_size=16)
  first_train_doc = next(d for d in docs if not prepare.route(d, 0.3))
  assert info.prompt == info.tokenizer.decode(train[0]['inputs'][:1]) == first_train_doc[0]
  assert info.train_windows == len(train)
  assert next(it)['inputs'].shape == (4, 16)
  _, all_val, _ = packed_windows.prepared_lm_data(str(tmp_path / 'o'), block_size=16,
                                                  batch_size=4, seed=0)
  assert len(all_val) == len(w) // 4


def test_the_training_loop_checkpoints_the_iterator(corpus, tmp_path):
  """loop.train saves the iterator state in each checkpoint: a run stopped and resumed ends
  in the state of an uninterrupted one (the state digests every batch, in order)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from genai.train import loop  # pylint: disable=g-import-not-at-top
  root, _, _, _ = corpus

  def task():
    it, _, _ = packed_windows.prepared_lm_data(root, block_size=16, batch_size=4, seed=7,
                                               val_split=None)

    def step(state, batch, rng):
      del rng
      digest = jnp.sum(batch['inputs'] * (jnp.arange(16) + 1)) + jnp.sum(batch['mask'])
      return {'acc': (state['acc'] * 31 + digest) % 1_000_003}, {'loss': jnp.float32(0)}

    return loop.Task(init_state=lambda rng: {'acc': jnp.int32(0)}, train_step=step,
                     train_iter=it)

  kw = dict(num_steps=12, log_every=100, eval_every=0, checkpoint_every=100,
            print_fn=lambda _: None)
  whole = loop.train(task(), workdir=str(tmp_path / 'whole'), **kw)
  loop.train(task(), workdir=str(tmp_path / 'cut'), stop_after=5, **kw)
  resumed = loop.train(task(), workdir=str(tmp_path / 'cut'), **kw)
  assert int(resumed['acc']) == int(whole['acc']) != 0
