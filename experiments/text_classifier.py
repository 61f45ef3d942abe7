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

import jax.numpy as jnp
import ml_collections
import numpy as np

from genai.evaluation import classification as classification_eval
from genai.objectives import classification
from genai.parallel import mesh as mesh_lib
from genai.safety import text_classifier as tc_lib
from genai.train import cli
from genai.train import loop
from genai.train import supervised
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
    return classification.softmax_loss(model.apply({'params': params}, batch['tokens']),
                                       batch['label'])
  return loss_fn


def make_eval_fn(model, batch_size: int):
  """(params, tokens_NT, labels_N) -> eval/{accuracy, loss, precision, recall} at p=0.5."""
  return classification_eval.make_eval_fn(
      lambda params, x: model.apply({'params': params}, x), batch_size, binary=True)


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
  init_state = supervised.init_fn(model, jnp.zeros((1, max_len), jnp.int32), tx)
  train_step = supervised.make_train_step(_loss_fn(model), tx, schedule)

  eval_fn = make_eval_fn(model, int(config.eval.batch_size))

  def evaluate(state, step):
    del step
    return eval_fn(state['params'], eval_NT, split['eval_labels'])

  return loop.Task(init_state=init_state, train_step=train_step, train_iter=train_iter,
                   evaluate=evaluate, examples_per_step=tc.batch_size,
                   unroll_steps=False)  # a transformer: a rolled scan compiles faster


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
  cli.run(cli.main(train_and_evaluate, _print_accuracy,
                   'configs/text_classifier/moderation.py', action='accuracy'))
