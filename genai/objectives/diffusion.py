"""Gaussian diffusion (DDPM, Ho et al. 2020): noise schedules, the forward process
q(x_t | x_0), the posterior q(x_{t-1} | x_t, x_0), conversions between the epsilon / x_0 /
v parameterisations, and the denoising training loss.

Notation: T steps, t in {0, ..., T-1} (index t is the paper's step t+1), beta_t the noise
added at step t, alpha_t = 1 - beta_t, abar_t = prod_{s<=t} alpha_s.
  x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps                       (forward marginal)
  v   = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0                       (Salimans & Ho 2022)
Shapes in names: B batch, H/W/C image dims.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

SCHEDULES = ('linear', 'cosine')
PREDICTIONS = ('eps', 'v')


# =========================== Schedules ==================================================

def linear_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02
                 ) -> np.ndarray:
  """Ho et al.'s linear betas, given for T=1000 and rescaled by 1000/T for other T (as in
  Nichol & Dhariwal's code), so that abar_T stays about the same for any T."""
  scale = 1000.0 / num_timesteps
  if scale * beta_end >= 1.0:
    raise ValueError(f'linear betas are rescaled by 1000/T: with diffusion.num_timesteps='
                     f'{num_timesteps} diffusion.beta_end={beta_end} becomes '
                     f'{scale * beta_end:g} >= 1; use more timesteps, a smaller beta_end, or '
                     "schedule='cosine'.")
  return np.linspace(scale * beta_start, scale * beta_end, num_timesteps, dtype=np.float64)


