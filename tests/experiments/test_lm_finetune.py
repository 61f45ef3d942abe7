"""Fine-tuning on the shared loop: init_from a workdir or an HF checkpoint, freezing by
regex, LoRA (base frozen, adapters merged on export), SFT with the loss on responses."""
import json


import jax
import numpy as np
import pytest

from configs.lm import pydoc_char
from experiments import lm
from genai.families import lm as lm_family
from genai.data import sft
from genai.data import tokenizers
from genai.pretrained import hf


def _config(**kw):
  c = pydoc_char.get_config('runlocal')
  c.model.arch = 'llama'
  c.model.num_kv_heads = 1
  c.eval.sample_tokens = 4
  for key, value in kw.items():
    block, _, name = key.rpartition('.')
    c[block][name] = value
  return c


@pytest.fixture(scope='module')
def base_workdir(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp('base'))
  lm.train_and_evaluate(_config(), wd)
  return wd


def _params(wd):
  return jax.tree.map(np.asarray, lm_family.load_workdir(wd)[2])


@pytest.mark.slow  # trainings
def test_lora_trains_only_adapters_and_merges_for_sampling(base_workdir, tmp_path):
  wd = str(tmp_path)
  c = _config(**{'model.init_from': f'workdir:{base_workdir}', 'lora.rank': 4,
                 'lora.targets': r'attn/(qkv|out)$|mlp/fc_in$', 'optimizer.learning_rate': 1e-2})
  state = lm.train_and_evaluate(c, wd)
  base = _params(base_workdir)
  # The base weights in the fine-tuned state are the pretrained ones, bit for bit.
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, state['params']), base)
  assert set(state['lora']) == {'layer_0/attn/qkv', 'layer_0/attn/out', 'layer_0/mlp/fc_in'}
  assert all(np.abs(np.asarray(a['b'])).max() > 0 for a in state['lora'].values())
  # Only the adapters have optimizer state.
  n_opt = sum(x.size for x in jax.tree.leaves(state['opt_state']))
  assert n_opt <= 2 * sum(x.size for x in jax.tree.leaves(state['lora'])) + 10
  merged = _params(wd)  # load_workdir merges the adapters
  assert np.abs(merged['layer_0']['attn']['qkv']['kernel']
                - base['layer_0']['attn']['qkv']['kernel']).max() > 0
  np.testing.assert_array_equal(merged['layer_0']['mlp']['fc_out']['kernel'],
                                base['layer_0']['mlp']['fc_out']['kernel'])
  assert lm_family.sample(wd, 'The ', num_tokens=5)[0].startswith('The ')


@pytest.mark.slow  # trainings
def test_freeze_regex_keeps_matching_params(base_workdir, tmp_path):
  c = _config(**{'model.init_from': f'workdir:{base_workdir}', 'train.freeze': r'^embed|attn/'})
  state = lm.train_and_evaluate(c, str(tmp_path))
  base, new = _params(base_workdir), jax.tree.map(np.asarray, state['params'])
  np.testing.assert_array_equal(new['embed']['embedding'], base['embed']['embedding'])
  np.testing.assert_array_equal(new['layer_0']['attn']['qkv']['kernel'],
                                base['layer_0']['attn']['qkv']['kernel'])
  assert np.abs(new['layer_0']['mlp']['fc_in']['kernel']
                - base['layer_0']['mlp']['fc_in']['kernel']).max() > 0
  with pytest.raises(ValueError, match='freezes every parameter'):
    lm.train_and_evaluate(_config(**{'train.freeze': '.'}), str(tmp_path / 'all'))


@pytest.mark.slow  # trainings
def test_init_from_changes_only_shape_free_fields(base_workdir, tmp_path):
  c = _config(**{'model.init_from': f'workdir:{base_workdir}', 'model.scan_layers': True,
                 'train.num_steps': 4})
  state = lm.train_and_evaluate(c, str(tmp_path))
  assert 'layers' in state['params']  # re-laid out for the layer scan
  with pytest.raises(ValueError, match='unknown source|not a known source'):
    lm.train_and_evaluate(_config(**{'model.init_from': 'torch:/x'}), str(tmp_path / 'b'))


def _jsonl(path, rows):
  with open(path, 'w') as f:
    for r in rows:
      f.write(json.dumps(r) + '\n')
  return str(path)


def test_sft_mask_covers_exactly_the_response():
  tok = tokenizers.CharTokenizer.from_text('abcdefgh ')
  ex = sft.encode_examples([{'prompt': 'abc', 'response': 'de'}], tok, block_size=8)
  # tokens: a b c d e <pad>...; targets = tokens[1:]: b c d e 0 0 0 0
  assert ex['inputs'][0, :5].tolist() == tok.encode('abcde').tolist()
  np.testing.assert_array_equal(ex['mask'][0], [0, 0, 1, 1, 0, 0, 0, 0])  # targets d, e
  with pytest.raises(ValueError, match='the prompt alone has 9 tokens'):
    sft.encode_examples([{'prompt': 'abcdefgha', 'response': 'b'}], tok, block_size=8)


