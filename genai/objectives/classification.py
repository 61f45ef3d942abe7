"""Softmax classification: the loss of the image and text classifiers, and the sums their
evaluations add up over fixed-size, masked batches."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def softmax_loss(logits_BK: jax.Array, labels_B: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(mean cross-entropy, accuracy) of integer labels."""
  loss = optax.softmax_cross_entropy_with_integer_labels(logits_BK, labels_B).mean()
  return loss, jnp.mean(jnp.argmax(logits_BK, -1) == labels_B)


def masked_sums(logits_BK: jax.Array, labels_B: jax.Array, mask_B: jax.Array
                ) -> dict[str, jax.Array]:
  """Sums over the rows where mask_B > 0: cross-entropy, correct predictions, and for
  class 1 (binary tasks) true positives, predicted positives and positives."""
  nll_B = optax.softmax_cross_entropy_with_integer_labels(logits_BK, labels_B)
  pred_B = jnp.argmax(logits_BK, -1)
  real_B = mask_B > 0
  return {'nll': jnp.sum(nll_B * mask_B), 'correct': jnp.sum((pred_B == labels_B) * mask_B),
          'tp': jnp.sum((pred_B == 1) & (labels_B == 1) & real_B),
          'pred_pos': jnp.sum((pred_B == 1) & real_B), 'pos': jnp.sum((labels_B == 1) & real_B)}
