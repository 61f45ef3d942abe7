"""An autoregressive image transformer (ImageGPT over quantised pixel tokens) on the shared loop.

Train (re-running the same command resumes from the newest checkpoint):
  python -m experiments.image_gpt --config configs/image_gpt/digits.py --workdir runs/igpt
Sample from a trained workdir (a PNG grid and an .npz; class-conditional models take
--label, -1 cycles the classes):
  python -m experiments.image_gpt --workdir runs/igpt --sample --num_images 64 --label 3

The model is the LM family's GPT (genai/models/transformer.py) over the tokens of
genai/data/image_tokens.py (pixels quantised to config.tokens.levels grey levels, each
tokens.patch x tokens.patch block one token), with the class as a prefix token; sampling
is the LM's KV-cache decoder (genai/sample/decode.py). Every evaluation scores the whole
eval split: the negative log-likelihood of the quantised images in nats per image and bits
per dimension (exact: an autoregressive model has no bound to estimate), and writes a grid
of samples to TensorBoard and as PNG + .npz under <workdir>/samples/.
"""
from __future__ import annotations

import os
from typing import Any

from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from genai.data import batching
from genai.data import image_shards
from genai.data import images as images_lib
from genai.evaluation import sample_evaluator
from genai.families import resolve_num_classes
# The family's reading side, re-exported: experiments.image_gpt.sample / load_workdir.
from genai.families.image_gpt import (ImageGpt, bits_per_dim, load_workdir, make_model,  # pylint: disable=unused-import
                                      sample, sample_labels, state_fns)
from genai.objectives import image_gpt as objectives
from genai.parallel import mesh as mesh_lib
from genai.sample import image_files
from genai.train import cli
from genai.train import loop
from genai.train import supervised
from genai.train import workdir as workdir_lib


def token_batch(net: ImageGpt, images, labels) -> dict[str, jax.Array]:
  """{'tokens' [B, N], 'prefix' [B]} of a batch of images (labels None: unconditional)."""
  return {'tokens': net.tokens(images), 'prefix': net.prefix(labels, images.shape[0])}


def make_evaluator(config: ml_collections.ConfigDict, net: ImageGpt, eval_images: np.ndarray,
                   eval_labels: np.ndarray | None, workdir: str):
  """evaluate(state, step) -> NLL / bits per dim of the eval split and a sample grid."""
  ec, sc = config.eval, config.sample
  n = int(ec.num_examples) or len(eval_images)
  arrays = (eval_images[:n],) + (() if eval_labels is None else (eval_labels[:n],))
  batches = batching.fixed_size_batches(arrays, min(int(ec.batch_size), n))

  @jax.jit
  def nll_batch(params, x, y):
    b = token_batch(net, x, y)
    return objectives.image_nll(net.model, params, b['tokens'], b['prefix'],
                                net.num_image_tokens)[0]

  def sample_fn(state, num, rng):
    return net.sample(state['params'], rng, sample_labels(num, net.num_classes),
                      num_images=num, temperature=sc.temperature, top_k=sc.top_k,
                      top_p=sc.top_p)

  # FID/KID of samples when eval.fid_samples > 0.
  fid_eval = sample_evaluator.from_config(config, sample_fn, value_range=net.value_range,
                                          key_prefix='eval/')

  def evaluate(state, step):
    params = state['params']
    parts = [nll_batch(params, a[0], a[1] if net.num_classes else None)
             for _, a in batches]
    nll = np.concatenate([np.asarray(p)[:real] for p, (real, _) in zip(parts, batches)])
    results: dict[str, Any] = {'eval/nll_nats': float(np.mean(nll)),
                               'eval/bits_per_dim': float(bits_per_dim(np.mean(nll), net))}
    if fid_eval:
      results.update(fid_eval(state, step))
    if ec.num_samples:
      labels = sample_labels(int(ec.num_samples), net.num_classes)
      x = net.sample(params, jax.random.key(config.seed + 1), labels,
                     num_images=int(ec.num_samples), temperature=sc.temperature,
                     top_k=sc.top_k, top_p=sc.top_p)
      results['images/samples'] = image_files.make_grid(
          image_files.to_uint8(x, net.value_range))[None]
      if jax.process_index() == 0:
        image_files.write_samples(os.path.join(workdir, 'samples'), f'step_{step:07d}', x,
                                  net.value_range, labels)
    return results

  return evaluate


# =========================== The task for the shared loop ==============================

def build_task(config: ml_collections.ConfigDict, workdir: str) -> loop.Task:
  tc = config.train
  data = image_shards.load_image_data(
      config.data, batch_size=mesh_lib.local_batch_size(tc.batch_size), seed=config.seed)
  images_lib.check_value_range(data.eval_images, data.value_range)
  num_classes = resolve_num_classes(config, data.num_classes)
  if num_classes and data.eval_labels is None:
    raise ValueError('class-conditional eval needs eval labels; the eval split has none.')
  net = make_model(config, data.image_shape, num_classes, data.value_range)
  workdir_lib.save_image_info(workdir, data.image_shape, data.value_range, num_classes)

  init_state, (tx, schedule) = state_fns(config, net)
  step_fn = supervised.make_train_step(
      objectives.make_loss_fn(net.model, net.num_image_tokens), tx, schedule)

  def train_step(state, batch, rng):
    labels = batch['label'] if num_classes else None
    state, metrics = step_fn(state, token_batch(net, batch['image'], labels), rng)
    metrics['bits_per_dim'] = metrics['loss'] * net.seq_len / (net.num_dims * jnp.log(2.0))
    return state, metrics

  evaluate = make_evaluator(config, net, data.eval_images, data.eval_labels, workdir)
  cfg = net.model.config
  return loop.Task(init_state=init_state, train_step=train_step, train_iter=data.train_iter,
                   evaluate=evaluate, examples_per_step=tc.batch_size,
                   tokens_per_step=tc.batch_size * net.seq_len,
                   flops_per_step=tc.batch_size * net.seq_len * cfg.flops_per_token(net.seq_len),
                   unroll_steps=False)  # a transformer: a rolled scan compiles faster


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Any:
  return workdir_lib.run(config, workdir, build_task)


# =========================== Command line ==============================================

def define_flags() -> None:
  cli.define_flags()
  flags.DEFINE_integer('num_images', 64, 'Images to sample.')
  flags.DEFINE_string('out', None, 'Folder for samples.png/.npz (default <workdir>/samples).')
  flags.DEFINE_integer('label', -1, 'Class to sample (conditional models); -1 cycles classes.')
  flags.DEFINE_float('temperature', None, 'Sampling temperature. Default: config.sample.')
  flags.DEFINE_integer('seed', 0, 'Sampling seed.')
  flags.DEFINE_integer('batch_size', 256, 'Images per decoding call.')


def _sample_from_flags(f) -> None:
  images, labels, value_range = sample(f.workdir, f.num_images, f.seed, f.label,
                                       f.temperature, f.batch_size)
  out = f.out or os.path.join(f.workdir, 'samples')
  png, npz = image_files.write_samples(out, 'samples', images, value_range, labels)
  print(f'Wrote {len(images)} samples to {png} and {npz}')


if __name__ == '__main__':
  define_flags()
  cli.run(cli.main(train_and_evaluate, _sample_from_flags, 'configs/image_gpt/digits.py'))
