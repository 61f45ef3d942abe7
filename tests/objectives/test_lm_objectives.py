"""The LM objective: one config field, inferred for configs that lack it, checked against
the data and the teacher; every objective has the one loss signature."""
import jax
import jax.numpy as jnp
import ml_collections
import pytest

from conftest import REPO, load_config
from genai.models.transformer import Transformer, TransformerConfig
from genai.objectives import lm_objectives


def _config(objective=None, source='embedded', teacher=''):
  c = load_config(REPO / 'configs/lm/pydoc_char.py')
  c.data.source, c.distill.teacher = source, teacher
  if objective is None:  # a config.json written before the field existed
    c = ml_collections.ConfigDict({k: v for k, v in c.to_dict().items() if k != 'objective'})
  else:
    c.objective = objective
  return c


@pytest.mark.parametrize('objective', [None, ''])
@pytest.mark.parametrize('source, teacher, want', [
    ('embedded', '', 'next_token'), ('files', '', 'next_token'), ('sft_jsonl', '', 'sft'),
    ('dpo_jsonl', '', 'dpo'), ('embedded', 'smollm2', 'distill'),
    ('sft_jsonl', 'smollm2', 'distill')])
def test_inferred_from_the_data_and_the_teacher(objective, source, teacher, want):
  assert lm_objectives.objective_of(_config(objective, source, teacher)) == want


@pytest.mark.parametrize('objective, source, teacher', [
    ('next_token', 'embedded', ''), ('sft', 'sft_jsonl', ''), ('dpo', 'dpo_jsonl', ''),
    ('distill', 'files', 'smollm2'), ('distill', 'sft_jsonl', 'smollm2')])
def test_explicit_objectives_that_fit(objective, source, teacher):
  assert lm_objectives.objective_of(_config(objective, source, teacher)) == objective


@pytest.mark.parametrize('objective, source, teacher, match', [
    ('dpo', 'embedded', '', r"objective='dpo' contradicts data.source='embedded'"),
    ('sft', 'dpo_jsonl', '', r"objective='sft' contradicts data.source='dpo_jsonl' \(which "
                             r"trains 'dpo'\)"),
    ('next_token', 'sft_jsonl', '', 'contradicts'),
    ('distill', 'embedded', '', "'distill' needs a teacher"),
    ('sft', 'sft_jsonl', 'smollm2', 'disagree'),
    ('', 'dpo_jsonl', 'smollm2', 'disagree'),
    ('rlhf', 'embedded', '', "objective='rlhf' is unknown")])
def test_contradictions_are_one_line_errors(objective, source, teacher, match):
  with pytest.raises(ValueError, match=match) as e:
    lm_objectives.objective_of(_config(objective, source, teacher))
  assert '\n' not in str(e.value)


def test_a_contradiction_stops_the_run_before_any_data_loads(tmp_path):
  from experiments import lm  # pylint: disable=g-import-not-at-top
  config = _config('dpo', 'files')
  config.data.path = '/nonexistent/corpus.txt'  # never read: the objective fails first
  with pytest.raises(ValueError, match="objective='dpo' contradicts"):
    lm.train_and_evaluate(config, str(tmp_path))


@pytest.mark.slow  # eager: one compile per op
def test_every_objective_has_the_one_signature():
  cfg = TransformerConfig(vocab_size=11, num_layers=1, num_heads=2, d_model=16, max_len=8)
  model = Transformer(cfg)
  params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))['params']
  tokens = jax.random.randint(jax.random.key(1), (2, 9), 0, 11)
  text = {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:]}
  pairs = {k: jnp.stack([v, v[::-1]], axis=1) for k, v in text.items()}
  pairs['mask'] = jnp.ones(pairs['inputs'].shape)
  cases = [('next_token', 'embedded', '', {}, text, set()),
           ('sft', 'sft_jsonl', '', {}, {**text, 'mask': jnp.ones(text['inputs'].shape)}, set()),
           ('distill', 'embedded', 'x', {'teacher': params}, text, {'kd_kl', 'kd_ce'}),
           ('dpo', 'dpo_jsonl', '', {'reference': params}, pairs,
            {'dpo_reward_chosen', 'dpo_reward_rejected', 'dpo_reward_margin',
             'dpo_reward_accuracy'})]
  for objective, source, teacher, frozen, batch, metrics in cases:
    loss_fn = lm_objectives.make_loss_fn(_config(objective, source, teacher), model, model)
    loss, aux = loss_fn(params, frozen, batch, jax.random.key(2))
    assert loss.shape == () and set(aux) == metrics, objective
  # DPO at its own reference: log 2, whatever beta.
  loss, _ = lm_objectives.make_loss_fn(_config('dpo', 'dpo_jsonl'), model)(
      params, {'reference': params}, pairs, None)
  assert float(loss) == pytest.approx(float(jnp.log(2.0)), rel=1e-6)
