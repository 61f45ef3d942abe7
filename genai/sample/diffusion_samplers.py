"""Samplers for a trained diffusion model: ancestral DDPM, DDIM and DPM-Solver++(2M), with
classifier-free guidance. Each whole reverse chain runs inside one `lax.scan` (jit the caller).

A "model function" here is `model_fn(x_t [B,H,W,C], t_B float32) -> output` where the
output predicts eps or v (`prediction`). Build one from a backbone with
`guided_model_fn`, which also applies classifier-free guidance.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from genai.objectives import diffusion as dfn

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]


def guided_model_fn(apply_fn: Callable, y_B, *, num_classes: int, guidance: float
                    ) -> ModelFn:
  """model_fn(x, t) of a backbone `apply_fn(x, t, y) -> output`, with guidance scale w.

  Classifier-free guidance (Ho & Salimans 2021): out = (1 + w) out(x, t, y) - w out(x, t, null)
  with null = num_classes. w = 0 is the plain conditional model, w > 0 sharpens toward the
  class (`guidance` may be a traced scalar, e.g. an exported signature's input). Because
  the weights sum to 1 and eps = sqrt(1-abar) x_t + sqrt(abar) v is affine in
  v with the same x_t, guiding the v output is the same as guiding eps. Conditional and
  unconditional passes run as one batch of 2B. Unconditional models (num_classes=0) take
  y_B=None and no guidance.
  """
  if not num_classes:
    if y_B is not None or guidance:
      raise ValueError('labels/guidance given to an unconditional model; train with '
                       'model.class_conditional=True to use --label/--guidance.')
    return lambda x, t: apply_fn(x, t, None)
  if y_B is None:
    raise ValueError('a class-conditional model needs labels to sample; pass y (use '
                     f'{num_classes} for "no label").')
  y_B = jnp.asarray(y_B, jnp.int32)
  if isinstance(guidance, (int, float)) and guidance == 0:  # a traced scale (export) always guides
    return lambda x, t: apply_fn(x, t, y_B)
  null = jnp.full_like(y_B, num_classes)

  def fn(x, t):
    out = apply_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                   jnp.concatenate([y_B, null]))
    cond, uncond = jnp.split(out, 2)
    return (1.0 + guidance) * cond - guidance * uncond

  return fn


def _clip(x, clip_range):
  return x if clip_range is None else jnp.clip(x, clip_range[0], clip_range[1])


def ddpm_sample(model_fn: ModelFn, s: dfn.Schedule, shape, rng, *, prediction: str = 'eps',
                clip_range=(-1.0, 1.0)):
  """Ancestral sampling over all T steps (Ho et al. Alg. 2, x0-parameterised):
  x0_hat = clip(x0(x_t, model)), x_{t-1} = mu~(x0_hat, x_t) + [t > 0] sigma_t z with the
  posterior variance beta~_t. Returns x_0 [shape]."""
  dfn.check_prediction(prediction)
  k_init, k_loop = jax.random.split(rng)
  x = jax.random.normal(k_init, shape, jnp.float32)
  b = shape[0]

  def step(x, t):
    t_B = jnp.full((b,), t, jnp.int32)
    out = model_fn(x, t_B.astype(jnp.float32))
    x0, _ = dfn.x0_eps_from_output(s, prediction, x, t_B, out)
    mean, _, log_var = dfn.q_posterior(s, _clip(x0, clip_range), x, t_B)
    z = jax.random.normal(jax.random.fold_in(k_loop, t), shape, jnp.float32)
    return mean + (t > 0) * jnp.exp(0.5 * log_var) * z, None

  x, _ = jax.lax.scan(step, x, jnp.arange(s.num_timesteps - 1, -1, -1))
  return x


def ddim_timesteps(num_timesteps: int, num_steps: int) -> np.ndarray:
  """`num_steps` increasing step indices spread evenly over [0, T-1] (first 0, last T-1)."""
  if not 1 <= num_steps <= num_timesteps:
    raise ValueError(f'sample steps={num_steps} must be in [1, {num_timesteps}] '
                     '(diffusion.num_timesteps).')
  if num_steps == 1:
    return np.array([num_timesteps - 1])
  return np.unique(np.round(np.linspace(0, num_timesteps - 1, num_steps)).astype(np.int32))


def ddim_sample(model_fn: ModelFn, s: dfn.Schedule, shape, rng, *, num_steps: int,
                eta: float = 0.0, prediction: str = 'eps', clip_range=(-1.0, 1.0)):
  """DDIM (Song et al. 2021, eq. 12) on `num_steps` strided timesteps tau_i.

  From tau_i to tau_{i-1} (abar_prev = 1 after the last): with x0_hat clipped and eps_hat
  recomputed from it,
    sigma = eta sqrt((1 - abar_prev) / (1 - abar)) sqrt(1 - abar / abar_prev)
    x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_hat + sigma z.
  eta=0 is deterministic; eta=1 with all T steps is the DDPM ancestral sampler.
  """
  k_init, k_loop = jax.random.split(rng)
  x_T = jax.random.normal(k_init, shape, jnp.float32)
  return ddim_chain(model_fn, s, x_T, num_steps=num_steps, eta=eta, prediction=prediction,
                    clip_range=clip_range, rng=k_loop)


def ddim_chain(model_fn: ModelFn, s: dfn.Schedule, x_T: jax.Array, *, num_steps: int,
               eta: float = 0.0, prediction: str = 'eps', clip_range=(-1.0, 1.0), rng=None):
  """The DDIM chain of `ddim_sample` from a given x_T. With `rng` None (deterministic, eta
  must be 0) no noise is drawn: the chain of an exported sampler whose randomness is its
  input x_T; it equals ddim_sample(..., rng, eta=0) on that sampler's own x_T."""
  dfn.check_prediction(prediction)
  if rng is None and eta:
    raise ValueError(f'eta={eta} draws noise at every step; pass rng (or use eta=0).')
  taus = ddim_timesteps(s.num_timesteps, num_steps)
  prevs = np.append(-1, taus[:-1])
  shape = x_T.shape
  b = shape[0]

  def step(x, tp):
    t, t_prev = tp
    t_B = jnp.full((b,), t, jnp.int32)
    out = model_fn(x, t_B.astype(jnp.float32))
    x0, eps = dfn.x0_eps_from_output(s, prediction, x, t_B, out)
    if clip_range is not None:
      x0 = _clip(x0, clip_range)
      eps = dfn.eps_from_x0(s, x, t_B, x0)
    abar_prev = jnp.where(t_prev >= 0, s.alphas_cumprod[jnp.maximum(t_prev, 0)], 1.0)
    if rng is None:
      return jnp.sqrt(abar_prev) * x0 + jnp.sqrt(jnp.maximum(1.0 - abar_prev, 0.0)) * eps, None
    abar = s.alphas_cumprod[t]
    sigma = eta * jnp.sqrt((1.0 - abar_prev) / (1.0 - abar) * (1.0 - abar / abar_prev))
    z = jax.random.normal(jax.random.fold_in(rng, t), shape, jnp.float32)
    x = (jnp.sqrt(abar_prev) * x0
         + jnp.sqrt(jnp.maximum(1.0 - abar_prev - sigma ** 2, 0.0)) * eps + sigma * z)
    return x, None

  x, _ = jax.lax.scan(step, x_T, (jnp.asarray(taus[::-1]), jnp.asarray(prevs[::-1])))
  return x


def _logsnr_taus(s: dfn.Schedule, num_steps: int) -> jax.Array:
  """[num_steps] int32 step indices, noisy -> clean, whose log-SNRs are evenly spaced (each
  the nearest trained step). jnp throughout: the schedule may be traced (a jit argument)."""
  ddim_timesteps(s.num_timesteps, num_steps)  # the same range check
  abar = s.alphas_cumprod.astype(jnp.float32)
  lam = 0.5 * (jnp.log(abar) - jnp.log1p(-abar))        # decreasing in t
  grid = jnp.linspace(lam[-1], lam[0], num_steps)
  return jnp.argmin(jnp.abs(lam[None, :] - grid[:, None]), axis=1).astype(jnp.int32)


def logsnr_timesteps(s: dfn.Schedule, num_steps: int) -> np.ndarray:
  """`num_steps` non-decreasing step indices whose log-SNRs lambda_t = log(sqrt(abar) /
  sqrt(1 - abar)) are spread evenly between lambda_{T-1} and lambda_0, each rounded to the
  nearest trained step: the spacing DPM-Solver recommends for few steps. A schedule with
  steep ends (the clipped cosine) can round two to the same step; the solver then spends a
  model call on a zero-length step (the count stays static, so it compiles once)."""
  return np.asarray(_logsnr_taus(s, num_steps))[::-1]


def dpm_solver_pp_chain(model_fn: ModelFn, s: dfn.Schedule, x_T: jax.Array, *,
                        num_steps: int, prediction: str = 'eps', clip_range=(-1.0, 1.0)):
  """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Alg. 2): a deterministic multistep
  solver of the probability-flow ODE in data (x0) prediction, on timesteps tau_i evenly
  spaced in log-SNR (`logsnr_timesteps`; `num_steps` model calls).

  With alpha = sqrt(abar), sigma = sqrt(1 - abar), lambda = log(alpha / sigma) and
  h_i = lambda_{i} - lambda_{i-1} (moving from tau_{i-1} to the less noisy tau_i):
    x_i = (sigma_i / sigma_{i-1}) x_{i-1} - alpha_i (exp(-h_i) - 1) D_i,
    D_i = (1 + 1 / (2 r_i)) x0_{i-1} - 1 / (2 r_i) x0_{i-2},  r_i = h_{i-1} / h_i,
  with D = x0_{i-1} (first order, = DDIM) on the first step (and after a zero-length one).
  The last step goes to the clean data (abar = 1, sigma = 0, lambda = inf), where every
  order gives x = x0_hat (the "lower order final" of the paper), as DDIM's last step does.
  Second order in the step size where DDIM is first order: the same quality in fewer model
  calls. (On DDIM's evenly spaced t the first and last steps are huge in lambda and the
  two-step extrapolation gains little: tests/sample/test_diffusion_samplers.py.) The
  coefficients are jnp functions of the schedule, so it may be a traced jit argument.
  """
  dfn.check_prediction(prediction)
  taus = _logsnr_taus(s, num_steps)                                 # noisy -> clean
  abar = s.alphas_cumprod[taus].astype(jnp.float32)
  alpha, sigma = jnp.sqrt(abar), jnp.sqrt(1.0 - abar)
  lam = jnp.log(alpha) - jnp.log(sigma)
  # Step i (0..n-2) goes from taus[i] to taus[i+1]; the final x0 read-out is outside.
  h = lam[1:] - lam[:-1]                                            # [n-1] >= 0
  h_prev = jnp.concatenate([jnp.zeros((1,), h.dtype), h[:-1]])
  first = h_prev <= 0                                               # step 0, or after a repeat
  r = jnp.where(first, 1.0, h_prev / jnp.where(h > 0, h, 1.0))
  c_prev = jnp.where(first, 1.0, 1.0 + 0.5 / r)                     # weight of x0_{i-1}
  c_prev2 = jnp.where(first, 0.0, -0.5 / r)                         # weight of x0_{i-2}
  ratio = sigma[1:] / sigma[:-1]
  coef = -alpha[1:] * jnp.expm1(-h)
  b = x_T.shape[0]

  def x0_at(x, t):
    t_B = jnp.full((b,), t, jnp.int32)
    x0, _ = dfn.x0_eps_from_output(s, prediction, x, t_B, model_fn(x, t_B.astype(jnp.float32)))
    return _clip(x0, clip_range)

  def step(carry, xs):
    x, x0_prev2 = carry
    t_from, cp, cp2, rt, cf = xs
    x0_prev = x0_at(x, t_from)
    d = cp * x0_prev + cp2 * x0_prev2
    return (rt * x + cf * d, x0_prev), None

  (x, _), _ = jax.lax.scan(step, (x_T, jnp.zeros_like(x_T)),
                           (taus[:-1], c_prev, c_prev2, ratio, coef))
  return x0_at(x, taus[-1])


def dpm_solver_pp_sample(model_fn: ModelFn, s: dfn.Schedule, shape, rng, *, num_steps: int,
                         prediction: str = 'eps', clip_range=(-1.0, 1.0)):
  """DPM-Solver++(2M) from x_T ~ N(0, I) drawn from `rng` (see dpm_solver_pp_chain)."""
  x_T = jax.random.normal(jax.random.split(rng)[0], shape, jnp.float32)
  return dpm_solver_pp_chain(model_fn, s, x_T, num_steps=num_steps, prediction=prediction,
                             clip_range=clip_range)


SAMPLERS = ('ddpm', 'ddim', 'dpm++')


def sample(model_fn: ModelFn, s: dfn.Schedule, shape, rng, *, sampler: str = 'ddim',
           num_steps: int = 50, eta: float = 0.0, prediction: str = 'eps',
           clip_range=(-1.0, 1.0)):
  """Dispatch on `sampler`: 'ddpm' always runs all T steps; 'ddim' (`num_steps`, `eta`);
  'dpm++' (DPM-Solver++(2M), `num_steps` model calls, deterministic; `eta` unused)."""
  if sampler == 'ddpm':
    return ddpm_sample(model_fn, s, shape, rng, prediction=prediction, clip_range=clip_range)
  if sampler == 'ddim':
    return ddim_sample(model_fn, s, shape, rng, num_steps=num_steps, eta=eta,
                       prediction=prediction, clip_range=clip_range)
  if sampler == 'dpm++':
    return dpm_solver_pp_sample(model_fn, s, shape, rng, num_steps=num_steps,
                                prediction=prediction, clip_range=clip_range)
  raise ValueError(f'sampler={sampler!r} is unknown; use one of {SAMPLERS}.')
