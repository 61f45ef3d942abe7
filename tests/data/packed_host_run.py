"""One host of tests/data/test_packed_multihost.py: reads prepared windows as jax process
`--process_id` of `--num_processes` (gloo on localhost).

--phase 1: reads --batches batches, saves the iterator state after them (as a checkpoint
  would), prints READY and keeps reading until it is killed.
--phase 2: restores that state and reads --batches more.
Each phase writes the window ids it read (committed ones only for phase 1) to --out.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..'))


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--root')
  p.add_argument('--process_id', type=int)
  p.add_argument('--num_processes', type=int, default=2)
  p.add_argument('--coordinator')
  p.add_argument('--phase', type=int)
  p.add_argument('--batches', type=int)
  p.add_argument('--block', type=int)
  p.add_argument('--batch', type=int)
  p.add_argument('--state')
  p.add_argument('--out')
  a = p.parse_args()

  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(a.coordinator, num_processes=a.num_processes,
                             process_id=a.process_id)
  from genai.data import packed_windows  # pylint: disable=g-import-not-at-top

  # Shard index and count are not passed: they come from jax.process_index()/count().
  it, _, _ = packed_windows.prepared_lm_data(a.root, block_size=a.block, batch_size=a.batch,
                                             seed=11, val_split=None)
  windows = packed_windows.PackedWindows(a.root, 'train', block_size=a.block)
  every = windows.gather(np.arange(len(windows)))
  index = {every['inputs'][i].tobytes() + every['targets'][i][-1:].tobytes(): i
           for i in range(len(windows))}

  def ids(batch):
    return [index[batch['inputs'][i].tobytes() + batch['targets'][i][-1:].tobytes()]
            for i in range(len(batch['inputs']))]

  if a.phase == 2:
    with open(a.state) as f:
      it.set_state(json.load(f))
  read = [i for _ in range(a.batches) for i in ids(next(it))]
  result = {'process_index': jax.process_index(), 'process_count': jax.process_count(),
            'ids': read}
  if a.phase == 1:
    tmp = a.state + '.tmp'
    with open(tmp, 'w') as f:
      json.dump(it.get_state(), f)
    os.replace(tmp, a.state)
  with open(a.out + '.tmp', 'w') as f:
    json.dump(result, f)
  os.replace(a.out + '.tmp', a.out)
  if a.phase == 1:
    print('READY', flush=True)
    while True:  # training goes on past the checkpoint until the host is killed
      next(it)
      time.sleep(0.01)


if __name__ == '__main__':
  main()
