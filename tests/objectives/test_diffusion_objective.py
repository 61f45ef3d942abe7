"""DDPM schedules, forward process, posterior and loss against closed forms in numpy."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from genai.objectives import diffusion as dfn


def _cfg(**kw):
  return ml_collections.ConfigDict(kw)


@pytest.mark.parametrize('steps', [1000, 100])
def test_linear_schedule_alphas_cumprod(steps):
  s = dfn.make_schedule(_cfg(schedule='linear', num_timesteps=steps, beta_start=1e-4,
                             beta_end=0.02))
  scale = 1000 / steps
  betas = np.array([scale * 1e-4 + (scale * 0.02 - scale * 1e-4) * i / (steps - 1)
                    for i in range(steps)])
  abar = np.ones(steps)
  for i in range(steps):
    abar[i] = (abar[i - 1] if i else 1.0) * (1 - betas[i])
  np.testing.assert_allclose(s.betas, betas, rtol=1e-6)
  np.testing.assert_allclose(s.alphas_cumprod, abar, rtol=1e-5, atol=1e-9)
  np.testing.assert_allclose(s.alphas_cumprod_prev[1:], abar[:-1], rtol=1e-5, atol=1e-9)
  assert float(s.alphas_cumprod_prev[0]) == 1.0
  assert s.num_timesteps == steps


def test_cosine_schedule_matches_the_paper_formula_and_clips_betas():
  steps, off = 1000, 0.008
  s = dfn.make_schedule(_cfg(schedule='cosine', num_timesteps=steps, cosine_s=off,
                             max_beta=0.999))
  f = lambda t: math.cos((t / steps + off) / (1 + off) * math.pi / 2) ** 2
  # Our index i is the paper's step t = i + 1: abar = f(t) / f(0).
  paper = np.array([f(i + 1) / f(0) for i in range(steps)])
  betas = np.asarray(s.betas, np.float64)
  unclipped = betas < 0.999
  assert unclipped[:-1].all()                  # only the last step hits the clip ...
  assert betas[-1] == pytest.approx(0.999)     # ... where f(T) = cos^2(pi/2) ~ 0
  np.testing.assert_allclose(np.asarray(s.alphas_cumprod)[:-1], paper[:-1], rtol=2e-4,
                             atol=1e-7)
  assert np.all(betas <= np.float32(0.999)) and np.all(betas > 0)
  # A tighter clip binds on more steps and caps them all.
  s2 = dfn.make_schedule(_cfg(schedule='cosine', num_timesteps=steps, max_beta=0.1))
  b2 = np.asarray(s2.betas)
  assert b2.max() == pytest.approx(0.1) and (b2 == b2.max()).sum() > 10


def test_schedule_errors():
  with pytest.raises(ValueError, match='diffusion.schedule'):
    dfn.make_schedule(_cfg(schedule='sigmoid', num_timesteps=10))
  with pytest.raises(ValueError, match='num_timesteps'):
    dfn.make_schedule(_cfg(schedule='linear', num_timesteps=1))
  with pytest.raises(ValueError, match='rescaled by 1000/T'):
    dfn.make_schedule(_cfg(schedule='linear', num_timesteps=10))  # beta_end 0.02 -> 2.0
  with pytest.raises(ValueError, match=r'beta must lie in \(0, 1\)'):
    dfn.schedule_from_betas(np.array([0.1, 0.0, 0.2]))
  with pytest.raises(ValueError, match='diffusion.prediction'):
    dfn.check_prediction('x0')


def test_q_sample_marginal():
  s = dfn.make_schedule(_cfg(schedule='linear', num_timesteps=1000))
  n, t = 200_000, 300
  x0 = jnp.full((n, 1), 0.7)
  xt = dfn.q_sample(s, x0, jnp.full((n,), t), jax.random.normal(jax.random.key(0), (n, 1)))
  abar = float(s.alphas_cumprod[t])
  assert float(jnp.mean(xt)) == pytest.approx(math.sqrt(abar) * 0.7, abs=0.01)
  assert float(jnp.var(xt)) == pytest.approx(1 - abar, rel=0.01)


def test_posterior_coefficients_against_eq7_and_bayes():
  s = dfn.make_schedule(_cfg(schedule='cosine', num_timesteps=50))
  betas = np.asarray(s.betas, np.float64)
  alphas = 1 - betas
  abar = np.cumprod(alphas)
  rng = np.random.default_rng(0)
  t = np.arange(1, 50)
  x0, xt = rng.normal(size=(49, 3)), rng.normal(size=(49, 3))
  mean, var, log_var = dfn.q_posterior(s, jnp.asarray(x0, jnp.float32),
                                       jnp.asarray(xt, jnp.float32), jnp.asarray(t))
  ab, abp, b, a = abar[t, None], abar[t - 1, None], betas[t, None], alphas[t, None]
  # Ho et al. eq. 7.
  mean7 = np.sqrt(abp) * b / (1 - ab) * x0 + np.sqrt(a) * (1 - abp) / (1 - ab) * xt
  var7 = (1 - abp) / (1 - ab) * b
  np.testing.assert_allclose(mean, mean7, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(var)[:, 0], var7[:, 0], rtol=1e-4)
  # Bayes: q(x_{t-1}|x_0) q(x_t|x_{t-1}) as a product of Gaussians in x_{t-1}.
  prec = 1 / (1 - abp) + a / b
  np.testing.assert_allclose(np.asarray(var)[:, 0], 1 / prec[:, 0], rtol=1e-4)
  bayes_mean = (np.sqrt(abp) * x0 / (1 - abp) + np.sqrt(a) * xt / b) / prec
  np.testing.assert_allclose(mean, bayes_mean, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.exp(np.asarray(log_var)[:, 0]), var7[:, 0], rtol=1e-4)
  # t = 0: the posterior is a point mass at x_0 (variance 0, coefficient 1 on x_0).
  m0, v0, lv0 = dfn.q_posterior(s, jnp.ones((1, 1)), jnp.zeros((1, 1)), jnp.zeros(1))
  assert float(m0[0, 0]) == pytest.approx(1.0, abs=1e-6) and float(v0[0, 0]) == 0.0
  assert float(lv0[0, 0]) == pytest.approx(math.log(var7[0, 0]), rel=1e-4)  # clipped to t=1


def test_eps_x0_v_conversions_round_trip():
  s = dfn.make_schedule(_cfg(schedule='cosine', num_timesteps=100))
  k1, k2 = jax.random.split(jax.random.key(1))
  x0 = jax.random.uniform(k1, (16, 4, 4, 1), minval=-1, maxval=1)
  eps = jax.random.normal(k2, x0.shape)
  t = jnp.arange(0, 96, 6)
  xt = dfn.q_sample(s, x0, t, eps)
  v = dfn.v_from_x0_eps(s, x0, eps, t)
  ab = np.asarray(s.alphas_cumprod)[np.asarray(t)][:, None, None, None]
  np.testing.assert_allclose(v, np.sqrt(ab) * eps - np.sqrt(1 - ab) * x0, rtol=1e-5, atol=1e-6)
  tol = dict(rtol=1e-4, atol=2e-4)
  np.testing.assert_allclose(dfn.x0_from_v(s, xt, t, v), x0, **tol)
  np.testing.assert_allclose(dfn.eps_from_v(s, xt, t, v), eps, **tol)
  np.testing.assert_allclose(dfn.x0_from_eps(s, xt, t, eps), x0, **tol)
  np.testing.assert_allclose(dfn.eps_from_x0(s, xt, t, x0), eps, **tol)
  for pred, out in (('eps', eps), ('v', v)):
    x0_hat, eps_hat = dfn.x0_eps_from_output(s, pred, xt, t, out)
    np.testing.assert_allclose(x0_hat, x0, **tol)
    np.testing.assert_allclose(eps_hat, eps, **tol)


def test_loss_against_hand_computed_targets():
  s = dfn.make_schedule(_cfg(schedule='linear', num_timesteps=100))
  rng = np.random.default_rng(0)
  x0 = jnp.asarray(rng.uniform(-1, 1, (8, 2, 2, 1)), jnp.float32)
  noise = jnp.asarray(rng.normal(size=x0.shape), jnp.float32)
  t = jnp.arange(8) * 12
  zero = lambda x, tt, y, r: jnp.zeros_like(x)
  loss, aux = dfn.diffusion_loss(zero, s, x0, None, jax.random.key(0), t_B=t, noise=noise)
  assert float(loss) == pytest.approx(float(np.mean(np.square(noise))), rel=1e-5)
  np.testing.assert_allclose(aux['per_example'], np.mean(np.square(noise), axis=(1, 2, 3)),
                             rtol=1e-5)
  ab = np.asarray(s.alphas_cumprod)[np.asarray(t)][:, None, None, None]
  v = np.sqrt(ab) * np.asarray(noise) - np.sqrt(1 - ab) * np.asarray(x0)
  loss_v, _ = dfn.diffusion_loss(zero, s, x0, None, jax.random.key(0), prediction='v',
                                 t_B=t, noise=noise)
  assert float(loss_v) == pytest.approx(float(np.mean(v ** 2)), rel=1e-5)
  # An oracle that knows x_0 predicts eps exactly: zero loss at random t and noise.
  oracle = lambda x, tt, y, r: dfn.eps_from_x0(s, x, tt, x0)
  loss_o, aux_o = dfn.diffusion_loss(oracle, s, x0, None, jax.random.key(3))
  assert float(loss_o) < 1e-8 and aux_o['t'].shape == (8,)


def test_label_dropout_and_conditioning_errors():
  y = jnp.arange(10_000) % 10
  assert bool(jnp.all(dfn.drop_labels(jax.random.key(0), y, 10, 1.0) == 10))
  assert bool(jnp.all(dfn.drop_labels(jax.random.key(0), y, 10, 0.0) == y))
  dropped = dfn.drop_labels(jax.random.key(0), y, 10, 0.3)
  assert float(jnp.mean(dropped == 10)) == pytest.approx(0.3, abs=0.02)
  assert bool(jnp.all((dropped == y) | (dropped == 10)))
  s = dfn.make_schedule(_cfg(schedule='cosine', num_timesteps=10))
  seen = {}

  def model(x, t, yy, r):
    seen['y'] = yy
    return jnp.zeros_like(x)

  x0 = jnp.zeros((4, 2, 2, 1))
  dfn.diffusion_loss(model, s, x0, jnp.arange(4), jax.random.key(0), num_classes=10,
                     p_uncond=1.0)
  assert bool(jnp.all(seen['y'] == 10))
  dfn.diffusion_loss(model, s, x0, jnp.arange(4), jax.random.key(0))
  assert seen['y'] is None  # unconditional: labels are not passed on
  with pytest.raises(ValueError, match='needs labels'):
    dfn.diffusion_loss(model, s, x0, None, jax.random.key(0), num_classes=10)
  with pytest.raises(ValueError, match='out_channels'):
    dfn.diffusion_loss(lambda x, t, yy, r: x[..., :0], s, x0, None, jax.random.key(0))


def test_distillation_target_blends_the_true_noise_and_the_teacher():
  import jax
  import jax.numpy as jnp
  from genai.objectives import diffusion as dfn_
  s = dfn_.make_schedule({'schedule': 'cosine', 'num_timesteps': 10})
  x0 = jnp.ones((2, 4, 4, 1))
  noise = jnp.full(x0.shape, 0.5)
  t = jnp.array([3, 7])
  student = lambda x, tt, y, r: jnp.zeros_like(x)
  teacher = lambda x, tt, y, r: jnp.full(x.shape, 2.0)
  loss, _ = dfn_.diffusion_loss(student, s, x0, None, jax.random.key(0), t_B=t, noise=noise,
                                teacher_fn=teacher, distill_alpha=0.25)
  # target = 0.75 * 0.5 + 0.25 * 2.0 = 0.875; the student outputs 0
  assert abs(float(loss) - 0.875 ** 2) < 1e-6
