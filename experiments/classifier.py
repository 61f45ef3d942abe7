"""A small image classifier on the shared loop: the "domain" feature extractor for FID-domain.

Train (re-running the same command resumes from the newest checkpoint):
  python -m experiments.classifier --config configs/classifier/digits.py --workdir runs/digits_clf
  python -m experiments.classifier --workdir runs/mnist_clf \
    --config configs/classifier/mnist.py:path=../shared/data/mnist
Test accuracy of a trained workdir (also logged as eval/accuracy at every eval):
  python -m experiments.classifier --workdir runs/mnist_clf --accuracy
Use it as a feature extractor (metrics come out labelled *_domain):
  python -m genai.evaluation.fid --samples S.npz --ref mnist:test \
    --data_path ../shared/data/mnist --features domain:runs/mnist_clf
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

from genai.data import images as images_lib
from genai.models import classifier as classifier_lib
from genai.parallel import mesh as mesh_lib
from genai.train import cli
from genai.train import loop
from genai.train import workdir as workdir_lib
from genai.train.optimizers import make_optimizer


def _loss_fn(model):
  def loss_fn(params, batch):
    logits, _ = model.apply({'params': params}, batch['image'])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']).mean()
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch['label'])
    return loss, accuracy
  return loss_fn


def make_eval_fn(model, batch_size: int):
  """(params, images [N,...], labels [N]) -> {'eval/accuracy', 'eval/loss'} on all N."""
  @jax.jit
  def sums(params, x, y, mask):
    logits, _ = model.apply({'params': params}, x)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return jnp.sum(nll * mask), jnp.sum((jnp.argmax(logits, -1) == y) * mask)

  def evaluate(params, images, labels):
    n = len(images)
    out = []
    for i in range(0, n, batch_size):  # Fixed shape: the last batch is padded and masked.
      x, y = images[i:i + batch_size], labels[i:i + batch_size]
      pad = batch_size - len(x)
      mask = np.concatenate([np.ones(len(x), np.float32), np.zeros(pad, np.float32)])
      x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
      y = np.concatenate([y, np.zeros(pad, y.dtype)])
      out.append(sums(params, x, y, mask))
    out = jax.device_get(out)
    return {'eval/accuracy': float(sum(c for _, c in out)) / n,
            'eval/loss': float(sum(s for s, _ in out)) / n}

  return evaluate


def _state_fns(config, model, image_shape):
  tx, schedule = make_optimizer(config.optimizer, config.train.num_steps)

  def init_state(rng):
    params = model.init(rng, jnp.zeros((1,) + tuple(image_shape), jnp.float32))['params']
    return {'params': params, 'opt_state': tx.init(params), 'step': jnp.zeros((), jnp.int32)}

  return init_state, tx, schedule


def build_task(config: ml_collections.ConfigDict, workdir: str) -> loop.Task:
  tc = config.train
  data = images_lib.load_image_data(config.data, batch_size=mesh_lib.local_batch_size(tc.batch_size), seed=config.seed)
  if data.eval_labels is None:
    raise ValueError('the classifier needs labels; the eval split has none. Use a labelled '
                     'dataset (a folder needs one subfolder per class).')
  model = classifier_lib.make_classifier(config.model, data.num_classes)
  classifier_lib.write_info(workdir, image_shape=data.image_shape,
                            value_range=data.value_range, num_classes=data.num_classes)
  init_state, tx, schedule = _state_fns(config, model, data.image_shape)
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
    return eval_fn(state['params'], data.eval_images, data.eval_labels)

  return loop.Task(init_state=init_state, train_step=train_step, train_iter=data.train_iter,
                   evaluate=evaluate, examples_per_step=tc.batch_size)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Any:
  return workdir_lib.run(config, workdir, build_task)


def test_accuracy(workdir: str) -> dict[str, float]:
  """eval/accuracy and eval/loss of a trained workdir's newest checkpoint on its eval split."""
  config = workdir_lib.load_config(workdir, 'classifier')
  trained = classifier_lib.load_classifier(workdir)
  data_cfg = config.data
  split = data_cfg.get('eval_split', 'test')
  x, y = images_lib.load_images(data_cfg, split)
  cap = int(data_cfg.get('eval_examples', 0) or 0)
  if cap:
    x, y = x[:cap], y[:cap]
  x = images_lib.preprocess(x, image_size=int(data_cfg.get('image_size', 0) or 0) or None,
                            value_range=trained.value_range)
  out = make_eval_fn(trained.model, int(config.eval.batch_size))(trained.params, x, y)
  return {**out, 'n': len(x), 'split': split, 'weights_hash': trained.weights_hash}


# =========================== Command line ==============================================

def define_flags() -> None:
  cli.define_flags('accuracy', 'Print the test accuracy of --workdir as JSON.')


def _print_accuracy(f) -> None:
  print(json.dumps(test_accuracy(f.workdir), indent=2))


if __name__ == '__main__':
  define_flags()
  app.run(cli.main(train_and_evaluate, _print_accuracy, 'configs/classifier/digits.py',
                   action='accuracy'), flags_parser=cli.parse_flags)
