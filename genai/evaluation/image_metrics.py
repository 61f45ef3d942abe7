"""Sample-quality metrics on feature vectors: FID, KID, improved precision/recall, IS.

Everything here is numpy/scipy on already-extracted features ([N, D] float arrays, e.g. the
2048-d InceptionV3 pool3 features or a domain classifier's penultimate layer) or logits, so
each formula is tested on its own against an independent reference (tests/evaluation/
test_image_metrics.py). Feature extraction and reference statistics live in
reference_stats.py.

  FID   Heusel et al. 2017: ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)).
  KID   Binkowski et al. 2018: unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3, mean and
        std over random subsets (the protocol of their code and of torch-fidelity).
  P/R   Kynkaanniemi et al. 2019: k-NN balls around each real (fake) feature; precision is
        the fraction of fakes inside some real ball, recall the fraction of reals inside
        some fake ball.
  IS    Salimans et al. 2016: exp E_x KL(p(y|x) || p(y)), mean and std over splits.
"""
from __future__ import annotations

import warnings

import numpy as np


class SingularCovarianceWarning(UserWarning):
  """Fewer samples than feature dimensions: the sample covariance is singular."""


# ------------------------------------------------------------------- checks.


def _check_features(x, name: str) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 2:
    raise ValueError(f'{name} must be a [N, D] array of feature vectors, got shape {x.shape}; '
                     'extract features first (reference_stats.compute_features).')
  if not np.issubdtype(x.dtype, np.floating):
    x = x.astype(np.float64)
  if len(x) == 0:
    raise ValueError(f'{name} is empty (0 rows); pass at least 2 samples.')
  if not np.all(np.isfinite(x)):
    raise ValueError(f'{name} contains NaN/Inf; check the images fed to the feature '
                     'extractor (a diverged model can produce NaN samples).')
  return x


def _check_same_dim(a: np.ndarray, b: np.ndarray, what: str) -> None:
  if a.shape[1] != b.shape[1]:
    raise ValueError(f'{what}: feature dimensions differ ({a.shape[1]} vs {b.shape[1]}); '
                     'both sets must come from the same feature extractor.')


# ---------------------------------------------------------------------- FID.


def gaussian_stats(features, name: str = 'features') -> tuple[np.ndarray, np.ndarray]:
  """(mean [D], covariance [D, D]) in float64, covariance with the N-1 denominator.

  Warns (SingularCovarianceWarning) when N <= D: the covariance then has rank < D and FID
  is biased and noisy; use more samples (>= D + 1; 10k-50k is the convention for D=2048).
  """
  x = _check_features(features, name).astype(np.float64)
  n, d = x.shape
  if n < 2:
    raise ValueError(f'{name} has {n} row; a covariance needs at least 2 samples.')
  if n <= d:
    warnings.warn(f'{name}: {n} samples for {d}-dim features; the covariance is singular '
                  f'(rank <= {n - 1} < {d}), so FID is biased upward and noisy. Use at '
                  f'least {d + 1} samples (10,000+ is the convention for Inception features).',
                  SingularCovarianceWarning, stacklevel=2)
  mu = x.mean(axis=0)
  xc = x - mu
  sigma = xc.T @ xc / (n - 1)
  return mu, sigma


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
  """Symmetric square root of a symmetric positive semi-definite matrix via eigh."""
  w, v = np.linalg.eigh((a + a.T) / 2.0)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
  """tr((S1 S2)^(1/2)) for covariance matrices S1, S2 (symmetric PSD).

  Why not scipy.linalg.sqrtm(S1 @ S2) (pytorch-fid, TTUR): S1 S2 is not symmetric, so its
  Schur-based sqrtm returns complex parts from rounding (discarded with a tolerance check)
  and fails on singular products (pytorch-fid then retries with S + eps*I, which changes
  the answer). Here: with R = S1^(1/2) (symmetric, from eigh), S1 S2 = R (R S2 R) R^(-1)
  is similar to M = R S2 R when S1 is invertible, and the nonzero eigenvalues of AB and BA
  coincide in general (A = R, B = R S2), so tr((S1 S2)^(1/2)) = sum_i sqrt(lambda_i(M)).
  M is symmetric PSD, so `eigvalsh` gives real eigenvalues; rounding can make tiny ones
  negative, which are clipped to 0. No offset, no complex arithmetic, exact on singular
  covariances, and two symmetric eigendecompositions are faster than one sqrtm.
  """
  root1 = _psd_sqrt(sigma1)
  m = root1 @ sigma2 @ root1
  eig = np.linalg.eigvalsh((m + m.T) / 2.0)
  return float(np.sum(np.sqrt(np.clip(eig, 0.0, None))))


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (the FID formula).

  ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)); see trace_sqrt_product for the
  matrix square root. Clipped at 0 (rounding can give -1e-12 for identical inputs).
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  d = mu1.shape[0] if mu1.ndim == 1 else -1
  for name, mu, sigma in (('1', mu1, sigma1), ('2', mu2, sigma2)):
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
      raise ValueError(f'mu{name} must be [D] and sigma{name} [D, D]; got {mu.shape} and '
                       f'{sigma.shape}.')
    if mu.shape[0] != d:
      raise ValueError(f'mu1 has dimension {d} but mu{name} has {mu.shape[0]}; both '
                       'statistics must come from the same feature extractor.')
  diff = mu1 - mu2
  value = (diff @ diff + np.trace(sigma1) + np.trace(sigma2)
           - 2.0 * trace_sqrt_product(sigma1, sigma2))
  return float(max(value, 0.0))


