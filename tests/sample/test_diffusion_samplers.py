"""DDPM / DDIM samplers on a toy with a closed-form optimal denoiser, and guidance."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from genai.objectives import diffusion as dfn
from genai.sample import diffusion_samplers as ds

MU, SD = 0.4, 0.3     # data ~ N(MU, SD^2): x_t ~ N(sqrt(abar) MU, abar SD^2 + 1 - abar)
N = 20_000            # samples per sampler: s.e. of the mean ~0.002, of the variance ~0.0009


def _schedule(name='linear', steps=1000):
  return dfn.make_schedule(ml_collections.ConfigDict(
      {'schedule': name, 'num_timesteps': steps}))


def optimal_eps(s):
  """E[eps | x_t] = sqrt(1 - abar) (x_t - sqrt(abar) mu) / (abar sd^2 + 1 - abar)."""
  def model(x, t):
    ab = s.alphas_cumprod[t.astype(jnp.int32)].reshape(-1, 1, 1, 1)
    return jnp.sqrt(1 - ab) * (x - jnp.sqrt(ab) * MU) / (ab * SD ** 2 + 1 - ab)
  return model


def optimal_v(s):
  eps = optimal_eps(s)
  def model(x, t):  # v = (eps - sqrt(1 - abar) x_t) / sqrt(abar)
    ab = s.alphas_cumprod[t.astype(jnp.int32)].reshape(-1, 1, 1, 1)
    return (eps(x, t) - jnp.sqrt(1 - ab) * x) / jnp.sqrt(ab)
  return model


def _stats(x):
  x = np.asarray(x, np.float64).ravel()
  return x.mean(), x.var()


@pytest.fixture(scope='module')
def full_chains():
  s = _schedule()
  model = optimal_eps(s)
  shape = (N, 1, 1, 1)
  ddpm = jax.jit(lambda r: ds.ddpm_sample(model, s, shape, r, clip_range=None))
  ddim = jax.jit(lambda r: ds.ddim_sample(model, s, shape, r, num_steps=1000, eta=1.0,
                                          clip_range=None))
  return s, ddpm, ddim


def test_ddpm_and_ddim_eta1_match_the_data_and_each_other(full_chains):
  _, ddpm, ddim = full_chains
  a, b = ddpm(jax.random.key(0)), ddim(jax.random.key(1))  # independent draws
  (ma, va), (mb, vb) = _stats(a), _stats(b)
  for m, v in ((ma, va), (mb, vb)):
    assert m == pytest.approx(MU, abs=0.008)
    assert v == pytest.approx(SD ** 2, abs=0.004)
  assert ma == pytest.approx(mb, abs=0.01) and va == pytest.approx(vb, abs=0.005)
  # Two-sample Kolmogorov-Smirnov distance: same distribution at this sample size.
  grid = np.sort(np.concatenate([np.ravel(a), np.ravel(b)]))
  cdf = lambda x: np.searchsorted(np.sort(np.ravel(x)), grid, side='right') / N
  assert np.max(np.abs(cdf(a) - cdf(b))) < 0.025
  # With the same noise draws the two chains are the same algorithm: paths agree.
  np.testing.assert_allclose(ddpm(jax.random.key(2)), ddim(jax.random.key(2)), atol=2e-4)


def test_ddim_deterministic_few_steps_and_v_prediction():
  s = _schedule('cosine', 1000)
  shape = (N, 1, 1, 1)
  x_eps = ds.ddim_sample(optimal_eps(s), s, shape, jax.random.key(3), num_steps=100,
                         clip_range=None)
  m, v = _stats(x_eps)
  assert m == pytest.approx(MU, abs=0.01) and v == pytest.approx(SD ** 2, abs=0.006)
  # The same sampler fed the equivalent v-predictor gives the same samples.
  x_v = ds.ddim_sample(optimal_v(s), s, shape, jax.random.key(3), num_steps=100,
                       prediction='v', clip_range=None)
  np.testing.assert_allclose(x_v, x_eps, atol=1e-3)
  # eta=0 is deterministic given the initial noise: the z draws do not matter.
  x_det = ds.ddim_sample(optimal_eps(s), s, (8, 1, 1, 1), jax.random.key(4), num_steps=10,
                         eta=0.0, clip_range=None)
  x_det2 = ds.ddim_sample(optimal_eps(s), s, (8, 1, 1, 1), jax.random.key(4), num_steps=10,
                          eta=0.0, clip_range=None)
  np.testing.assert_array_equal(x_det, x_det2)


def test_clipping_keeps_samples_in_range():
  s = _schedule('cosine', 50)
  wild = lambda x, t: -5.0 * jnp.ones_like(x)  # pushes x0_hat far outside [-1, 1]
  for fn in (lambda r: ds.ddpm_sample(wild, s, (16, 2, 2, 1), r),
             lambda r: ds.ddim_sample(wild, s, (16, 2, 2, 1), r, num_steps=10, eta=0.5)):
    x = fn(jax.random.key(0))
    assert float(jnp.min(x)) >= -1.0 - 1e-5 and float(jnp.max(x)) <= 1.0 + 1e-5


def test_ddim_timesteps():
  np.testing.assert_array_equal(ds.ddim_timesteps(10, 10), np.arange(10))
  t = ds.ddim_timesteps(1000, 50)
  assert len(t) == 50 and t[0] == 0 and t[-1] == 999 and np.all(np.diff(t) > 0)
  assert list(ds.ddim_timesteps(1000, 1)) == [999]
  for bad in (0, 1001):
    with pytest.raises(ValueError, match='sample steps'):
      ds.ddim_timesteps(1000, bad)
  with pytest.raises(ValueError, match='sampler'):
    ds.sample(lambda x, t: x, _schedule('cosine', 10), (1, 1, 1, 1), jax.random.key(0),
              sampler='euler')


def _toy_conditional(x, t, y):
  """A fake conditional backbone: its output depends on the label (null = 3)."""
  return x * 0.5 + y.astype(jnp.float32).reshape(-1, 1, 1, 1) + t.reshape(-1, 1, 1, 1) * 0.01


def test_classifier_free_guidance():
  x = jax.random.normal(jax.random.key(0), (4, 2, 2, 1))
  t = jnp.full((4,), 7.0)
  y = jnp.array([0, 1, 2, 1])
  cond = _toy_conditional(x, t, y)
  uncond = _toy_conditional(x, t, jnp.full((4,), 3))
  w0 = ds.guided_model_fn(_toy_conditional, y, num_classes=3, guidance=0.0)
  np.testing.assert_array_equal(w0(x, t), cond)  # w = 0: the conditional model
  w2 = ds.guided_model_fn(_toy_conditional, y, num_classes=3, guidance=2.0)
  np.testing.assert_allclose(w2(x, t), 3.0 * cond - 2.0 * uncond, rtol=1e-6)
  # A whole chain with w = 0 equals sampling the conditional model directly.
  s = _schedule('cosine', 20)
  direct = ds.ddim_sample(lambda xx, tt: _toy_conditional(xx, tt, y), s, (4, 2, 2, 1),
                          jax.random.key(1), num_steps=5, eta=1.0)
  guided = ds.ddim_sample(w0, s, (4, 2, 2, 1), jax.random.key(1), num_steps=5, eta=1.0)
  np.testing.assert_array_equal(guided, direct)
  with pytest.raises(ValueError, match='unconditional'):
    ds.guided_model_fn(_toy_conditional, y, num_classes=0, guidance=0.0)
  with pytest.raises(ValueError, match='needs labels'):
    ds.guided_model_fn(_toy_conditional, None, num_classes=3, guidance=1.0)
  unc = ds.guided_model_fn(lambda xx, tt, yy: xx * 2 if yy is None else None, None,
                           num_classes=0, guidance=0.0)
  np.testing.assert_array_equal(unc(x, t), x * 2)


def _exact_ode_endpoint(s, x_T):
  """The probability-flow ODE of Gaussian data maps x_T to x_0 by quantile: the marginal at
  T is N(a MU, a^2 SD^2 + 1 - a^2) with a = sqrt(abar_T), the data N(MU, SD^2)."""
  ab = float(s.alphas_cumprod[-1])
  return MU + SD * (x_T - np.sqrt(ab) * MU) / np.sqrt(ab * SD ** 2 + 1 - ab)


@pytest.mark.slow  # 3-4 s: six / three compiled chains
def test_dpm_solver_pp_is_far_closer_to_the_exact_ode_solution_than_ddim():
  s = _schedule('linear', 1000)
  x_T = jax.random.normal(jax.random.key(5), (512, 1, 1, 1))
  exact = _exact_ode_endpoint(s, np.asarray(x_T, np.float64))
  err = {}
  for steps in (10, 20, 40):
    for name, chain in (('dpm++', ds.dpm_solver_pp_chain), ('ddim', ds.ddim_chain)):
      x = chain(optimal_eps(s), s, x_T, num_steps=steps, clip_range=None)
      err[name, steps] = float(np.max(np.abs(np.asarray(x, np.float64) - exact)))
  # Measured (numpy float64 replay): dpm++ 0.024 / 0.013 / 0.003, ddim 0.21 / 0.11 / 0.055.
  for steps in (10, 20, 40):
    assert err['dpm++', steps] < 0.2 * err['ddim', steps], err
  assert err['dpm++', 40] < 6e-3 and err['ddim', 10] / err['ddim', 40] > 3.0, err
  # The v-predictor of the same denoiser gives the same chain.
  x_v = ds.dpm_solver_pp_chain(optimal_v(s), s, x_T, num_steps=10, prediction='v',
                               clip_range=None)
  x_e = ds.dpm_solver_pp_chain(optimal_eps(s), s, x_T, num_steps=10, clip_range=None)
  np.testing.assert_allclose(x_v, x_e, atol=1e-4)


def test_logsnr_timesteps():
  s = _schedule('linear', 1000)
  t = ds.logsnr_timesteps(s, 20)
  assert len(t) == 20 and t[0] == 0 and t[-1] == 999 and np.all(np.diff(t) > 0)
  ab = np.asarray(s.alphas_cumprod, np.float64)
  lam = 0.5 * np.log(ab[t] / (1 - ab[t]))
  h = -np.diff(lam)
  assert np.max(np.abs(h[3:] - h.mean())) < 0.1 * h.mean()  # even steps in log-SNR (the
  # first few round to t = 0, 1, 4: the linear schedule is steep there)
  with pytest.raises(ValueError, match='sample steps'):
    ds.logsnr_timesteps(s, 0)


@pytest.mark.slow  # 3-4 s: six / three compiled chains
def test_dpm_solver_pp_first_step_is_ddim_and_sample_dispatch():
  s = _schedule('cosine', 100)
  model = optimal_eps(s)
  x_T = jax.random.normal(jax.random.key(6), (64, 1, 1, 1))
  # Two steps (both spacings give t = 99, 0): one first-order step (= DDIM) and the x0
  # read-out, exactly DDIM's chain.
  np.testing.assert_allclose(ds.dpm_solver_pp_chain(model, s, x_T, num_steps=2),
                             ds.ddim_chain(model, s, x_T, num_steps=2), atol=1e-6)
  # sample('dpm++') draws the same x_T as ddim_sample for a key, and clips to the range.
  a = ds.sample(model, s, (64, 1, 1, 1), jax.random.key(7), sampler='dpm++', num_steps=2)
  b = ds.sample(model, s, (64, 1, 1, 1), jax.random.key(7), sampler='ddim', num_steps=2)
  np.testing.assert_allclose(a, b, atol=1e-6)
  wild = lambda x, t: -5.0 * jnp.ones_like(x)
  x = ds.sample(wild, s, (16, 2, 2, 1), jax.random.key(0), sampler='dpm++', num_steps=10)
  assert float(jnp.min(x)) >= -1.0 - 1e-5 and float(jnp.max(x)) <= 1.0 + 1e-5


def test_dpm_solver_pp_under_jit_with_the_schedule_traced():
  """The image sampler jits the chain with the schedule as an argument (a regression: numpy
  coefficients failed there); a repeated step of a steep schedule is a no-op step."""
  s = _schedule('cosine', 1000)
  taus = ds.logsnr_timesteps(s, 20)
  assert len(taus) == 20 and np.all(np.diff(taus) >= 0) and len(np.unique(taus)) < 20
  x_T = jax.random.normal(jax.random.key(8), (64, 1, 1, 1))
  jitted = jax.jit(lambda sched, x: ds.dpm_solver_pp_chain(optimal_eps(sched), sched, x,
                                                           num_steps=20, clip_range=None))
  eager = ds.dpm_solver_pp_chain(optimal_eps(s), s, x_T, num_steps=20, clip_range=None)
  np.testing.assert_allclose(jitted(s, x_T), eager, atol=1e-5)
  exact = _exact_ode_endpoint(s, np.asarray(x_T, np.float64))
  assert float(np.max(np.abs(np.asarray(eager) - exact))) < 0.05
