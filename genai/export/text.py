"""Serving signatures of a decoder-only LM (genai/models/transformer.py).

Shapes: B batch (fixed at export), P prompt length (fixed; shorter prompts are right-padded
and their true lengths passed), N tokens generated, S cache length, L layers, K KV heads,
D head dim, V vocabulary.

'decode_step' (also the one TFLite converts): one token per row against a KV cache that the
caller keeps, as a serving loop or an on-device app would:
  tokens [B, 1] int32, positions [B, 1] int32 (the slot each token is written to),
  cache_k, cache_v [L, B, K, S, D] float32 (genai.models.transformer.init_cache's layout)
  -> logits [B, V] float32, cache_k, cache_v (updated).
  Start from zero caches and feed the prompt one token at a time (or prefill with the
  whole-generation signature's model in JAX); position p attends to cache slots 0..p.

'generate' (also 'serving_default'): prefill and the whole sampling loop in one call,
mirroring genai.sample.decode._decode_chunk (one lax.scan; the cache never leaves the call):
  prompt [B, P] int32 (row b's tokens in [:, :prompt_lengths[b]], the rest any id),
  prompt_lengths [B] int32 in [1, P], temperature [] float32 (0 = greedy),
  top_p [] float32 (1 = off), seed [] int32
  -> tokens [B, N] int32 (the N new tokens of each row, without the prompt).
  P + N must be <= max_len (no chunked continuation as `generate` does past the context).
  Right padding needs no attention mask: row b decodes its i-th new token at position
  prompt_lengths[b] + i, overwriting the pad's cache slot before any query can see it
  (keys at positions beyond the query's are masked causally).
Sampling draws from jax.random.key(seed) (threefry), so a SavedModel run reproduces JAX's
samples for the same seed; greedy tokens equal `genai.sample.decode.generate`'s.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from genai.export.saved_model import Signature
from genai.models.transformer import Transformer, init_cache
from genai.sample.decode import sample_token


def decode_step_fn(model: Transformer):
  """The 'decode_step' function: (params, inputs) -> {'logits', 'cache_k', 'cache_v'}."""
  def fn(params, inputs):
    # The signature keeps every layer in one tensor; the model takes one per layer.
    cache = {n: inputs[f'cache_{n}'] if model.config.scan_layers else tuple(inputs[f'cache_{n}'])
             for n in ('k', 'v')}
    logits_B1V, cache = model.apply({'params': params}, inputs['tokens'],
                                    positions_BT=inputs['positions'], cache=cache)
    return {'logits': logits_B1V[:, 0], 'cache_k': jnp.stack(cache['k']),
            'cache_v': jnp.stack(cache['v'])}
  return fn


def generate_fn(model: Transformer, num_tokens: int, top_k: int = 0):
  """The 'generate' function: (params, inputs) -> {'tokens': [B, num_tokens] int32}."""
  def fn(params, inputs):
    prompt_BP = inputs['prompt']
    lengths_B = jnp.clip(inputs['prompt_lengths'], 1, prompt_BP.shape[1])  # out of range: clipped
    temperature, top_p = inputs['temperature'], inputs['top_p']
    rng = jax.random.key(inputs['seed'])
    b, p = prompt_BP.shape
    cache = init_cache(model.config, b, p + num_tokens, dtype=jnp.dtype(model.config.dtype))
    positions_BP = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
    logits_BPV, cache = model.apply({'params': params}, prompt_BP, positions_BT=positions_BP,
                                    cache=cache)
    last_BV = jnp.take_along_axis(logits_BPV, (lengths_B - 1)[:, None, None], axis=1)[:, 0]
    first_B = sample_token(last_BV, jax.random.fold_in(rng, 0), temperature, top_k, top_p)

    def step(carry, i):
      token_B, cache = carry
      pos_B1 = (lengths_B + i)[:, None]
      logits_B1V, cache = model.apply({'params': params}, token_B[:, None], positions_BT=pos_B1,
                                      cache=cache)
      nxt_B = sample_token(logits_B1V[:, 0], jax.random.fold_in(rng, i + 1), temperature,
                           top_k, top_p)
      return (nxt_B, cache), nxt_B

    _, rest_NB = jax.lax.scan(step, (first_B, cache), jnp.arange(num_tokens - 1))
    return {'tokens': jnp.concatenate([first_B[:, None], rest_NB.T], axis=1)}
  return fn


def signatures(model: Transformer, *, batch_size: int = 1, prompt_len: int = 32,
               num_tokens: int = 64, cache_len: int | None = None, top_k: int = 0
               ) -> dict[str, Signature]:
  """{'decode_step', 'generate'} with the shapes above; raises on shapes the model can't take."""
  cfg = model.config
  cache_len = cache_len or cfg.max_len
  for name, value in (('batch_size', batch_size), ('prompt_len', prompt_len),
                      ('num_tokens', num_tokens), ('cache_len', cache_len)):
    if value < 1:
      raise ValueError(f'--{name}={value} must be >= 1.')
  if cache_len > cfg.max_len:
    raise ValueError(f'--cache_len={cache_len} exceeds the model context max_len={cfg.max_len}.')
  if prompt_len + num_tokens > cfg.max_len:
    raise ValueError(f'--prompt_len={prompt_len} + --num_tokens={num_tokens} exceeds the model '
                     f'context max_len={cfg.max_len}; lower one of them.')
  if not 0 <= top_k <= cfg.vocab_size:
    raise ValueError(f'--top_k={top_k} must be in [0, {cfg.vocab_size}] (0 = off).')
  b, f32, i32 = batch_size, jnp.float32, jnp.int32
  cache = jax.ShapeDtypeStruct((cfg.num_layers, b, cfg.num_kv_heads, cache_len, cfg.head_dim), f32)
  spec = jax.ShapeDtypeStruct
  return {
      'decode_step': Signature(decode_step_fn(model), {
          'tokens': spec((b, 1), i32), 'positions': spec((b, 1), i32),
          'cache_k': cache, 'cache_v': cache}),
      'generate': Signature(generate_fn(model, num_tokens, top_k), {
          'prompt': spec((b, prompt_len), i32), 'prompt_lengths': spec((b,), i32),
          'temperature': spec((), f32), 'top_p': spec((), f32), 'seed': spec((), i32)},
          tflite=False),
  }