def fid_from_features(features1, features2) -> float:
  """FID between two feature sets [N1, D], [N2, D]."""
  f1 = _check_features(features1, 'features1')
  f2 = _check_features(features2, 'features2')
  _check_same_dim(f1, f2, 'FID')
  return frechet_distance(*gaussian_stats(f1, 'features1'), *gaussian_stats(f2, 'features2'))


# ---------------------------------------------------------------------- KID.


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """k(x, y) = (x.y / d + 1)^3 for all pairs: [n, d], [m, d] -> [n, m]."""
  d = x.shape[1]
  return (x @ y.T / d + 1.0) ** 3


def mmd2_unbiased(x, y) -> float:
  """Unbiased MMD^2 (U-statistic) between equal-size sets with the cubic polynomial kernel.

  (sum_{i!=j} k(x_i,x_j) + sum_{i!=j} k(y_i,y_j)) / (m (m-1)) - 2 mean_{i,j} k(x_i, y_j).
  """
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  m = len(x)
  if len(y) != m or m < 2:
    raise ValueError(f'mmd2_unbiased needs two sets of the same size >= 2, got {len(x)} and '
                     f'{len(y)}.')
  kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
  off_diag = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
  return float(off_diag - 2.0 * kxy.mean())


def kernel_inception_distance(features1, features2, *, num_subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0
                              ) -> tuple[float, float]:
  """KID: (mean, std) of mmd2_unbiased over `num_subsets` random subsets.

  Each subset draws min(subset_size, N1, N2) rows without replacement from each set (the
  protocol of Binkowski et al.'s code and torch-fidelity; std with ddof=0 as they do).
  KID is unbiased, so it can be slightly negative for matching distributions.
  """
  f1 = _check_features(features1, 'features1')
  f2 = _check_features(features2, 'features2')
  _check_same_dim(f1, f2, 'KID')
  if num_subsets < 1 or subset_size < 2:
    raise ValueError(f'num_subsets={num_subsets} must be >= 1 and subset_size={subset_size} '
                     '>= 2.')
  m = min(subset_size, len(f1), len(f2))
  if m < 2:
    raise ValueError(f'KID needs at least 2 samples in each set, got {len(f1)} and {len(f2)}.')
  rng = np.random.default_rng(seed)
  values = np.array([mmd2_unbiased(f1[rng.choice(len(f1), m, replace=False)],
                                   f2[rng.choice(len(f2), m, replace=False)])
                     for _ in range(num_subsets)])
  return float(values.mean()), float(values.std())


