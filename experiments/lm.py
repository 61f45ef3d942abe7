"""Language modelling with a GPT-2 or Llama-shaped transformer on the shared loop.

Train (re-running the same command resumes from the newest checkpoint):
  python -m experiments.lm --config configs/lm/pydoc_char.py --workdir runs/pydoc
Sample from a trained workdir:
  python -m experiments.lm --workdir runs/pydoc --sample --prompt "The " --num_tokens 200
"""
from __future__ import annotations

import json
import os
from typing import Any

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from genai.data import sequences
from genai.data import text_sources
from genai.data import tokenizers
from genai.evaluation import text_metrics
from genai.models.transformer import Transformer, TransformerConfig
from genai.objectives.lm import make_loss_fn
from genai.sample.decode import generate
from genai.parallel import mesh as mesh_lib
from genai.train import gradients
from genai.train import cli
from genai.train import loop
from genai.train import workdir as workdir_lib
from genai.train.optimizers import make_optimizer


# =========================== Building blocks ===========================================

def make_model(config: ml_collections.ConfigDict, vocab_size: int) -> Transformer:
  model_cfg = dict(config.model)
  model_cfg.setdefault('max_len', config.data.block_size)
  if model_cfg['max_len'] < config.data.block_size:
    raise ValueError(f'model.max_len={model_cfg["max_len"]} < data.block_size='
                     f'{config.data.block_size}; raise model.max_len.')
  return Transformer(TransformerConfig.from_dict({**model_cfg, 'vocab_size': vocab_size}))


def _eval_fn(model: Transformer):
  loss_fn = make_loss_fn(model)

  @jax.jit
  def eval_step(params, batch):
    _, aux = loss_fn(params, batch, None, deterministic=True)
    return aux['nll_sum'], aux['num_tokens']

  return eval_step


def _read_bleu_file(path: str) -> list[dict[str, str]]:
  if not os.path.exists(path):
    raise FileNotFoundError(f'eval.bleu_file={path!r} does not exist; give a JSONL file with '
                            'one {"prompt": ..., "reference": ...} object per line.')
  rows = []
  with open(path) as f:
    for n, line in enumerate(f, 1):
      if line.strip():
        row = json.loads(line)
        if not {'prompt', 'reference'} <= set(row):
          raise ValueError(f'{path}:{n} needs "prompt" and "reference" keys, got {sorted(row)}.')
        rows.append(row)
  return rows


def bleu_of_continuations(model, params, tokenizer, rows, *, rng) -> float:
  """Greedy continuation of each prompt, as long as its reference, scored with BLEU."""
  hyps = []
  for row in rows:
    prompt = tokenizer.encode(row['prompt'])[None]
    n = max(len(tokenizer.encode(row['reference'])), 1)
    out = generate(model, params, prompt, num_tokens=n, rng=rng, temperature=0.0)
    hyps.append(tokenizer.decode(out[0, prompt.shape[1]:]))
  return text_metrics.bleu(hyps, [r['reference'] for r in rows])


# =========================== The task for the shared loop ==============================

def state_fns(config: ml_collections.ConfigDict, model: Transformer):
  """init_state(rng) -> {'params', 'opt_state', 'step'}, and (optimizer, lr schedule)."""
  tx, schedule = make_optimizer(config.optimizer, config.train.num_steps)

  def init_state(rng):
    params = model.init(rng, jnp.zeros((1, config.data.block_size), jnp.int32))['params']
    return {'params': params, 'opt_state': tx.init(params), 'step': jnp.zeros((), jnp.int32)}

  return init_state, (tx, schedule)


def make_train_step(model: Transformer, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, grad_accum_steps: int = 1):
  """(state, batch, rng) -> (state, metrics): one AdamW (or any optax) step on the LM loss."""
  loss_fn = make_loss_fn(model)

  def train_step(state, batch, rng):
    (loss, _), grads = gradients.value_and_grad(loss_fn, state['params'], batch, rng,
                                                grad_accum_steps)
    updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    metrics = {'loss': loss, 'grad_norm': optax.tree.norm(grads),
               'lr': schedule(state['step'])}
    return {'params': params, 'opt_state': opt_state, 'step': state['step'] + 1}, metrics

  return train_step


