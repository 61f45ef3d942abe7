"""HF transformers checkpoints in and out: logits and greedy decoding match transformers.

Randomly initialised GPT2LMHeadModel / LlamaForCausalLM (GQA, tied and untied embeddings)
are saved with save_pretrained (safetensors), imported without torch, and compared with
transformers on the same tokens; exported genai params load back into transformers.
Needs the `reference` extra (torch + transformers); skipped without it.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genai.models.transformer import Transformer
from genai.pretrained import hf
from genai.pretrained import safetensors_io
from genai.sample.decode import generate

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

HF_CONFIGS = {
    'gpt2': lambda: transformers.GPT2Config(vocab_size=101, n_positions=32, n_embd=32, n_layer=2,
                                            n_head=4, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0),
    'llama_gqa_tied': lambda: transformers.LlamaConfig(
        vocab_size=101, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        tie_word_embeddings=True, rope_theta=500.0, rms_norm_eps=1e-6),
    'llama_untied': lambda: transformers.LlamaConfig(
        vocab_size=101, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
        tie_word_embeddings=False),
}


def _hf_model(name, path):
  torch.manual_seed(0)
  config = HF_CONFIGS[name]()
  cls = transformers.GPT2LMHeadModel if name == 'gpt2' else transformers.LlamaForCausalLM
  model = cls(config).eval()
  with torch.no_grad():  # random norms/biases too, so their mapping is checked
    for n, p in model.named_parameters():
      if 'norm' in n or 'ln_' in n or n.endswith('bias'):
        p.add_(0.1 * torch.randn_like(p))
  model.save_pretrained(path, safe_serialization=True)
  return model


def _tokens(b=2, t=12, vocab=101):
  return np.random.default_rng(0).integers(0, vocab, (b, t))


def _hf_logits(model, tokens):
  with torch.no_grad():
    return model(torch.tensor(tokens)).logits.numpy()


@pytest.mark.parametrize('name', [pytest.param(n, marks=pytest.mark.slow) if n == 'llama_untied'
                                  else n for n in sorted(HF_CONFIGS)])
def test_imported_logits_and_greedy_decoding_match_transformers(name, tmp_path):
  model = _hf_model(name, tmp_path)
  cfg, params = hf.import_hf(str(tmp_path))
  tokens = _tokens()
  ours, _ = Transformer(cfg).apply({'params': params}, jnp.asarray(tokens))
  ref = _hf_logits(model, tokens)
  err = np.abs(np.asarray(ours) - ref).max()
  assert err < 1e-4, err
  # Greedy decoding with genai's KV cache == transformers' greedy generate.
  prompt = tokens[:, :5]
  with torch.no_grad():
    want = model.generate(torch.tensor(prompt), max_new_tokens=12, do_sample=False,
                          min_new_tokens=12, pad_token_id=0).numpy()
  got = generate(Transformer(cfg), params, prompt, num_tokens=12, rng=jax.random.key(0),
                 temperature=0.0)
  np.testing.assert_array_equal(np.asarray(got), want)


@pytest.mark.parametrize('name', [pytest.param(n, marks=pytest.mark.slow) if n == 'llama_untied'
                                  else n for n in sorted(HF_CONFIGS)])
def test_export_round_trip_loads_in_transformers_with_identical_logits(name, tmp_path):
  _hf_model(name, tmp_path / 'in')
  cfg, params = hf.import_hf(str(tmp_path / 'in'))
  params = jax.tree.map(lambda x: x + 0.01, params)  # changed, as after fine-tuning
  hf.export_hf(cfg, params, str(tmp_path / 'out'))
  cls = transformers.GPT2LMHeadModel if name == 'gpt2' else transformers.LlamaForCausalLM
  back = cls.from_pretrained(str(tmp_path / 'out')).eval()
  tokens = _tokens()
  ours, _ = Transformer(cfg).apply({'params': params}, jnp.asarray(tokens))
  np.testing.assert_allclose(_hf_logits(back, tokens), np.asarray(ours), atol=1e-4)
  # And genai reads its own export back to the same params.
  cfg2, params2 = hf.import_hf(str(tmp_path / 'out'))
  assert cfg2 == cfg
  jax.tree.map(np.testing.assert_array_equal, params2, jax.tree.map(np.asarray, params))


def test_import_into_scan_layers_layout(tmp_path):
  model = _hf_model('llama_gqa_tied', tmp_path)
  cfg, params = hf.import_hf(str(tmp_path), scan_layers=True)
  tokens = _tokens()
  ours, _ = Transformer(cfg).apply({'params': params}, jnp.asarray(tokens))
  np.testing.assert_allclose(np.asarray(ours), _hf_logits(model, tokens), atol=1e-4)


def test_bad_checkpoints_name_the_tensor_or_field(tmp_path):
  _hf_model('llama_gqa_tied', tmp_path)
  cfg_path = tmp_path / 'config.json'
  good = json.loads(cfg_path.read_text())
  # Shapes that disagree with config.json: the tensor is named.
  cfg_path.write_text(json.dumps({**good, 'intermediate_size': 64}))
  with pytest.raises(ValueError, match=r"tensor '0.gate' has shape \(32, 48\), but the config needs \(32, 64\)"):
    hf.import_hf(str(tmp_path))
  # More layers in the config than in the file: the missing tensor is named.
  cfg_path.write_text(json.dumps({**good, 'num_hidden_layers': 3}))
  with pytest.raises(ValueError, match=r"tensor '2.q' is missing"):
    hf.import_hf(str(tmp_path))
  cfg_path.write_text(json.dumps({**good, 'model_type': 'mamba'}))
  with pytest.raises(ValueError, match=r"model_type='mamba' is not supported"):
    hf.import_hf(str(tmp_path))
  cfg_path.write_text(json.dumps(good))
  # A truncated file names the first incomplete tensor.
  st = tmp_path / 'model.safetensors'
  st.write_bytes(st.read_bytes()[:-1000])
  with pytest.raises(ValueError, match=r'is truncated: tensor .* download it again'):
    hf.import_hf(str(tmp_path))
  os.remove(st)
  with pytest.raises(FileNotFoundError, match='holds no model.safetensors'):
    hf.import_hf(str(tmp_path))


def test_safetensors_io_round_trip_and_bf16(tmp_path):
  import ml_dtypes
  arrays = {'a': np.arange(6, dtype=np.float32).reshape(2, 3), 'b': np.array([1, 2], np.int64),
            'c': np.array([1.5, -2.25], ml_dtypes.bfloat16)}
  safetensors_io.write(str(tmp_path / 'x.safetensors'), arrays)
  back = safetensors_io.read(str(tmp_path / 'x.safetensors'))
  np.testing.assert_array_equal(back['a'], arrays['a'])
  np.testing.assert_array_equal(back['b'], arrays['b'])
  assert back['c'].dtype == np.float32 and back['c'].tolist() == [1.5, -2.25]
  from safetensors.numpy import load_file  # the reference reader agrees
  ref = load_file(str(tmp_path / 'x.safetensors'))
  np.testing.assert_array_equal(ref['a'], arrays['a'])


def test_gpt2_vocab_merges_tokenizer_matches_the_byte_level_bpe_it_came_from(tmp_path):
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  from genai.data import tokenizers
  from genai.pretrained import sources
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  text = ['To be, or not to be, that is the question:', 'Whether tis nobler in the mind'] * 20
  tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=300, special_tokens=['<|endoftext|>'],
                                                    initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  tok.model.save(str(tmp_path))  # vocab.json + merges.txt, GPT-2's layout
  ours = tokenizers.HFTokenizer.from_vocab_merges(str(tmp_path / 'vocab.json'),
                                                  str(tmp_path / 'merges.txt'))
  for s in ['To be, or not', 'héllo wörld 123', 'question:\n  nobler']:
    assert ours.encode(s).tolist() == tok.encode(s).ids
    assert ours.decode(ours.encode(s)) == s
  assert ours.eos_id == tok.token_to_id('<|endoftext|>')
  # An HF GPT-2 directory with vocab.json/merges.txt brings its tokenizer along.
  transformers.GPT2LMHeadModel(transformers.GPT2Config(
      vocab_size=320, n_positions=16, n_embd=16, n_layer=1, n_head=2)).save_pretrained(tmp_path)
  cfg, _, loaded = sources.load(f'hf:{tmp_path}')
  assert cfg.arch == 'gpt2' and loaded.encode('To be').tolist() == tok.encode('To be').ids
  # A tokenizer with more ids than the model's embedding table is refused.
  transformers.GPT2LMHeadModel(transformers.GPT2Config(
      vocab_size=200, n_positions=16, n_embd=16, n_layer=1, n_head=2)).save_pretrained(tmp_path)
  with pytest.raises(ValueError, match=r'tokenizer has \d+ ids but the model embeds only 200'):
    sources.load(f'hf:{tmp_path}')


def test_structurally_pruned_llama_exports_with_its_own_head_dim(tmp_path):
  from genai.compress.structured import prune_structure
  _hf_model('llama_gqa_tied', tmp_path / 'in')
  cfg, params = hf.import_hf(str(tmp_path / 'in'))
  small_cfg, small = prune_structure(cfg, params, heads_per_group=1, d_ff=24)
  assert small_cfg.num_heads * small_cfg.head_dim < small_cfg.d_model
  hf.export_hf(small_cfg, small, str(tmp_path / 'out'))
  back = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path / 'out')).eval()
  tokens = _tokens()
  ours, _ = Transformer(small_cfg).apply({'params': small}, jnp.asarray(tokens))
  np.testing.assert_allclose(_hf_logits(back, tokens), np.asarray(ours), atol=1e-4)
  assert hf.import_hf(str(tmp_path / 'out'))[0] == small_cfg
