"""LM export: a briefly trained char GPT to a SavedModel (decode_step and generate) and
TFLite (decode_step, float and int8), each checked against the JAX model."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, load_config
from experiments import lm
from genai.export import tflite
from genai.export import workdir as export_workdir
from genai.families import lm as lm_family
from genai.models.transformer import init_cache
from genai.sample import decode

B, P, N = 2, 4, 6


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  """(model, params, export dir, export_info) of a 3-step pydoc_char run."""
  root = tmp_path_factory.mktemp('lm_export')
  config = load_config(REPO / 'configs/lm/pydoc_char.py')
  config.train.num_steps = 3
  config.train.steps_per_call = 1
  config.train.eval_every = 3
  config.train.checkpoint_every = 3
  config.optimizer.warmup_steps = 1
  config.eval.sample_tokens = 0
  lm.train_and_evaluate(config, str(root / 'w'))
  _, model, params, _ = lm_family.load_workdir(str(root / 'w'))
  out = str(root / 'out')
  info = export_workdir.export_workdir(str(root / 'w'), out, format='both', quantize='int8',
                                       batch_size=B, prompt_len=P, num_tokens=N)
  return model, params, out, info


@pytest.fixture(scope='module')
def loaded(exported):
  return tf.saved_model.load(os.path.join(exported[2], 'saved_model', '1'))


def _prompt(vocab):
  return np.random.RandomState(0).randint(0, vocab, (B, P)).astype(np.int32)


def test_layout_and_signature_shapes(exported, loaded):
  model, _, out, info = exported
  cfg = model.config
  assert info['family'] == 'lm' and info['default_signature'] == 'generate'
  assert set(info['files']) == {'saved_model/1', 'decode_step.tflite', 'decode_step_int8.tflite'}
  assert os.path.isdir(os.path.join(out, 'saved_model/1/variables'))
  assert set(loaded.signatures) == {'serving_default', 'generate', 'decode_step'}
  cache = f'float32{[cfg.num_layers, B, cfg.num_kv_heads, cfg.max_len, cfg.head_dim]}'
  assert info['signatures']['decode_step']['inputs'] == {
      'tokens': f'int32{[B, 1]}', 'positions': f'int32{[B, 1]}', 'cache_k': cache,
      'cache_v': cache}
  assert info['signatures']['decode_step']['outputs']['logits'] == f'float32{[B, cfg.vocab_size]}'
  assert info['signatures']['generate']['outputs'] == {'tokens': f'int32{[B, N]}'}
  # Params are variables, not constants baked into the graph.
  n_params = sum(np.size(x) for x in jax.tree.leaves(exported[1]))
  assert sum(np.size(v) for v in loaded.tf_var_leaves) == n_params


def _step_inputs(model, tokens_B, pos, cache):
  return {'tokens': np.asarray(tokens_B, np.int32)[:, None],
          'positions': np.full((B, 1), pos, np.int32),
          'cache_k': np.asarray(cache['k']), 'cache_v': np.asarray(cache['v'])}


def _run_prompt(step, model, prompt):
  """Feeds the prompt one token at a time from zero caches: the last logits [B, V]."""
  cache = init_cache(model.config, B)
  for p in range(P):
    o = step(**_step_inputs(model, prompt[:, p], p, cache))
    cache = {'k': np.asarray(o['cache_k']), 'v': np.asarray(o['cache_v'])}
  return np.asarray(o['logits'])


def test_decode_step_matches_jax_full_forward(exported, loaded):
  model, params, _, _ = exported
  prompt = _prompt(model.config.vocab_size)
  sig = loaded.signatures['decode_step']
  got = _run_prompt(lambda **kw: sig(**{k: tf.constant(v) for k, v in kw.items()}), model, prompt)
  want = np.asarray(model.apply({'params': params}, jnp.asarray(prompt))[0][:, -1])
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_generate_greedy_equals_decode_generate(exported, loaded):
  model, params, _, _ = exported
  prompt = _prompt(model.config.vocab_size)
  lengths = np.array([P, P - 1], np.int32)  # row 1: a right-padded shorter prompt
  out = loaded.signatures['generate'](
      prompt=tf.constant(prompt), prompt_lengths=tf.constant(lengths),
      temperature=tf.constant(0.0), top_p=tf.constant(1.0), seed=tf.constant(0))
  got = out['tokens'].numpy()
  assert got.shape == (B, N) and got.dtype == np.int32
  want0 = decode.generate(model, params, prompt[:1], num_tokens=N, rng=jax.random.key(0),
                          temperature=0.0)[:, P:]
  want1 = decode.generate(model, params, prompt[1:, :P - 1], num_tokens=N,
                          rng=jax.random.key(0), temperature=0.0)[:, P - 1:]
  np.testing.assert_array_equal(got, np.concatenate([want0, want1]))


def test_generate_sampling_reproduces_jax_for_a_seed(exported, loaded):
  model, params, _, _ = exported
  inputs = {'prompt': _prompt(model.config.vocab_size),
            'prompt_lengths': np.full((B,), P, np.int32), 'temperature': np.float32(1.0),
            'top_p': np.float32(0.9), 'seed': np.int32(7)}
  run = lambda x: loaded.signatures['generate'](
      **{k: tf.constant(v) for k, v in x.items()})['tokens'].numpy()
  got = run(inputs)
  want = jax.jit(lm_family.generate_fn(model, N))(params, inputs)['tokens']
  np.testing.assert_array_equal(got, np.asarray(want))
  assert not np.array_equal(got, run(dict(inputs, seed=np.int32(8))))


def test_tflite_decode_step_float_and_int8(exported):
  model, params, out, info = exported
  prompt = _prompt(model.config.vocab_size)
  want = np.asarray(model.apply({'params': params}, jnp.asarray(prompt))[0][:, -1])
  got = _run_prompt(tflite.Runner(os.path.join(out, 'decode_step.tflite'), 'decode_step'),
                    model, prompt)
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
  got8 = _run_prompt(tflite.Runner(os.path.join(out, 'decode_step_int8.tflite')), model, prompt)
  assert np.abs(got8 - want).max() < 0.05 * np.abs(want).max() + 0.05
  assert info['files']['decode_step_int8.tflite'] < info['files']['decode_step.tflite']


def test_bad_shapes_are_clear_errors(exported):
  model = exported[0]
  with pytest.raises(ValueError, match='exceeds the model context'):
    lm_family.signatures(model, prompt_len=model.config.max_len, num_tokens=1)
  with pytest.raises(ValueError, match='--batch_size=0 must be >= 1'):
    lm_family.signatures(model, batch_size=0, prompt_len=2, num_tokens=2)
