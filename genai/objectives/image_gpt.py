"""The autoregressive image model's likelihood (experiments/image_gpt.py).

The transformer reads [prefix, t_0, ..., t_{N-2}] and predicts t_0, ..., t_{N-1}: the prefix
is one token above the image vocabulary (the class, or one start token for an unconditional
model). Only the `num_image_tokens` image ids are outcomes: the softmax runs over them alone,
so the loss is the exact negative log-likelihood of the model the sampler draws from
(genai.sample.decode.generate with num_choices = num_image_tokens).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from genai.objectives.vae import nats_to_bits_per_dim  # pylint: disable=unused-import


def model_inputs(tokens_BN: jax.Array, prefix_B: jax.Array) -> jax.Array:
  """[prefix, t_0, ..., t_{N-2}]: the inputs whose next tokens are t_0, ..., t_{N-1}."""
  return jnp.concatenate([prefix_B[:, None].astype(jnp.int32), tokens_BN[:, :-1]], axis=1)


def token_nll(logits_BNV: jax.Array, tokens_BN: jax.Array, num_image_tokens: int) -> jax.Array:
  """-log p(t_i | t_<i, prefix) in nats, [B, N], from logits cut to the image vocabulary."""
  logp_BNV = jax.nn.log_softmax(logits_BNV[..., :num_image_tokens].astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(logp_BNV, tokens_BN[..., None], axis=-1)[..., 0]


def image_nll(model: Any, params: Any, tokens_BN: jax.Array, prefix_B: jax.Array,
              num_image_tokens: int) -> tuple[jax.Array, jax.Array]:
  """(-log p(image | prefix) in nats [B], logits [B, N, V]) under `model` (a Transformer)."""
  logits_BNV, _ = model.apply({'params': params}, model_inputs(tokens_BN, prefix_B))
  return jnp.sum(token_nll(logits_BNV, tokens_BN, num_image_tokens), axis=-1), logits_BNV


def make_loss_fn(model: Any, num_image_tokens: int):
  """loss(params, batch{'tokens' [B, N], 'prefix' [B]}) -> (mean nats per token, next-token
  accuracy): the shape genai.train.supervised.make_train_step takes."""
  def loss_fn(params, batch):
    tokens = batch['tokens']
    nll_B, logits = image_nll(model, params, tokens, batch['prefix'], num_image_tokens)
    accuracy = jnp.mean(jnp.argmax(logits[..., :num_image_tokens], -1) == tokens)
    return jnp.mean(nll_B) / tokens.shape[1], accuracy
  return loss_fn
