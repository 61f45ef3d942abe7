"""The domain classifier: configs train in tiny mode, it learns, its workdir reloads as a
feature extractor, and bad inputs give clear errors."""
import glob
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import load_config
from experiments import classifier as experiment
from genai.data import images as images_lib
from genai.families import classifier as classifier_lib

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for p in glob.glob(str(REPO / 'configs/classifier/*.py'))
                 if os.path.basename(p) != '__init__.py')


@pytest.mark.slow  # a training per config
@pytest.mark.parametrize('path', CONFIGS, ids=os.path.basename)
def test_every_config_trains_in_runlocal_mode(path, tmp_path):
  config = load_config(path)
  with tfds.testing.mock_data(num_examples=300):  # The TFDS MNIST config runs offline.
    state = experiment.train_and_evaluate(config, str(tmp_path))
  assert int(state['step']) == config.train.num_steps
  trained = classifier_lib.load_classifier(str(tmp_path))
  assert trained.num_classes == 10 and trained.value_range == config.data.value_range
  assert trained.weights_hash == classifier_lib.params_hash(state['params'])


@pytest.fixture(scope='module')
def digits_workdir(tmp_path_factory):
  """A small digits classifier trained for 120 real steps (a few seconds)."""
  workdir = str(tmp_path_factory.mktemp('clf'))
  config = load_config(REPO / 'configs/classifier/digits.py', 'steps=120')
  config.model.widths = (16, 32)
  config.model.feature_dim = 32
  config.optimizer.warmup_steps = 10
  config.optimizer.learning_rate = 3e-3
  config.train.log_every = 40
  config.train.eval_every = 120
  experiment.train_and_evaluate(config, workdir)
  return workdir


def test_classifier_learns_and_reports_test_accuracy(digits_workdir):
  result = experiment.test_accuracy(digits_workdir)
  assert result['split'] == 'test' and result['n'] == 180
  assert result['eval/accuracy'] > 0.7, result  # chance is 0.1; 600 steps reach ~0.95
  # The same number by hand from the feature fn's logits.
  trained = classifier_lib.load_classifier(digits_workdir)
  x, y = images_lib.load_images(images_lib_cfg(), 'test')
  logits = classifier_lib.make_feature_fn(trained)(x)['logits']
  np.testing.assert_allclose(np.mean(np.argmax(logits, 1) == y), result['eval/accuracy'])


def images_lib_cfg():
  import types  # pylint: disable=import-outside-toplevel
  return types.SimpleNamespace(source='embedded')


def test_feature_fn_contract(digits_workdir):
  trained = classifier_lib.load_classifier(digits_workdir)
  fn = classifier_lib.make_feature_fn(trained, batch_size=64)
  x, _ = images_lib.load_images(images_lib_cfg(), 'test')
  out = fn(x)
  assert out['pool'].shape == (180, 32) and out['logits'].shape == (180, 10)
  assert out['pool'].dtype == np.float32 and np.all(out['pool'] >= 0)  # post-ReLU
  # uint8, floats in [-1,1] and floats in [0,1] of the same images give the same features.
  f11 = images_lib.preprocess(x, value_range='[-1,1]')
  f01 = images_lib.preprocess(x, value_range='[0,1]')
  np.testing.assert_allclose(fn(f11, value_range='[-1,1]')['pool'], out['pool'], atol=1e-4)
  np.testing.assert_allclose(fn(f01, value_range='[0,1]')['pool'], out['pool'], atol=1e-4)
  # Batching does not change the features (the last batch is padded, not dropped).
  np.testing.assert_allclose(classifier_lib.make_feature_fn(trained, 500)(x)['pool'],
                             out['pool'], atol=1e-5)
  # A reload names the same weights.
  assert classifier_lib.load_classifier(digits_workdir).weights_hash == trained.weights_hash


def test_feature_fn_bad_inputs(digits_workdir):
  fn = classifier_lib.make_feature_fn(classifier_lib.load_classifier(digits_workdir))
  with pytest.raises(ValueError, match=r'takes \[N, 8, 8, 1\].*resize'):
    fn(np.zeros((4, 28, 28, 1), np.uint8))
  with pytest.raises(ValueError, match='1-channel'):
    fn(np.zeros((4, 8, 8, 3), np.uint8))
  with pytest.raises(ValueError, match='value_range'):
    fn(np.zeros((4, 8, 8, 1), np.float32))
  with pytest.raises(ValueError, match=r"look like \[-1,1\]"):
    fn(np.full((4, 8, 8, 1), -1.0, np.float32), value_range='[0,1]')
  with pytest.raises(ValueError, match=r"look\s+like \[0,1\]"):
    fn(np.random.default_rng(0).uniform(0, 1, (4, 8, 8, 1)).astype(np.float32),
       value_range='[-1,1]')


def test_missing_and_wrong_workdirs(tmp_path):
  with pytest.raises(FileNotFoundError, match='config.json'):
    classifier_lib.load_classifier(str(tmp_path))
  lm_dir = tmp_path / 'lm'
  lm_dir.mkdir()
  (lm_dir / 'config.json').write_text('{"experiment": "lm"}')
  with pytest.raises(ValueError, match='experiments.lm'):
    classifier_lib.load_classifier(str(lm_dir))


def test_unlabelled_data_is_rejected(tmp_path):
  from PIL import Image  # pylint: disable=import-outside-toplevel
  for split in ('train', 'test'):
    (tmp_path / 'data' / split).mkdir(parents=True)
    for i in range(10):
      Image.fromarray(np.full((8, 8), i * 20, np.uint8)).save(
          tmp_path / 'data' / split / f'{i}.png')
  config = load_config(REPO / 'configs/classifier/digits.py')
  config.data.source, config.data.path = 'folder', str(tmp_path / 'data')
  config.data.max_examples, config.train.batch_size = 0, 4
  with pytest.raises(ValueError, match='labels'):
    experiment.train_and_evaluate(config, str(tmp_path / 'w'))
