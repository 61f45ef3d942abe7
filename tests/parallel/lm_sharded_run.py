"""Trains the tiny char LM under given meshes and prints the losses and final params as JSON.

Run as a subprocess by test_sharded_training.py (fake CPU devices must be set before jax
is imported, so it cannot run inside the pytest process):

  python tests/parallel/lm_sharded_run.py --devices 8 --out R.json --workdir W \
      --run base:num_devices=1,data=1 --run fsdp:fsdp=-1,data=1 ...
  # Two processes on localhost (gloo), 2 devices each:
  python tests/parallel/lm_sharded_run.py --devices 2 --num_processes 2 --process_id I \
      --coordinator 127.0.0.1:PORT --run dp:data=-1 ...

`--run NAME:k=v,...` sets `parallel.k=v` (or `model.k=v`, `train.k=v`); `resume_from=OTHER`
starts NAME from a copy of run OTHER's workdir (e.g. one stopped with train.stop_after=2),
so the checkpoint is restored onto NAME's mesh.
`--emulate_hosts H` feeds a single process the concatenation of H per-host data shards,
i.e. exactly the global batches an H-process run sees.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys


def _parse():
  p = argparse.ArgumentParser()
  p.add_argument('--devices', type=int, required=True)
  p.add_argument('--workdir', required=True)
  p.add_argument('--out', default='')
  p.add_argument('--run', action='append', default=[])
  p.add_argument('--num_processes', type=int, default=1)
  p.add_argument('--process_id', type=int, default=0)
  p.add_argument('--coordinator', default='')
  p.add_argument('--emulate_hosts', type=int, default=1)
  p.add_argument('--steps', type=int, default=6)
  return p.parse_args()


ARGS = _parse()
os.environ['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={ARGS.devices}'
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from configs.lm import pydoc_char  # noqa: E402
from experiments import lm  # noqa: E402
from genai.data import sequences  # noqa: E402
from genai.train import workdir as workdir_lib  # noqa: E402


def _config(parallel: dict):
  c = pydoc_char.get_config('runlocal')
  c.model.num_heads = 4         # tensor=4 splits heads (and the MLP) 4 ways
  c.model.dropout = 0.1         # dropout masks must not depend on the sharding
  c.train.batch_size = 8
  c.train.num_steps = ARGS.steps
  c.train.steps_per_call = 2
  c.train.log_every = 1
  c.train.eval_every = 0
  c.train.checkpoint_every = 0
  c.eval.sample_tokens = 0
  c.eval.num_batches = 1
  for k, v in parallel.items():
    block, _, key = k.rpartition('.')
    block = c[block or 'parallel']
    kind = type(block[key]) if block[key] is not None else str
    block[key] = bool(int(v)) if kind is bool else kind(v)
  if ARGS.num_processes > 1:
    c.parallel.distributed = 'on'
    c.parallel.coordinator_address = ARGS.coordinator
    c.parallel.num_processes = ARGS.num_processes
    c.parallel.process_id = ARGS.process_id
  return c


class _ConcatShards:
  """The global batch of an H-host run, in one process: host h's batch is rows
  [h*B/H, (h+1)*B/H) of it."""

  def __init__(self, iters):
    self.iters = iters

  def __next__(self):
    parts = [next(it) for it in self.iters]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def get_state(self):
    return {'shards': [it.get_state() for it in self.iters]}

  def set_state(self, state):
    for it, s in zip(self.iters, state['shards']):
      it.set_state(s)


def _build_task(config, workdir):
  task = lm.build_task(config, workdir)
  h = ARGS.emulate_hosts
  if h > 1:
    text = lm.text_sources.load_text(config.data)
    tok = lm.tokenizers.make_tokenizer(config.tokenizer, text, workdir)
    train_tokens, _ = sequences.split_train_val(tok.encode(text), config.data.val_fraction,
                                                block_size=config.data.block_size)
    task.train_iter = _ConcatShards([sequences.make_train_iterator(
        train_tokens, block_size=config.data.block_size, batch_size=config.train.batch_size // h,
        stride=config.data.stride or config.data.block_size, seed=config.seed,
        shard_index=i, shard_count=h) for i in range(h)])
  return task


def main():
  results = {}
  for spec in ARGS.run:
    name, _, rest = spec.partition(':')
    kv = dict(item.split('=') for item in filter(None, rest.split(',')))
    src = kv.pop('resume_from', None)
    wd = os.path.join(ARGS.workdir, name)
    if src:  # Continue another run's checkpoint on this run's mesh.
      if jax.process_index() == 0:
        shutil.copytree(os.path.join(ARGS.workdir, src), wd, dirs_exist_ok=True)
      multihost_utils.sync_global_devices('copied')
    losses = []

    def capture(line, losses=losses):
      if line.startswith('step '):
        losses.append(float(line.split('| loss ')[1].split(' ')[0]))
      print(line, flush=True)

    state = workdir_lib.run(_config(kv), wd, _build_task, print_fn=capture)
    params = multihost_utils.process_allgather(state['params'], tiled=True)
    flat = {jax.tree_util.keystr(p): np.asarray(x).tolist()
            for p, x in jax.tree_util.tree_leaves_with_path(params)}
    shard_specs = {jax.tree_util.keystr(p): str(x.sharding.spec)
                   for p, x in jax.tree_util.tree_leaves_with_path(state['params'])}
    results[name] = {'losses': losses, 'params': flat, 'specs': shard_specs,
                     'devices': int(sum(1 for _ in jax.devices()))}
  if ARGS.out and jax.process_index() == 0:
    with open(ARGS.out, 'w') as f:
      json.dump(results, f)


if __name__ == '__main__':
  main()
