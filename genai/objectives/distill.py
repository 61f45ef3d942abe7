"""Knowledge distillation loss (Hinton et al. 2015), as DistilBERT/DistilGPT2 train with it.

  loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
         + (1 - alpha) * cross_entropy(student, targets)

averaged over the positions where `mask` is 1 (all positions by default). The T^2 factor
keeps the soft-target gradients on the same scale as the hard-label ones when T changes.
`distill_objective` is the LM objective: the teacher's logits come from its frozen params
in the same step, on the same batch.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def kd_loss(student_logits, teacher_logits, targets, *, temperature: float = 2.0,
            alpha: float = 0.5, mask=None):
  """(loss, {'kl', 'ce'}) for logits [..., V] and integer targets [...]."""
  if not 0.0 <= alpha <= 1.0 or temperature <= 0:
    raise ValueError(f'distill.alpha={alpha} must be in [0, 1] and distill.temperature='
                     f'{temperature} > 0.')
  s = student_logits.astype(jnp.float32)
  t = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32))
  log_ps = jax.nn.log_softmax(s / temperature, axis=-1)
  log_pt = jax.nn.log_softmax(t / temperature, axis=-1)
  kl = jnp.sum(jnp.exp(log_pt) * (log_pt - log_ps), axis=-1)
  ce = -jnp.take_along_axis(jax.nn.log_softmax(s, axis=-1), targets[..., None], axis=-1)[..., 0]
  m = jnp.ones_like(ce) if mask is None else mask.astype(jnp.float32)
  denom = jnp.maximum(m.sum(), 1.0)
  kl, ce = (kl * m).sum() / denom, (ce * m).sum() / denom
  return alpha * temperature ** 2 * kl + (1 - alpha) * ce, {'kl': kl, 'ce': ce}


def distill_objective(model: Any, teacher_model: Any, *, temperature: float, alpha: float):
  """loss_fn(params, frozen, batch, rng) -> (kd_loss, {'kd_kl', 'kd_ce'}) of `model` (the
  student) against `teacher_model` run on `frozen['teacher']` (dropout in the student only)."""
  if not 0.0 <= alpha <= 1.0 or temperature <= 0:
    raise ValueError(f'distill.alpha={alpha} must be in [0, 1] and distill.temperature='
                     f'{temperature} > 0.')

  def loss_fn(params, frozen, batch, rng):
    rngs = None if rng is None else {'dropout': rng}
    student, _ = model.apply({'params': params}, batch['inputs'], deterministic=rng is None,
                             rngs=rngs)
    teacher, _ = teacher_model.apply({'params': frozen['teacher']}, batch['inputs'])
    loss, aux = kd_loss(student, teacher, batch['targets'], mask=batch.get('mask'),
                        temperature=temperature, alpha=alpha)
    return loss, {'kd_kl': aux['kl'], 'kd_ce': aux['ce']}

  return loss_fn
