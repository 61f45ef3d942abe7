"""Autoregressive decoding with a KV cache: greedy, temperature, top-k and top-p.

`generate` jits prefill + the whole decode loop (`lax.scan`) as one function per chunk.
Generations longer than the model's context (`model.max_len`) continue in chunks: the
last `max_len // 2` tokens are re-encoded and decoding goes on, as nanoGPT crops its
context; every chunk after the first has the same shapes, so it compiles once.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from genai.models.transformer import Transformer, init_cache


def filter_logits(logits_BV: jax.Array, top_k: int = 0, top_p: float | jax.Array = 1.0
                  ) -> jax.Array:
  """Sets logits outside the top-k / nucleus (top-p) set to -inf. top_k=0, top_p=1: off."""
  neg_inf = jnp.finfo(logits_BV.dtype).min
  if top_k:
    kth_BV = jax.lax.top_k(logits_BV, top_k)[0][:, -1:]
    logits_BV = jnp.where(logits_BV < kth_BV, neg_inf, logits_BV)
  if isinstance(top_p, (int, float)) and top_p >= 1.0:
    return logits_BV  # no nucleus: skip the sort
  sorted_BV = jnp.sort(logits_BV, axis=-1)[:, ::-1]
  probs_BV = jax.nn.softmax(sorted_BV, axis=-1)
  # Keep the smallest prefix whose mass reaches top_p: a token is dropped when the mass
  # strictly before it already reaches top_p. The most likely token is always kept.
  mass_before_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV
  keep_BV = mass_before_BV < top_p
  cutoff_B1 = jnp.min(jnp.where(keep_BV, sorted_BV, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(logits_BV < cutoff_B1, neg_inf, logits_BV)


def sample_token(logits_BV: jax.Array, rng: jax.Array, temperature: float | jax.Array,
                 top_k: int = 0, top_p: float | jax.Array = 1.0) -> jax.Array:
  """One token per row; temperature 0 means greedy (argmax).

  `lax.cond` runs only the branch in use: greedy decoding skips the random draw, and
  top_p = 1 skips the vocabulary sort (together ~70 ms of a 105 ms SmolLM2 decode step at
  batch 8 on a 2-core CPU, when both were always computed and one thrown away)."""
  def greedy(logits_BV):
    return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)

  def sample(logits_BV):
    scaled_BV = logits_BV / jnp.maximum(temperature, 1e-6)
    scaled_BV = jax.lax.cond(jnp.asarray(top_p) < 1.0,
                             lambda x: filter_logits(x, top_k, top_p),
                             lambda x: filter_logits(x, top_k, 1.0) if top_k else x, scaled_BV)
    return jax.random.categorical(rng, scaled_BV, axis=-1).astype(jnp.int32)

  return jax.lax.cond(jnp.asarray(temperature) > 0, sample, greedy, logits_BV)


@functools.partial(jax.jit, static_argnames=('model', 'num_steps', 'top_k', 'num_choices'))
def _decode_chunk(model: Transformer, params, context_BP: jax.Array, rng: jax.Array,
                  temperature: jax.Array, top_p: jax.Array, *, num_steps: int, top_k: int,
                  num_choices: int = 0):
  """Prefills `context_BP` and samples `num_steps` tokens: [B, num_steps]; only ids below
  `num_choices` when it is > 0 (the logits are cut to them before sampling)."""
  b, p = context_BP.shape
  choices = num_choices or model.config.vocab_size
  cache = init_cache(model.config, b, p + num_steps, dtype=jnp.dtype(model.config.dtype))
  positions_BP = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
  logits_BPV, cache = model.apply({'params': params}, context_BP, positions_BT=positions_BP,
                                  cache=cache)
  first_B = sample_token(logits_BPV[:, -1, :choices], jax.random.fold_in(rng, 0), temperature,
                         top_k, top_p)

  def step(carry, i):
    token_B, cache = carry
    pos_B1 = jnp.full((b, 1), p + i, jnp.int32)
    logits_B1V, cache = model.apply({'params': params}, token_B[:, None], positions_BT=pos_B1,
                                    cache=cache)
    nxt_B = sample_token(logits_B1V[:, 0, :choices], jax.random.fold_in(rng, i + 1), temperature,
                         top_k, top_p)
    return (nxt_B, cache), nxt_B

  _, rest_NB = jax.lax.scan(step, (first_B, cache), jnp.arange(num_steps - 1))
  return jnp.concatenate([first_B[:, None], rest_NB.T], axis=1)


def generate(model: Transformer, params, prompt_BP, *, num_tokens: int, rng: jax.Array,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             num_choices: int = 0) -> np.ndarray:
  """Returns the prompt followed by `num_tokens` sampled tokens: int32 [B, P + num_tokens].

  `num_choices` > 0 samples only ids below it: a vocabulary whose upper ids only ever appear
  in prompts (image_gpt's class tokens) never emits them."""
  prompt_BP = np.asarray(prompt_BP, np.int32)
  if prompt_BP.ndim != 2 or prompt_BP.shape[1] == 0:
    raise ValueError(f'prompt must be a non-empty [batch, length] array, got shape {prompt_BP.shape}.')
  if num_tokens < 1:
    raise ValueError(f'num_tokens must be >= 1, got {num_tokens}.')
  if not 0.0 < top_p <= 1.0:
    raise ValueError(f'top_p must be in (0, 1], got {top_p}.')
  if temperature < 0:
    raise ValueError(f'temperature must be >= 0 (0 = greedy), got {temperature}.')
  vocab = model.config.vocab_size
  if not 0 <= num_choices <= vocab:
    raise ValueError(f'num_choices must be in [0, {vocab}] (0 = all), got {num_choices}.')
  vocab = num_choices or vocab
  if top_k < 0 or top_k > vocab:
    raise ValueError(f'top_k must be in [0, {vocab}] (0 = off), got {top_k}.')
  window = model.config.max_len
  keep = max(window // 2, 1)
  out = prompt_BP
  temperature, top_p = jnp.float32(temperature), jnp.float32(top_p)
  chunk = 0
  while out.shape[1] < prompt_BP.shape[1] + num_tokens:
    remaining = prompt_BP.shape[1] + num_tokens - out.shape[1]
    context = out if out.shape[1] + remaining <= window else out[:, -min(out.shape[1], keep):]
    steps = min(remaining, window - context.shape[1]) if context is out else window - context.shape[1]
    new = _decode_chunk(model, params, jnp.asarray(context), jax.random.fold_in(rng, chunk),
                        temperature, top_p, num_steps=steps, top_k=top_k,
                        num_choices=num_choices)
    out = np.concatenate([out, np.asarray(new)[:, :remaining]], axis=1)
    chunk += 1
  return out


def sample_rows(logits_BV: jax.Array, keys_B: jax.Array, temperature_B: jax.Array,
                top_k_B: jax.Array, top_p_B: jax.Array) -> jax.Array:
  """`sample_token` with settings per row (a server batches requests that differ).

  Row b: greedy when temperature_B[b] == 0, else a draw with keys_B[b] from the
  temperature-scaled logits kept by top_k_B[b] (0 = off) then top_p_B[b] (1 = off), the
  same rule as `filter_logits`. The vocabulary sort runs only when some row filters, and
  the draw only when some row samples."""
  temperature_B1 = jnp.maximum(temperature_B, 1e-6)[:, None]
  vocab = logits_BV.shape[-1]

  def filtered(scaled_BV):
    sorted_BV = jnp.sort(scaled_BV, axis=-1)[:, ::-1]
    k_B1 = jnp.where(top_k_B > 0, jnp.minimum(top_k_B, vocab), vocab)[:, None]
    in_k_BV = jnp.arange(vocab)[None] < k_B1
    probs_BV = jax.nn.softmax(jnp.where(in_k_BV, sorted_BV, -jnp.inf), axis=-1)
    mass_before_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV
    keep_BV = in_k_BV & (mass_before_BV < top_p_B[:, None])
    cutoff_B1 = jnp.min(jnp.where(keep_BV, sorted_BV, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(scaled_BV < cutoff_B1, jnp.finfo(scaled_BV.dtype).min, scaled_BV)

  def draw(logits_BV):
    scaled_BV = logits_BV / temperature_B1
    needs_filter = jnp.any(top_k_B > 0) | jnp.any(top_p_B < 1.0)
    scaled_BV = jax.lax.cond(needs_filter, filtered, lambda x: x, scaled_BV)
    return jax.vmap(lambda k, l: jax.random.categorical(k, l))(keys_B, scaled_BV).astype(jnp.int32)

  greedy_B = jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
  drawn_B = jax.lax.cond(jnp.any(temperature_B > 0), draw, lambda x: greedy_B, logits_BV)
  return jnp.where(temperature_B > 0, drawn_B, greedy_B)