@pytest.mark.slow  # trainings
def test_sft_trains_from_jsonl_with_masked_loss(base_workdir, tmp_path):
  rows = [{'prompt': f'Q{i}: what is {i}+1? A: ', 'response': f'{i + 1}.'} for i in range(40)]
  path = _jsonl(tmp_path / 'sft.jsonl', rows)
  c = _config(**{'model.init_from': f'workdir:{base_workdir}', 'data.source': 'sft_jsonl',
                 'data.path': path, 'data.block_size': 24, 'data.val_fraction': 0.1})
  c.model.max_len = 24
  lines = []
  lm.workdir_lib.run(c, str(tmp_path / 'wd'), lm.build_task, print_fn=lines.append)
  assert any(l.startswith('eval @ 6: val/loss') for l in lines)
  with pytest.raises(ValueError, match=r'bad.jsonl:1 needs "prompt" and "response"'):
    sft.read_jsonl(_jsonl(tmp_path / 'bad.jsonl', [{'text': 'x'}]))


@pytest.mark.slow  # trainings
def test_export_hf_of_a_workdir_loads_in_transformers(base_workdir, tmp_path):
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  out = str(tmp_path / 'hf')
  lm_family.export_hf(base_workdir, out)
  _, model, params, tok = lm_family.load_workdir(base_workdir)
  back = transformers.LlamaForCausalLM.from_pretrained(out).eval()
  tokens = tok.encode('The quick brown fox')[None]
  with torch.no_grad():
    ref = back(torch.tensor(np.asarray(tokens, np.int64))).logits.numpy()
  ours = np.asarray(model.apply({'params': params}, tokens)[0])
  np.testing.assert_allclose(ref, ours, atol=1e-4)
  # An HF directory without tokenizer files cannot start a run.
  with pytest.raises(ValueError, match='has no tokenizer'):
    lm.train_and_evaluate(_config(**{'model.init_from': f'hf:{out}'}), str(tmp_path / 'x'))
  cfg, _ = hf.import_hf(out)
  assert cfg.num_layers == model.config.num_layers



@pytest.mark.slow  # trainings
def test_prune_during_fine_tuning_keeps_the_sparsity(base_workdir, tmp_path):
  from genai.compress import pruning
  c = _config(**{'model.init_from': f'workdir:{base_workdir}', 'prune.kind': 'magnitude',
                 'prune.sparsity': 0.5, 'prune.begin_step': 0})
  state = lm.train_and_evaluate(c, str(tmp_path))
  params = jax.tree.map(np.asarray, state['params'])
  assert pruning.sparsity_of(params) == pytest.approx(0.5, abs=0.01)
  # The checkpoint holds the zeros too, and the sampler reads them back.
  assert pruning.sparsity_of(_params(str(tmp_path))) == pytest.approx(0.5, abs=0.01)
  with pytest.raises(ValueError, match='cannot be combined'):
    lm.train_and_evaluate(_config(**{'prune.kind': 'nm', 'lora.rank': 2}), str(tmp_path / 'x'))


@pytest.mark.slow  # trainings
def test_distillation_from_a_teacher_workdir(base_workdir, tmp_path):
  wd = str(tmp_path)
  c = _config(**{'distill.teacher': f'workdir:{base_workdir}', 'model.d_model': 16,
                 'distill.alpha': 0.7})
  lines = []
  state = lm.workdir_lib.run(c, wd, lm.build_task, print_fn=lines.append)
  teacher = _params(base_workdir)
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, state['teacher']), teacher)
  assert state['params']['embed']['embedding'].shape[1] == 16
  assert state['params']['embed']['embedding'].shape[0] == teacher['embed']['embedding'].shape[0]
  # The student workdir samples with the teacher's tokenizer, without loading the teacher.
  assert lm_family.sample(wd, 'The ', num_tokens=3)[0].startswith('The ')
  with pytest.raises(ValueError, match='distill.alpha=1.5'):
    lm.train_and_evaluate(_config(**{'distill.teacher': f'workdir:{base_workdir}',
                                     'distill.alpha': 1.5}), str(tmp_path / 'bad'))


@pytest.mark.slow  # trainings
def test_quantization_aware_training_runs_on_the_loop(base_workdir, tmp_path):
  c = _config(**{'model.init_from': f'workdir:{base_workdir}', 'model.qat': 'int8'})
  lines = []
  lm.workdir_lib.run(c, str(tmp_path), lm.build_task, print_fn=lines.append)
  assert any(l.startswith('eval @ 6: val/loss') for l in lines)