# -------------------------------------------------------- precision / recall.


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """||a_i - b_j||^2 for all pairs, clipped at 0 (float64)."""
  d = (np.sum(a * a, axis=1)[:, None] - 2.0 * (a @ b.T) + np.sum(b * b, axis=1)[None, :])
  return np.maximum(d, 0.0)


def knn_radii(features, k: int = 3, batch_size: int = 1000) -> np.ndarray:
  """Squared distance from each row to its k-th nearest other row (k-NN ball radius^2)."""
  x = np.asarray(features, np.float64)
  if not 1 <= k < len(x):
    raise ValueError(f'k={k} nearest neighbours needs 1 <= k < N={len(x)} samples.')
  out = np.empty(len(x))
  for i in range(0, len(x), batch_size):
    d = _squared_distances(x[i:i + batch_size], x)
    # Index k counts the point itself at distance 0 as its 0th neighbour.
    out[i:i + batch_size] = np.partition(d, k, axis=1)[:, k]
  return out


def _coverage(manifold: np.ndarray, radii: np.ndarray, queries: np.ndarray,
              batch_size: int) -> float:
  """Fraction of `queries` inside at least one ball (manifold_j, radii_j)."""
  inside = 0
  for i in range(0, len(queries), batch_size):
    d = _squared_distances(queries[i:i + batch_size], manifold)
    inside += int(np.sum(np.any(d <= radii[None, :], axis=1)))
  return inside / len(queries)


def precision_recall(real_features, fake_features, *, k: int = 3, batch_size: int = 1000
                     ) -> tuple[float, float]:
  """Improved precision and recall (Kynkaanniemi et al. 2019), (precision, recall) in [0, 1].

  Real manifold = union of balls around each real feature with radius its distance to the
  k-th nearest other real feature; precision = fraction of fake features inside it. Recall
  swaps the roles. Distances are computed in row batches of `batch_size` (memory
  O(batch_size * N)). The paper uses k=3 and equal set sizes (they matter: larger sets give
  smaller balls).
  """
  real = _check_features(real_features, 'real_features').astype(np.float64)
  fake = _check_features(fake_features, 'fake_features').astype(np.float64)
  _check_same_dim(real, fake, 'precision/recall')
  real_radii = knn_radii(real, k, batch_size)
  fake_radii = knn_radii(fake, k, batch_size)
  precision = _coverage(real, real_radii, fake, batch_size)
  recall = _coverage(fake, fake_radii, real, batch_size)
  return precision, recall


# ---------------------------------------------------------- Inception Score.


def _log_softmax(logits: np.ndarray) -> np.ndarray:
  z = logits - logits.max(axis=1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def inception_score(logits, splits: int = 10) -> tuple[float, float]:
  """(mean, std) over `splits` of exp(mean_x KL(p(y|x) || p(y))), p(y) the split's marginal.

  `logits` are the classifier's pre-softmax outputs [N, K]. For InceptionV3 these are the
  1008 logits of the 2015 TF graph (1000 ImageNet classes plus 8 unused ones); like the
  reference code (openai/improved-gan, torch-fidelity), the softmax runs over all 1008, so
  numbers are comparable to published IS. Splits are consecutive chunks (the reference's
  protocol); std is over splits with ddof=0. Bounds: 1 <= IS <= K.
  """
  logits = _check_features(logits, 'logits').astype(np.float64)
  n = len(logits)
  if not 1 <= splits <= n:
    raise ValueError(f'splits={splits} must be between 1 and the number of samples ({n}).')
  scores = []
  for part in np.array_split(logits, splits):
    log_p = _log_softmax(part)
    p = np.exp(log_p)
    log_py = np.log(p.mean(axis=0) + 1e-300)
    kl = np.sum(p * (log_p - log_py[None, :]), axis=1)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))
