"""The image experiments read a folder prepared by `python -m genai.data.prepare --images`
(data.source='prepared'): decoded per batch from ArrayRecord shards, never one array."""
import numpy as np
from PIL import Image

from conftest import REPO, load_config
from experiments import classifier
from genai.data import image_shards
from genai.families import classifier as classifier_family


def test_the_classifier_trains_on_prepared_image_shards(tmp_path):
  rng = np.random.default_rng(0)
  for split, n in (('train', 24), ('test', 8)):
    for c, level in (('dark', 40), ('light', 215)):
      (tmp_path / 'imgs' / split / c).mkdir(parents=True)
      for i in range(n):
        pixels = np.clip(rng.normal(level, 20, (8, 8)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / 'imgs' / split / c / f'{i}.png')
  out = str(tmp_path / 'prepared')
  image_shards.prepare_images(out, folder=str(tmp_path / 'imgs'))
  config = load_config(REPO / 'configs/classifier/digits.py')
  config.data.source, config.data.path = 'prepared', out
  config.train.num_steps = config.train.checkpoint_every = 4
  config.train.eval_every = 4
  config.train.steps_per_call = 1
  workdir = str(tmp_path / 'w')
  classifier.train_and_evaluate(config, workdir)
  trained = classifier_family.load_classifier(workdir)
  assert trained.image_shape == (8, 8, 1) and trained.num_classes == 2