def build_task(config: ml_collections.ConfigDict, workdir: str) -> loop.Task:
  text = text_sources.load_text(config.data)
  tokenizer = tokenizers.make_tokenizer(config.tokenizer, text, workdir)
  tokens = tokenizer.encode(text)
  train_tokens, val_tokens = sequences.split_train_val(
      tokens, config.data.val_fraction, block_size=config.data.block_size)
  tc = config.train
  block = config.data.block_size
  train_iter = sequences.make_train_iterator(
      train_tokens, block_size=block, batch_size=mesh_lib.local_batch_size(tc.batch_size),
      stride=config.data.get('stride') or block, seed=config.seed)
  model = make_model(config, tokenizer.vocab_size)
  init_state, (tx, schedule) = state_fns(config, model)
  train_step = make_train_step(model, tx, schedule, int(tc.get('grad_accum_steps', 1)))

  ec = config.eval
  val_batches = (sequences.eval_batches(val_tokens, block_size=block,
                                        batch_size=ec.batch_size, max_batches=ec.num_batches)
                 if len(val_tokens) else [])
  chars_per_token = (len(tokenizer.decode(val_tokens)) / len(val_tokens)) if len(val_tokens) else 1.0
  eval_step = _eval_fn(model)
  bleu_rows = _read_bleu_file(ec.bleu_file) if ec.get('bleu_file') else []
  prompt = ec.get('sample_prompt') or tokenizer.decode(val_tokens[:1] if len(val_tokens) else tokens[:1])

  def evaluate(state, step):
    params = state['params']
    results: dict[str, Any] = {}
    if val_batches:
      # Dispatch every batch, then one transfer: no host round-trip per batch.
      sums = jax.device_get([eval_step(params, batch) for batch in val_batches])
      loss = sum(float(s) for s, _ in sums) / sum(float(c) for _, c in sums)
      results.update({'val/loss': loss, 'val/perplexity': text_metrics.perplexity(loss),
                      'val/bits_per_token': text_metrics.bits_per_token(loss),
                      'val/bits_per_char': text_metrics.bits_per_char(loss, chars_per_token)})
    rng = jax.random.fold_in(jax.random.key(config.seed + 1), step)
    if bleu_rows:
      results['val/bleu'] = bleu_of_continuations(model, params, tokenizer, bleu_rows, rng=rng)
    if ec.sample_tokens:
      out = generate(model, params, tokenizer.encode(prompt)[None], num_tokens=ec.sample_tokens,
                     rng=rng, temperature=ec.temperature, top_k=ec.top_k)
      results['sample'] = tokenizer.decode(out[0])
    return results

  return loop.Task(init_state=init_state, train_step=train_step, train_iter=train_iter,
                   evaluate=evaluate, tokens_per_step=tc.batch_size * block,
                   examples_per_step=tc.batch_size,
                   flops_per_step=model.config.flops_per_token(block) * tc.batch_size * block)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Any:
  return workdir_lib.run(config, workdir, build_task)


# =========================== Sampling from a workdir ===================================

def load_workdir(workdir: str, step: int | None = None):
  """(config, model, params, tokenizer) of a trained LM workdir (newest checkpoint)."""
  config = workdir_lib.load_config(workdir, 'lm')
  tokenizer = tokenizers.load_tokenizer(workdir)
  model = make_model(config, tokenizer.vocab_size)
  init_state, _ = state_fns(config, model)
  state, _ = workdir_lib.restore_state(workdir, init_state, step)
  return config, model, state['params'], tokenizer


def sample(workdir: str, prompt: str, *, num_tokens: int, num_samples: int = 1,
           temperature: float = 0.8, top_k: int = 0, top_p: float = 1.0, seed: int = 0
           ) -> list[str]:
  _, model, params, tokenizer = load_workdir(workdir)
  ids = tokenizer.encode(prompt)
  if len(ids) == 0:
    raise ValueError('--prompt is empty after tokenisation; give at least one character.')
  prompt_BP = np.repeat(ids[None], num_samples, axis=0)
  out = generate(model, params, prompt_BP, num_tokens=num_tokens, rng=jax.random.key(seed),
                 temperature=temperature, top_k=top_k, top_p=top_p)
  return [tokenizer.decode(row) for row in out]


# =========================== Command line ==============================================

def define_flags() -> None:
  cli.define_flags()
  flags.DEFINE_string('prompt', '\n', 'Prompt for --sample.')
  flags.DEFINE_integer('num_tokens', 200, 'Tokens to generate.')
  flags.DEFINE_integer('num_samples', 1, 'Independent samples.')
  flags.DEFINE_float('temperature', 0.8, '0 = greedy.')
  flags.DEFINE_integer('top_k', 0, '0 = off.')
  flags.DEFINE_float('top_p', 1.0, '1 = off.')
  flags.DEFINE_integer('seed', 0, 'Sampling seed.')


def _sample_from_flags(f) -> None:
  for i, text in enumerate(sample(f.workdir, f.prompt, num_tokens=f.num_tokens,
                                  num_samples=f.num_samples, temperature=f.temperature,
                                  top_k=f.top_k, top_p=f.top_p, seed=f.seed)):
    print(f'=== sample {i} ===\n{text}')


if __name__ == '__main__':
  define_flags()
  app.run(cli.main(train_and_evaluate, _sample_from_flags, 'configs/lm/pydoc_char.py'))
