"""Workdir helpers: config round trip and the experiment check."""
import ml_collections
import pytest

from genai.train import workdir


def test_config_round_trip_and_experiment_check(tmp_path):
  c = ml_collections.ConfigDict({'experiment': 'vae', 'train': {'num_steps': 3}, 'lr': 0.1})
  workdir.save_config(c, str(tmp_path))
  back = workdir.load_config(str(tmp_path), 'vae')
  assert back.train.num_steps == 3 and back.lr == 0.1
  with pytest.raises(ValueError, match='experiments.vae'):
    workdir.load_config(str(tmp_path), 'gan')
  with pytest.raises(FileNotFoundError, match='Train first'):
    workdir.load_config(str(tmp_path / 'nope'))
  assert workdir.flat_hparams(c) == {'experiment': 'vae', 'train.num_steps': 3, 'lr': 0.1}


def test_image_info_round_trip(tmp_path):
  workdir.save_image_info(str(tmp_path), (28, 28, 1), '[-1,1]', num_classes=10)
  assert workdir.load_image_info(str(tmp_path), 'gan') == {
      'image_shape': [28, 28, 1], 'num_classes': 10, 'value_range': '[-1,1]'}
  with pytest.raises(FileNotFoundError, match='experiments.vae'):
    workdir.load_image_info(str(tmp_path / 'nope'), 'vae')


def test_fresh_workdir_empties_an_older_run(tmp_path):
  config = ml_collections.ConfigDict({'seed': 3})
  old = tmp_path / 'out' / 'workdir' / 'checkpoints' / '100'
  old.mkdir(parents=True)
  wd = workdir.fresh_workdir(config, str(tmp_path / 'out'))
  assert wd == str(tmp_path / 'out' / 'workdir')
  assert sorted(p.name for p in (tmp_path / 'out' / 'workdir').iterdir()) == ['config.json']
  assert workdir.load_config(wd).seed == 3
  assert workdir.fresh_workdir(config, str(tmp_path / 'new')) == str(tmp_path / 'new' / 'workdir')
