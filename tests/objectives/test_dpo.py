"""DPO: the loss against a hand computation, and a toy run where the preferred responses
become more likely than the rejected ones."""
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, load_config
from genai.data import preferences
from genai.families import lm as lm_family
from genai.objectives import dpo


def test_dpo_loss_by_hand():
  pc, pr = jnp.array([-3.0, -5.0]), jnp.array([-4.0, -2.0])
  rc, rr = jnp.array([-3.5, -4.0]), jnp.array([-3.5, -3.0])
  beta = 0.5
  loss, aux = dpo.dpo_loss(pc, pr, rc, rr, beta)
  # Pair 1: 0.5 * ((-3 + 3.5) - (-4 + 3.5)) = 0.5; pair 2: 0.5 * ((-5 + 4) - (-2 + 3)) = -1.
  want = (-math.log(1 / (1 + math.exp(-0.5))) - math.log(1 / (1 + math.exp(1.0)))) / 2
  assert float(loss) == pytest.approx(want, rel=1e-6)
  assert float(aux['reward_accuracy']) == 0.5
  assert float(aux['reward_margin']) == pytest.approx((0.5 - 1.0) / 2)
  # At the reference the loss is log 2 whatever beta is.
  assert float(dpo.dpo_loss(rc, rr, rc, rr, 3.0)[0]) == pytest.approx(math.log(2))


def test_sequence_logprobs_sum_masked_tokens():
  logits = jax.random.normal(jax.random.key(0), (2, 4, 7))
  targets = jnp.array([[1, 2, 3, 4], [0, 6, 5, 1]])
  mask = jnp.array([[0, 1, 1, 0], [1, 1, 1, 1]], jnp.float32)
  logp = np.asarray(jax.nn.log_softmax(logits, -1))
  want = [logp[0, 1, 2] + logp[0, 2, 3], sum(logp[1, t, int(targets[1, t])] for t in range(4))]
  np.testing.assert_allclose(dpo.sequence_logprobs(logits, targets, mask), want, rtol=1e-6)


@pytest.mark.slow  # a training
def test_preferred_responses_become_more_likely(lm_workdir, tmp_path):
  from experiments import lm  # pylint: disable=g-import-not-at-top
  # The rater prefers continuations in capitals.
  prompts = ['The ', 'def ', 'a = ', 'For ', 'if x', 'It is ', 'Use ', 'An ']
  rows = [{'prompt': p, 'chosen': 'THE CODE', 'rejected': 'the code'} for p in prompts] * 4
  path = tmp_path / 'pairs.jsonl'
  path.write_text('\n'.join(json.dumps(r) for r in rows) + '\n')
  config = load_config(REPO / 'configs/lm/pydoc_char.py')
  config.model.init_from = f'workdir:{lm_workdir}'
  config.data.update(source='dpo_jsonl', path=str(path), block_size=32, val_fraction=0.25)
  config.dpo.beta = 0.5
  config.optimizer.update(learning_rate=3e-3, warmup_steps=0)
  config.train.update(num_steps=24, batch_size=4, steps_per_call=4, eval_every=24,
                      checkpoint_every=24)
  config.eval.update(sample_tokens=0, batch_size=8)
  workdir = str(tmp_path / 'dpo')
  state = lm.train_and_evaluate(config, workdir)
  assert 'reference' in state
  # The reference stayed frozen; the policy moved.
  _, _, before, _ = lm_family.load_workdir(lm_workdir)
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state['reference']),
                                                  jax.tree.leaves(before)))
  _, model, _, tokenizer = lm_family.load_workdir(workdir)
  logps = jax.jit(dpo.make_logps(model))
  batch = preferences.encode_pairs(rows[:8], tokenizer, 32)
  gap_before = np.asarray(logps(before, batch))
  gap_after = np.asarray(logps(state['params'], batch))
  assert np.all(gap_before[:, 0] - gap_before[:, 1] < gap_after[:, 0] - gap_after[:, 1])
  assert np.all(gap_after[:, 0] > gap_after[:, 1])  # capitals now more likely


def test_dpo_needs_a_starting_model(tmp_path):
  from experiments import lm  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'p.jsonl'
  path.write_text(json.dumps({'prompt': 'a', 'chosen': 'b', 'rejected': 'c'}) + '\n')
  config = load_config(REPO / 'configs/lm/pydoc_char.py')
  config.data.update(source='dpo_jsonl', path=str(path))
  with pytest.raises(ValueError, match='needs model.init_from'):
    lm.train_and_evaluate(config, str(tmp_path / 'w'))
  path.write_text(json.dumps({'prompt': 'a', 'chosen': 'b'}) + '\n')
  config.model.init_from = 'workdir:/nonexistent'
  with pytest.raises(ValueError, match="missing or not text: \\['rejected'\\]"):
    preferences.read_jsonl(str(path))