def cosine_alpha_bar(u: np.ndarray, s: float = 0.008) -> np.ndarray:
  """f(u) = cos^2(pi/2 (u + s) / (1 + s)) of u = t/T in [0, 1] (Nichol & Dhariwal eq. 17,
  unnormalised: abar_t = f(t/T) / f(0))."""
  return np.cos((np.asarray(u, np.float64) + s) / (1.0 + s) * math.pi / 2.0) ** 2


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999
                 ) -> np.ndarray:
  """beta_t = min(1 - abar(t+1)/abar(t), max_beta): the cosine schedule, clipped so the last
  steps near u=1 (where abar -> 0) do not become singular."""
  u = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
  f = cosine_alpha_bar(u, s)
  return np.minimum(1.0 - f[1:] / f[:-1], max_beta)


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Per-step constants [T] (float32 jnp arrays, computed in float64)."""
  betas: jax.Array
  alphas_cumprod: jax.Array
  alphas_cumprod_prev: jax.Array       # abar_{t-1}, with abar_{-1} = 1
  sqrt_alphas_cumprod: jax.Array
  sqrt_one_minus_alphas_cumprod: jax.Array
  posterior_variance: jax.Array         # beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t)
  posterior_log_variance_clipped: jax.Array  # log beta~_t with beta~_0 replaced by beta~_1
  posterior_mean_coef1: jax.Array       # multiplies x_0
  posterior_mean_coef2: jax.Array       # multiplies x_t

  @property
  def num_timesteps(self) -> int:
    return int(self.betas.shape[0])


jax.tree_util.register_dataclass(
    Schedule, data_fields=[f.name for f in dataclasses.fields(Schedule)], meta_fields=[])


def schedule_from_betas(betas: np.ndarray) -> Schedule:
  betas = np.asarray(betas, np.float64)
  if betas.ndim != 1 or len(betas) < 2:
    raise ValueError(f'betas must be a 1-D array of >= 2 steps, got shape {betas.shape}.')
  if np.any(betas <= 0) or np.any(betas >= 1):
    raise ValueError('every beta must lie in (0, 1); check diffusion.beta_start/beta_end '
                     '(linear) or diffusion.max_beta (cosine).')
  abar = np.cumprod(1.0 - betas)
  abar_prev = np.append(1.0, abar[:-1])
  post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  return Schedule(
      betas=f32(betas), alphas_cumprod=f32(abar), alphas_cumprod_prev=f32(abar_prev),
      sqrt_alphas_cumprod=f32(np.sqrt(abar)),
      sqrt_one_minus_alphas_cumprod=f32(np.sqrt(1.0 - abar)),
      posterior_variance=f32(post_var),
      posterior_log_variance_clipped=f32(np.log(np.append(post_var[1], post_var[1:]))),
      posterior_mean_coef1=f32(betas * np.sqrt(abar_prev) / (1.0 - abar)),
      posterior_mean_coef2=f32((1.0 - abar_prev) * np.sqrt(1.0 - betas) / (1.0 - abar)))


def make_schedule(cfg: Any) -> Schedule:
  """From a config block with num_timesteps, schedule ('linear' | 'cosine'), beta_start,
  beta_end (linear), cosine_s, max_beta (cosine)."""
  name, steps = cfg.get('schedule', 'cosine'), int(cfg.get('num_timesteps', 1000))
  if steps < 2:
    raise ValueError(f'diffusion.num_timesteps={steps} must be >= 2.')
  if name == 'linear':
    betas = linear_betas(steps, cfg.get('beta_start', 1e-4), cfg.get('beta_end', 0.02))
  elif name == 'cosine':
    betas = cosine_betas(steps, cfg.get('cosine_s', 0.008), cfg.get('max_beta', 0.999))
  else:
    raise ValueError(f'diffusion.schedule={name!r} is unknown; use one of {SCHEDULES}.')
  return schedule_from_betas(betas)


# =========================== Forward process and conversions ===========================

def _at(a_T: jax.Array, t_B: jax.Array, ndim: int) -> jax.Array:
  """a[t] per example, shaped [B, 1, ..., 1] to broadcast against an ndim-D batch."""
  return a_T[jnp.asarray(t_B, jnp.int32)].reshape((-1,) + (1,) * (ndim - 1))


def q_sample(s: Schedule, x0, t_B, noise):
  """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps."""
  return (_at(s.sqrt_alphas_cumprod, t_B, x0.ndim) * x0
          + _at(s.sqrt_one_minus_alphas_cumprod, t_B, x0.ndim) * noise)


def q_posterior(s: Schedule, x0, x_t, t_B):
  """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0) (Ho et al. eq. 7)."""
  mean = (_at(s.posterior_mean_coef1, t_B, x_t.ndim) * x0
          + _at(s.posterior_mean_coef2, t_B, x_t.ndim) * x_t)
  return (mean, _at(s.posterior_variance, t_B, x_t.ndim),
          _at(s.posterior_log_variance_clipped, t_B, x_t.ndim))


def x0_from_eps(s: Schedule, x_t, t_B, eps):
  return ((x_t - _at(s.sqrt_one_minus_alphas_cumprod, t_B, x_t.ndim) * eps)
          / _at(s.sqrt_alphas_cumprod, t_B, x_t.ndim))


def eps_from_x0(s: Schedule, x_t, t_B, x0):
  return ((x_t - _at(s.sqrt_alphas_cumprod, t_B, x_t.ndim) * x0)
          / _at(s.sqrt_one_minus_alphas_cumprod, t_B, x_t.ndim))


def v_from_x0_eps(s: Schedule, x0, eps, t_B):
  return (_at(s.sqrt_alphas_cumprod, t_B, x0.ndim) * eps
          - _at(s.sqrt_one_minus_alphas_cumprod, t_B, x0.ndim) * x0)


def x0_from_v(s: Schedule, x_t, t_B, v):
  """x_0 = sqrt(abar) x_t - sqrt(1 - abar) v."""
  return (_at(s.sqrt_alphas_cumprod, t_B, x_t.ndim) * x_t
          - _at(s.sqrt_one_minus_alphas_cumprod, t_B, x_t.ndim) * v)


def eps_from_v(s: Schedule, x_t, t_B, v):
  """eps = sqrt(1 - abar) x_t + sqrt(abar) v."""
  return (_at(s.sqrt_one_minus_alphas_cumprod, t_B, x_t.ndim) * x_t
          + _at(s.sqrt_alphas_cumprod, t_B, x_t.ndim) * v)


def check_prediction(prediction: str) -> None:
  if prediction not in PREDICTIONS:
    raise ValueError(f'diffusion.prediction={prediction!r} is unknown; use one of '
                     f'{PREDICTIONS}.')


def x0_eps_from_output(s: Schedule, prediction: str, x_t, t_B, out):
  """(x0_hat, eps_hat) from a model output that predicts `prediction` ('eps' or 'v')."""
  check_prediction(prediction)
  if prediction == 'eps':
    return x0_from_eps(s, x_t, t_B, out), out
  return x0_from_v(s, x_t, t_B, out), eps_from_v(s, x_t, t_B, out)


# =========================== Training loss =============================================

def drop_labels(rng, y_B, num_classes: int, p_uncond: float):
  """Replaces each label by the "no label" id `num_classes` with probability p_uncond
  (classifier-free guidance training, Ho & Salimans 2021)."""
  drop = jax.random.bernoulli(rng, p_uncond, y_B.shape)
  return jnp.where(drop, jnp.int32(num_classes), y_B.astype(jnp.int32))


def diffusion_loss(apply_fn: Callable, s: Schedule, x0, y_B, rng, *, prediction: str = 'eps',
                   num_classes: int = 0, p_uncond: float = 0.0, train: bool = True,
                   t_B=None, noise=None, teacher_fn: Callable | None = None,
                   distill_alpha: float = 0.0):
  """Mean squared error of the model's eps (or v) prediction at a random t ~ U{0..T-1}.

  apply_fn(x_t, t_B (float32), y_B or None, rng) -> model output shaped like x_t.
  `t_B`/`noise` may be given to evaluate at fixed draws (held-out loss). Returns
  (loss, aux) with aux['per_example'] [B] (mean over pixels).
  Distillation: with `teacher_fn` (same signature, a trained model) the target becomes
  (1 - alpha) * true target + alpha * teacher output on the same (x_t, t, y), i.e. the MSE
  blend (1 - alpha) |out - target|^2 + alpha |out - teacher|^2 up to a constant.
  """
  check_prediction(prediction)
  k_t, k_noise, k_drop, k_model = jax.random.split(rng, 4)
  b = x0.shape[0]
  if t_B is None:
    t_B = jax.random.randint(k_t, (b,), 0, s.num_timesteps)
  if noise is None:
    noise = jax.random.normal(k_noise, x0.shape, x0.dtype)
  x_t = q_sample(s, x0, t_B, noise)
  if num_classes:
    if y_B is None:
      raise ValueError('a class-conditional model needs labels; the data has none. Set '
                       'model.class_conditional=False or use labelled data.')
    y_B = drop_labels(k_drop, y_B, num_classes, p_uncond) if p_uncond > 0 else y_B
  else:
    y_B = None
  out = apply_fn(x_t, t_B.astype(jnp.float32), y_B, k_model)
  if out.shape != x0.shape:
    raise ValueError(f'model output {out.shape} does not match the images {x0.shape}; set '
                     'the backbone out_channels to the image channels.')
  target = noise if prediction == 'eps' else v_from_x0_eps(s, x0, noise, t_B)
  if teacher_fn is not None and distill_alpha > 0:
    teacher = jax.lax.stop_gradient(teacher_fn(x_t, t_B.astype(jnp.float32), y_B, k_model))
    target = (1.0 - distill_alpha) * target + distill_alpha * teacher
  per_example = jnp.mean(jnp.square(out - target).reshape(b, -1), axis=-1)
  return jnp.mean(per_example), {'per_example': per_example, 't': t_B}
