"""FID, KID, precision/recall and IS against independent references (scipy, closed forms,
brute-force numpy loops, constructed point sets with known answers)."""
import warnings

import numpy as np
import pytest
import scipy.linalg
from sklearn.neighbors import NearestNeighbors

from genai.evaluation import image_metrics as im


def _random_cov(rng, d, n=None):
  a = rng.normal(size=(d, n or 2 * d))
  return a @ a.T / (n or 2 * d)


def _scipy_fid(mu1, s1, mu2, s2):
  """The pytorch-fid / TTUR formula, with scipy's sqrtm."""
  covmean = scipy.linalg.sqrtm(s1 @ s2)
  covmean = covmean.real
  diff = mu1 - mu2
  return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


@pytest.mark.parametrize('d', [2, 16, 64])
def test_fid_matches_scipy_on_random_gaussians(d):
  rng = np.random.default_rng(d)
  mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
  s1, s2 = _random_cov(rng, d), _random_cov(rng, d)
  ours = im.frechet_distance(mu1, s1, mu2, s2)
  np.testing.assert_allclose(ours, _scipy_fid(mu1, s1, mu2, s2), rtol=1e-8)
  # Symmetric in its arguments.
  np.testing.assert_allclose(ours, im.frechet_distance(mu2, s2, mu1, s1), rtol=1e-8)


def test_fid_closed_form_for_diagonal_covariances():
  rng = np.random.default_rng(0)
  a, b = rng.uniform(0.1, 3, 50), rng.uniform(0.1, 3, 50)
  mu1, mu2 = rng.normal(size=50), rng.normal(size=50)
  expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2) + np.sum((mu1 - mu2) ** 2)
  np.testing.assert_allclose(im.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)), expected,
                             rtol=1e-10)
  # Identical Gaussians: exactly 0 (not -1e-13).
  assert im.frechet_distance(mu1, np.diag(a), mu1, np.diag(a)) == pytest.approx(0, abs=1e-9)


def test_fid_on_singular_covariances_is_finite_and_matches_closed_form():
  # Rank-deficient diagonal covariances: where sqrtm(S1 S2) is ill-conditioned.
  a = np.array([1.0, 0.0, 4.0, 0.0])
  b = np.array([0.0, 0.0, 9.0, 2.0])
  expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  np.testing.assert_allclose(im.frechet_distance(np.zeros(4), np.diag(a), np.zeros(4),
                                                 np.diag(b)), expected, rtol=1e-10)


def test_gaussian_stats_and_fid_from_features():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(500, 8))
  mu, sigma = im.gaussian_stats(x)
  np.testing.assert_allclose(mu, x.mean(0))
  np.testing.assert_allclose(sigma, np.cov(x, rowvar=False))
  y = rng.normal(size=(400, 8)) * 2 + 1
  expected = _scipy_fid(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
  np.testing.assert_allclose(im.fid_from_features(x, y), expected, rtol=1e-8)


def test_fewer_samples_than_dimensions_warns_not_fails():
  rng = np.random.default_rng(2)
  with pytest.warns(im.SingularCovarianceWarning, match='singular'):
    value = im.fid_from_features(rng.normal(size=(10, 32)), rng.normal(size=(10, 32)))
  assert np.isfinite(value)
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    im.gaussian_stats(rng.normal(size=(33, 32)))


def test_bad_shapes_and_values_raise_clear_errors():
  with pytest.raises(ValueError, match=r'\[N, D\]'):
    im.fid_from_features(np.zeros((4, 2, 2)), np.zeros((4, 4)))
  with pytest.raises(ValueError, match='dimensions differ'):
    im.fid_from_features(np.random.rand(20, 3), np.random.rand(20, 4))
  with pytest.raises(ValueError, match='NaN'):
    im.kernel_inception_distance(np.full((5, 3), np.nan), np.zeros((5, 3)))
  with pytest.raises(ValueError, match='at least 2'):
    im.gaussian_stats(np.zeros((1, 3)))
  with pytest.raises(ValueError, match='same feature extractor'):
    im.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
  with pytest.raises(ValueError, match='splits'):
    im.inception_score(np.zeros((5, 10)), splits=6)


# --------------------------------------------------------------------- KID.


def _mmd2_loops(x, y):
  """Direct O(n^2) double loops, straight from the definition."""
  m, d = len(x), x.shape[1]
  k = lambda a, b: (np.dot(a, b) / d + 1.0) ** 3
  sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
  syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
  sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
  return sxx / (m * (m - 1)) + syy / (m * (m - 1)) - 2 * sxy / (m * m)


def test_mmd2_matches_direct_loops():
  rng = np.random.default_rng(3)
  x, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 5)) + 0.5
  np.testing.assert_allclose(im.mmd2_unbiased(x, y), _mmd2_loops(x, y), rtol=1e-10)


