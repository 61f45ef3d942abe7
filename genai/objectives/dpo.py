"""Direct Preference Optimization (Rafailov et al. 2023) for the LM.

For a prompt x with a preferred response y_w and a dispreferred y_l, and a frozen reference
policy pi_ref (the model the run started from):

  loss = -log sigmoid(beta * [(log pi(y_w|x) - log pi_ref(y_w|x))
                              - (log pi(y_l|x) - log pi_ref(y_l|x))])

Sequence log-probabilities sum the response tokens only (the SFT mask: prompt and padding
excluded). beta sets how far the policy may move from the reference (0.1 is usual).

`dpo_objective` is the LM objective on preference batches (arrays [B, 2, T]: chosen, rejected),
with the reference's params in `frozen['reference']`; `evaluate` scores held-out pairs.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


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


def make_logps(model: Any):
  """(params, batch, rng=None) -> sequence log-probs [B, 2] of the chosen and rejected
  responses (batch arrays [B, 2, T]), both through one forward pass of 2B rows."""
  def logps(params, batch, rng=None):
    b, two, t = batch['inputs'].shape
    flat = lambda x: x.reshape(b * two, t)
    rngs = None if rng is None else {'dropout': rng}
    logits, _ = model.apply({'params': params}, flat(batch['inputs']),
                            deterministic=rng is None, rngs=rngs)
    return sequence_logprobs(logits, flat(batch['targets']), flat(batch['mask'])).reshape(b, two)
  return logps


def dpo_objective(model: Any, *, beta: float, sft_weight: float = 0.0):
  """loss_fn(params, frozen, batch, rng) -> (DPO loss, {'dpo_reward_*', ...}) against the
  frozen reference `frozen['reference']` (run without dropout, no gradient). `sft_weight`
  adds that times the chosen responses' NLL per token (RPO, Pang et al. 2024), which keeps
  DPO from lowering the likelihood of everything."""
  logps = make_logps(model)

  def loss_fn(params, frozen, batch, rng):
    ref = jax.lax.stop_gradient(logps(frozen['reference'], batch))
    pol = logps(params, batch, rng)
    loss, aux = dpo_loss(pol[:, 0], pol[:, 1], ref[:, 0], ref[:, 1], beta)
    if sft_weight:  # + NLL per token of the chosen responses (keeps them likely)
      nll = -jnp.sum(pol[:, 0]) / jnp.maximum(jnp.sum(batch['mask'][:, 0]), 1.0)
      loss, aux = loss + sft_weight * nll, {**aux, 'chosen_nll': nll}
    return loss, {f'dpo_{k}': v for k, v in aux.items()}

  return loss_fn


def evaluate(model: Any, params: Any, reference: Any, batches, beta: float
             ) -> dict[str, float]:
  """Held-out DPO loss and preference accuracy (chosen more likely than rejected, as
  implicit rewards) of `params` against `reference` over preference `batches`."""
  logps = jax.jit(make_logps(model))
  pol = np.concatenate([np.asarray(logps(params, b)) for b in batches])
  refl = np.concatenate([np.asarray(logps(reference, b)) for b in batches])
  loss, aux = dpo_loss(pol[:, 0], pol[:, 1], refl[:, 0], refl[:, 1], beta)
  return {'val/dpo_loss': float(loss), 'val/reward_accuracy': float(aux['reward_accuracy']),
          'val/reward_margin': float(aux['reward_margin']),
          'val/logp_chosen_minus_rejected': float(np.mean(pol[:, 0] - pol[:, 1]))}
