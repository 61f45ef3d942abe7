"""Direct Preference Optimization (Rafailov et al. 2023) for the LM.

For a prompt x with a preferred response y_w and a dispreferred y_l, and a frozen reference
policy pi_ref (the model the run started from):

  loss = -log sigmoid(beta * [(log pi(y_w|x) - log pi_ref(y_w|x))
                              - (log pi(y_l|x) - log pi_ref(y_l|x))])

Sequence log-probabilities sum the response tokens only (the SFT mask: prompt and padding
excluded). beta sets how far the policy may move from the reference (0.1 is usual).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def sequence_logprobs(logits_BTV: jax.Array, targets_BT: jax.Array, mask_BT: jax.Array
                      ) -> jax.Array:
  """sum_t mask[b, t] * log softmax(logits[b, t])[targets[b, t]]: [B]."""
  logp_BTV = jax.nn.log_softmax(logits_BTV.astype(jnp.float32), axis=-1)
  tok_BT = jnp.take_along_axis(logp_BTV, targets_BT[..., None], axis=-1)[..., 0]
  return jnp.sum(tok_BT * mask_BT.astype(tok_BT.dtype), axis=-1)


def dpo_loss(policy_chosen_B: jax.Array, policy_rejected_B: jax.Array,
             ref_chosen_B: jax.Array, ref_rejected_B: jax.Array, beta: float
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(mean DPO loss, aux): aux holds the implicit rewards beta * (log pi - log pi_ref) of
  both responses, their margin, and the fraction of pairs where chosen's reward is higher."""
  chosen_B = beta * (policy_chosen_B - ref_chosen_B)
  rejected_B = beta * (policy_rejected_B - ref_rejected_B)
  margin_B = chosen_B - rejected_B
  loss = -jnp.mean(jax.nn.log_sigmoid(margin_B))
  return loss, {'reward_chosen': jnp.mean(chosen_B), 'reward_rejected': jnp.mean(rejected_B),
                'reward_margin': jnp.mean(margin_B),
                'reward_accuracy': jnp.mean((margin_B > 0).astype(jnp.float32))}