def test_kid_subsets_reproduce_direct_mmd():
  rng = np.random.default_rng(4)
  x, y = rng.normal(size=(40, 6)), rng.normal(size=(40, 6)) * 1.5
  # A subset as large as the sets is a permutation: every subset gives the full MMD.
  mean, std = im.kernel_inception_distance(x, y, num_subsets=3, subset_size=40)
  np.testing.assert_allclose(mean, _mmd2_loops(x, y), rtol=1e-10)
  assert std == pytest.approx(0, abs=1e-12)
  # Smaller subsets: the mean over subsets of the direct MMD of those same subsets.
  mean, std = im.kernel_inception_distance(x, y, num_subsets=5, subset_size=10, seed=7)
  r = np.random.default_rng(7)
  vals = [_mmd2_loops(x[r.choice(40, 10, replace=False)], y[r.choice(40, 10, replace=False)])
          for _ in range(5)]
  np.testing.assert_allclose([mean, std], [np.mean(vals), np.std(vals)], rtol=1e-10)


def test_kid_is_near_zero_for_same_distribution_and_positive_otherwise():
  rng = np.random.default_rng(5)
  same = im.kernel_inception_distance(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)),
                                      num_subsets=20, subset_size=200)[0]
  diff = im.kernel_inception_distance(rng.normal(size=(400, 8)),
                                      rng.normal(size=(400, 8)) + 1.0,
                                      num_subsets=20, subset_size=200)[0]
  assert abs(same) < 0.02 and diff > 0.5


# ----------------------------------------------------------- precision/recall.


def _pr_sklearn(real, fake, k):
  def radii(x):
    return NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)[0][:, k]

  def cover(manifold, r, q):
    d = np.linalg.norm(q[:, None, :] - manifold[None, :, :], axis=-1)
    return np.mean(np.any(d <= r[None, :], axis=1))

  return cover(real, radii(real), fake), cover(fake, radii(fake), real)


def test_precision_recall_known_answers():
  rng = np.random.default_rng(6)
  real = rng.normal(size=(200, 4))
  assert im.precision_recall(real, real) == (1.0, 1.0)
  # Disjoint, far apart: nothing of one set lies on the other's manifold.
  assert im.precision_recall(real, real + 100.0) == (0.0, 0.0)
  # Fakes are exactly one of two far-apart real clusters (mode dropping): every fake is
  # realistic (precision 1) but only half of the reals are covered (recall 0.5).
  cluster_a, cluster_b = rng.normal(size=(100, 4)), rng.normal(size=(100, 4)) + 50.0
  p, r = im.precision_recall(np.concatenate([cluster_a, cluster_b]), cluster_a.copy())
  assert (p, r) == (1.0, 0.5)


def test_precision_recall_matches_sklearn_brute_force():
  rng = np.random.default_rng(8)
  real = rng.normal(size=(150, 5))
  fake = rng.normal(size=(120, 5)) * 0.7 + 0.5
  ours = im.precision_recall(real, fake, k=3, batch_size=37)  # Uneven batches on purpose.
  np.testing.assert_allclose(ours, _pr_sklearn(real, fake, 3))
  assert 0 < ours[0] < 1 and 0 < ours[1] < 1
  with pytest.raises(ValueError, match='k=3'):
    im.precision_recall(real[:3], fake)


# ------------------------------------------------------------- Inception Score.


def _is_direct(logits, splits):
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  out = []
  for part in np.array_split(p, splits):
    py = part.mean(0)
    out.append(np.exp(np.mean([np.sum(q * (np.log(q) - np.log(py))) for q in part])))
  return np.mean(out), np.std(out)


def test_inception_score_matches_direct_numpy():
  logits = np.random.default_rng(9).normal(size=(100, 1008)) * 3
  np.testing.assert_allclose(im.inception_score(logits, splits=4), _is_direct(logits, 4),
                             rtol=1e-10)


def test_inception_score_bounds():
  assert im.inception_score(np.zeros((50, 1008)), splits=5) == pytest.approx((1.0, 0.0))
  one_hot = np.eye(10)[np.arange(100) % 10] * 1000.0  # Confident, 10 distinct classes.
  mean, std = im.inception_score(one_hot, splits=2)
  assert mean == pytest.approx(10.0, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)
  assert im.inception_score(one_hot[:1].repeat(40, 0), splits=1)[0] == pytest.approx(1.0)
