"""The moderation text classifier (genai/safety/text_classifier.py) on the shared loop.

Train (re-running the same command resumes from the newest checkpoint):
  python -m experiments.text_classifier --config configs/text_classifier/moderation.py \
    --workdir runs/moderation_clf
  python -m experiments.text_classifier --workdir runs/my_clf \
    --config configs/text_classifier/moderation.py:path=my_labelled.jsonl,steps=2000
Held-out accuracy of a trained workdir (also logged as eval/accuracy at every eval):
  python -m experiments.text_classifier --workdir runs/moderation_clf --accuracy
Use it in moderation (genai/safety/moderation.py):
  {"classifier": {"workdir": "runs/moderation_clf", "threshold": 0.8, "action": "flag"}}
"""
from __future__ import annotations

import json
from typing import Any

from absl import app
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from genai.parallel import mesh as mesh_lib
from genai.safety import text_classifier as tc_lib
from genai.train import cli
from genai.train import loop
from genai.train import workdir as workdir_lib
from genai.train.optimizers import make_optimizer


def load_split(data_cfg: Any) -> dict[str, Any]:
  """{'train_texts', 'train_labels', 'eval_texts', 'eval_labels'}: the config's fixed split."""
  texts, labels_N = tc_lib.load_jsonl(data_cfg.get('path') or None)
  train_idx, eval_idx = tc_lib.split_indices(labels_N, float(data_cfg.eval_fraction),
                                             int(data_cfg.get('split_seed', 0)))
  return {'train_texts': [texts[i] for i in train_idx], 'train_labels': labels_N[train_idx],
          'eval_texts': [texts[i] for i in eval_idx], 'eval_labels': labels_N[eval_idx]}


def _loss_fn(model):
  def loss_fn(params, batch):
    logits_B2 = model.apply({'params': params}, batch['tokens'])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits_B2, batch['label']).mean()
    accuracy = jnp.mean(jnp.argmax(logits_B2, -1) == batch['label'])
    return loss, accuracy
  return loss_fn


def make_eval_fn(model, batch_size: int):
  """(params, tokens_NT, labels_N) -> eval/{accuracy, loss, precision, recall} at p=0.5."""
  @jax.jit
  def sums(params, tokens_BT, labels_B, mask_B):
    logits_B2 = model.apply({'params': params}, tokens_BT)
    nll_B = optax.softmax_cross_entropy_with_integer_labels(logits_B2, labels_B)
    pred_B = jnp.argmax(logits_B2, -1)
    tp = jnp.sum((pred_B == 1) & (labels_B == 1) & (mask_B > 0))
    return (jnp.sum(nll_B * mask_B), jnp.sum((pred_B == labels_B) * mask_B), tp,
            jnp.sum((pred_B == 1) * mask_B), jnp.sum((labels_B == 1) * mask_B))

  def evaluate(params, tokens_NT, labels_N):
    n = len(tokens_NT)
    out = []
    for i in range(0, n, batch_size):  # Fixed shape: the last batch is padded and masked.
      x, y = tokens_NT[i:i + batch_size], labels_N[i:i + batch_size]
      pad = batch_size - len(x)
      mask = np.concatenate([np.ones(len(x), np.float32), np.zeros(pad, np.float32)])
      x = np.concatenate([x, np.zeros((pad, x.shape[1]), x.dtype)])
      y = np.concatenate([y, np.zeros(pad, y.dtype)])
      out.append(sums(params, x, y, mask))
    nll, correct, tp, pred_pos, pos = (float(sum(v)) for v in zip(*jax.device_get(out)))
    return {'eval/accuracy': correct / n, 'eval/loss': nll / n,
            'eval/precision': tp / pred_pos if pred_pos else 0.0,
            'eval/recall': tp / pos if pos else 0.0}

  return evaluate


def build_task(config: ml_collections.ConfigDict, workdir: str) -> loop.Task:
  del workdir  # config.json (written by workdir_lib.run) is all a reload needs.
  tc = config.train
  max_len = int(config.data.max_len)
  split = load_split(config.data)
  train_NT = tc_lib.encode_texts(split['train_texts'], max_len)
  eval_NT = tc_lib.encode_texts(split['eval_texts'], max_len)
  train_iter = tc_lib.make_text_iterator(
      train_NT, split['train_labels'], batch_size=mesh_lib.local_batch_size(tc.batch_size),
      seed=config.seed)
  model = tc_lib.make_model(config.model)
  tx, schedule = make_optimizer(config.optimizer, tc.num_steps)

  def init_state(rng):
    params = model.init(rng, jnp.zeros((1, max_len), jnp.int32))['params']
    return {'params': params, 'opt_state': tx.init(params), 'step': jnp.zeros((), jnp.int32)}

  loss_fn = _loss_fn(model)

  def train_step(state, batch, rng):
    del rng  # Deterministic model and data order (the iterator is seeded).
    (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(state['params'], batch)
    updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    metrics = {'loss': loss, 'accuracy': accuracy, 'grad_norm': optax.tree.norm(grads),
               'lr': schedule(state['step'])}
    return {'params': params, 'opt_state': opt_state, 'step': state['step'] + 1}, metrics

  eval_fn = make_eval_fn(model, int(config.eval.batch_size))

  def evaluate(state, step):
    del step
    return eval_fn(state['params'], eval_NT, split['eval_labels'])

  return loop.Task(init_state=init_state, train_step=train_step, train_iter=train_iter,
                   evaluate=evaluate, examples_per_step=tc.batch_size)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Any:
  return workdir_lib.run(config, workdir, build_task)


def test_accuracy(workdir: str, threshold: float = 0.5) -> dict[str, Any]:
  """Held-out accuracy of a trained workdir's newest checkpoint, scored like moderation
  scores it (load_classifier; P(unsafe) >= threshold means unsafe)."""
  config = workdir_lib.load_config(workdir, tc_lib.EXPERIMENT)
  split = load_split(config.data)
  score = tc_lib.load_classifier(workdir)
  probs_N = score(split['eval_texts'])
  labels_N = split['eval_labels']
  pred_N = (probs_N >= threshold).astype(np.int32)
  tp = int(np.sum((pred_N == 1) & (labels_N == 1)))
  return {'eval/accuracy': float(np.mean(pred_N == labels_N)),
          'eval/precision': tp / max(int(pred_N.sum()), 1),
          'eval/recall': tp / max(int(labels_N.sum()), 1),
          'n': len(labels_N), 'threshold': threshold, 'step': score.step,
          'data': config.data.get('path') or tc_lib.DEFAULT_DATA}


# =========================== Command line ==============================================

def define_flags() -> None:
  cli.define_flags('accuracy', 'Print the held-out accuracy of --workdir as JSON.')


def _print_accuracy(f) -> None:
  print(json.dumps(test_accuracy(f.workdir), indent=2))


if __name__ == '__main__':
  define_flags()
  app.run(cli.main(train_and_evaluate, _print_accuracy,
                   'configs/text_classifier/moderation.py', action='accuracy'),
          flags_parser=cli.parse_flags)
