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

import jax.numpy as jnp
import ml_collections

from genai.data import image_shards
from genai.data import images as images_lib
from genai.evaluation import classification as classification_eval
from genai.families import classifier as classifier_lib
from genai.objectives import classification
from genai.parallel import mesh as mesh_lib
from genai.train import cli
from genai.train import loop
from genai.train import supervised
from genai.train import transfer
from genai.train import workdir as workdir_lib
from genai.train.optimizers import make_optimizer


def _loss_fn(model):
  def loss_fn(params, batch):
    return classification.softmax_loss(model.apply({'params': params}, batch['image'])[0],
                                       batch['label'])
  return loss_fn


def make_eval_fn(model, batch_size: int):
  """(params, images [N,...], labels [N]) -> {'eval/accuracy', 'eval/loss'} on all N."""
  return classification_eval.make_eval_fn(
      lambda params, x: model.apply({'params': params}, x)[0], batch_size)


def build_task(config: ml_collections.ConfigDict, workdir: str) -> loop.Task:
  tc = config.train
  data = image_shards.load_image_data(config.data, batch_size=mesh_lib.local_batch_size(tc.batch_size), seed=config.seed)
  if data.eval_labels is None:
    raise ValueError('the classifier needs labels; the eval split has none. Use a labelled '
                     'dataset (a folder needs one subfolder per class).')
  model = classifier_lib.make_classifier(config.model, data.num_classes)
  classifier_lib.write_info(workdir, image_shape=data.image_shape,
                            value_range=data.value_range, num_classes=data.num_classes)
  tx, schedule = make_optimizer(config.optimizer, tc.num_steps)
  tx = transfer.optimizer(config, tx)  # train.freeze
  init_state = supervised.init_fn(model, jnp.zeros((1,) + tuple(data.image_shape), jnp.float32),
                                  tx)
  init_state, init_args = transfer.init_from(config, 'classifier', init_state,
                                             num_classes=data.num_classes, workdir=workdir)
  train_step = supervised.make_train_step(_loss_fn(model), tx, schedule)

  eval_fn = make_eval_fn(model, int(config.eval.batch_size))

  def evaluate(state, step):
    del step
    return eval_fn(state['params'], data.eval_images, data.eval_labels)

  return loop.Task(init_state=init_state, train_step=train_step, train_iter=data.train_iter,
                   evaluate=evaluate, examples_per_step=tc.batch_size, init_args=init_args)


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
  cli.run(cli.main(train_and_evaluate, _print_accuracy, 'configs/classifier/digits.py',
                   action='accuracy'))
