"""The LM experiment on a corpus prepared by `python -m genai.data.prepare`
(data.source='prepared'): it trains with the folder's tokenizer, validates on the prepared
split, and a run stopped part-way resumes to the same params as an uninterrupted one."""
import pydoc_data.topics

import jax
import numpy as np
import pytest

from conftest import REPO, load_config
from experiments import lm
from genai.data import prepare
from genai.data import token_shards
from genai.families import lm as lm_family


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  root = tmp_path_factory.mktemp('prepared')
  corpus = root / 'corpus.txt'
  corpus.write_text(''.join(list(pydoc_data.topics.topics.values())[:40]), encoding='utf-8')
  out = str(root / 'data')
  prepare.prepare_text(out, inputs=[str(corpus)], doc_split='paragraph', val_fraction=0.1)
  return out


def _config(path, num_steps):
  config = load_config(REPO / 'configs/lm/pydoc_char.py')
  config.data.source, config.data.path = 'prepared', path
  config.train.num_steps = num_steps
  config.train.steps_per_call = 1
  config.train.checkpoint_every = 3
  config.train.eval_every = 3
  # A constant rate, so a 3-step run is the first half of the 6-step one.
  config.optimizer.schedule, config.optimizer.warmup_steps = 'constant', 0
  config.eval.sample_tokens = 0
  return config


@pytest.mark.slow  # a training, stopped and resumed
def test_trains_on_prepared_shards_and_resumes_bit_identical(prepared, tmp_path):
  ref, work = str(tmp_path / 'ref'), str(tmp_path / 'work')
  lm.train_and_evaluate(_config(prepared, 6), ref)
  lm.train_and_evaluate(_config(prepared, 3), work)   # stops at step 3 (a checkpoint)
  lm.train_and_evaluate(_config(prepared, 6), work)   # resumes: model, optimizer, iterator
  _, _, a, tok = lm_family.load_workdir(ref)
  _, _, b, _ = lm_family.load_workdir(work)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  assert tok.identity() == token_shards.load_prepared_tokenizer(prepared).identity()
