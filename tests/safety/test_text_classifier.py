"""The moderation text classifier: byte encoding, the labelled-data loader, training on the
shared loop (runlocal in a few seconds; the full toy config clearly above chance on held-out
lines), reloading a workdir, and the Moderator flagging with it."""
import json
from pathlib import Path

import numpy as np
import pytest

from configs.text_classifier import moderation as moderation_config
from experiments import text_classifier as experiment
from genai.safety import moderation as mod
from genai.safety import text_classifier as tc_lib


def test_encode_texts_is_padded_utf8():
  tokens_NT = tc_lib.encode_texts(['ab', 'é', 'x' * 10, 'a\x00b'], max_len=4)
  assert tokens_NT.dtype == np.int32 and tokens_NT.shape == (4, 4)
  np.testing.assert_array_equal(tokens_NT[0], [97, 98, 0, 0])
  np.testing.assert_array_equal(tokens_NT[1], [0xC3, 0xA9, 0, 0])     # two UTF-8 bytes
  np.testing.assert_array_equal(tokens_NT[2], [120] * 4)               # truncated
  np.testing.assert_array_equal(tokens_NT[3], [97, 98, 0, 0])          # NUL is padding
  with pytest.raises(TypeError, match='list of texts'):
    tc_lib.encode_texts('one string', 8)


def test_encode_windows_splits_sentences_and_long_runs():
  tokens_WT, owner_W = tc_lib.encode_windows(['Hi. You there!\nok', '', 'x' * 20], 8)
  rows = [bytes(r[r > 0].astype(np.uint8)) for r in tokens_WT]
  # 'You there!' is longer than 8 bytes: two windows, stride 4. '' has no rows.
  assert rows[:4] == [b'Hi.', b'You ther', b'there!', b'ok']
  np.testing.assert_array_equal(owner_W, [0, 0, 0, 0, 2, 2, 2, 2])
  assert tokens_WT.shape == (8, 8)


def test_shipped_data_loads(tmp_path):
  texts, labels_N = tc_lib.load_jsonl()
  assert 150 <= len(texts) <= 300 and set(labels_N.tolist()) == {0, 1}
  train, held = tc_lib.split_indices(labels_N, 0.2, seed=0)
  assert not set(train) & set(held) and len(train) + len(held) == len(texts)
  assert abs(labels_N[held].mean() - labels_N.mean()) < 0.05  # stratified
  bad = tmp_path / 'bad.jsonl'
  bad.write_text('{"text": "a", "label": 0}\n{"text": "b", "label": 2}\n')
  with pytest.raises(ValueError, match=r'bad.jsonl:2: "label" must be 0 \(safe\) or 1'):
    tc_lib.load_jsonl(str(bad))
  bad.write_text('{"text": "a", "label": 0}\nnot json\n')
  with pytest.raises(ValueError, match='bad.jsonl:2: not valid JSON'):
    tc_lib.load_jsonl(str(bad))
  bad.write_text('{"text": "a", "label": 0}\n\n{"text": "b", "label": 0}\n')
  with pytest.raises(ValueError, match='both labels'):
    tc_lib.load_jsonl(str(bad))
  with pytest.raises(FileNotFoundError, match='data.path'):
    tc_lib.load_jsonl(str(tmp_path / 'missing.jsonl'))


def test_runlocal_trains_on_the_shared_loop_and_reloads(tmp_path):
  config = moderation_config.get_config('runlocal')
  state = experiment.train_and_evaluate(config, str(tmp_path))
  assert int(state['step']) == config.train.num_steps
  score = tc_lib.load_classifier(str(tmp_path))
  probs_N = score(['hello there', 'you idiot', ''])
  assert probs_N.shape == (3,) and probs_N.dtype == np.float32
  assert np.all((probs_N >= 0) & (probs_N <= 1)) and probs_N[2] == 0.0
  assert score.step == config.train.num_steps and score.max_len == config.data.max_len
  # The model in the workdir is the trained one.
  expect = score.probs_of_tokens(tc_lib.encode_texts(['hello there'], score.max_len))
  np.testing.assert_allclose(probs_N[0], expect[0], rtol=1e-6)


def test_load_classifier_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='config.json'):
    tc_lib.load_classifier(str(tmp_path))
  (tmp_path / 'config.json').write_text(json.dumps({'experiment': 'lm'}))
  with pytest.raises(ValueError, match='experiments.lm'):
    tc_lib.load_classifier(str(tmp_path))


@pytest.fixture(scope='module')
def trained_workdir(tmp_path_factory):
  """The shipped config on the toy set: 300 steps, ~10 s on 2 CPU cores."""
  workdir = str(tmp_path_factory.mktemp('moderation_clf'))
  experiment.train_and_evaluate(moderation_config.get_config(), workdir)
  return workdir


@pytest.mark.slow  # a longer training (trained_workdir)
def test_held_out_accuracy_is_clearly_above_chance(trained_workdir):
  result = experiment.test_accuracy(trained_workdir)
  assert result['n'] == 53 and result['step'] == 300
  # Measured 0.906 (split seeds 0-3 of this config: 0.91-0.96); chance is ~0.55.
  assert result['eval/accuracy'] >= 0.8, result
  assert result['eval/recall'] >= 0.7 and result['eval/precision'] >= 0.7, result


@pytest.mark.slow  # a longer training (trained_workdir)
def test_moderator_with_the_classifier(trained_workdir):
  m = mod.Moderator.from_config({'classifier': {'workdir': trained_workdir,
                                                'threshold': 0.8}})
  abusive = 'Shut up, you useless idiot, nobody wants you here.'  # not in the data set
  benign = 'Thank you, the meeting notes look great.'
  filler = 'The weather is nice today and the garden looks lovely. ' * 6
  out = m.moderate_many([abusive, benign, filler + 'Shut up, you useless idiot.',
                         'Mail me at a@b.io, thanks!'])
  assert out[0].flags == ('classifier',) and out[0].needs_review and out[0].score >= 0.8
  assert out[1].flags == () and not out[1].needs_review and out[1].score < 0.5
  assert 'classifier' in out[2].flags  # one bad sentence in a long output is still caught
  assert out[3].text == 'Mail me at [EMAIL], thanks!' and out[3].flags == ('pii_email',)
  assert Path(tc_lib.DEFAULT_DATA).is_file()
