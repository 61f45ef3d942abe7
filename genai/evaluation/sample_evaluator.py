"""FID/KID of generated samples at eval time, as a plug-in for an image experiment's evaluate.

The VAE, GAN and diffusion configs declare these fields through
`configs/image_data.add_fid_eval_fields(config.eval)` (`eval.fid_samples=0`, the default,
keeps it off):
  eval.fid_samples        samples generated per eval (0 = off; 10,000+ for paper numbers)
  eval.fid_features       'inception' | 'domain:WORKDIR' (domain keys come out *_domain)
  eval.fid_ref_count      reference images from data.eval_split (0 = all)
  eval.fid_batch_size     samples generated per sample_fn call
  eval.inception_weights  '' = the cache of `python -m genai.evaluation.inception_weights`
  eval.kid_subsets, eval.kid_subset_size

and merges the results into its own evaluate:

  fid_eval = sample_evaluator.from_config(config, sample_fn, value_range=data.value_range)
  def evaluate(state, step):
    results = {...the experiment's own metrics...}
    if fid_eval:
      results.update(fid_eval(state, step))   # {'fid': .., 'kid': .., 'kid_std': ..}
    return results

`sample_fn(state, n, rng) -> images [n, H, W, C]` (floats in the data's value range, or
uint8). The loop writes the floats as TensorBoard scalars.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from genai.evaluation import image_metrics
from genai.evaluation import reference_stats as ref_lib

SampleFn = Callable[[Any, int, jax.Array], Any]


def generate_samples(sample_fn: SampleFn, state: Any, num_samples: int, rng: jax.Array,
                     batch_size: int) -> np.ndarray:
  """num_samples images from sample_fn, batch_size at a time (rng folded with the index)."""
  out = []
  for i, start in enumerate(range(0, num_samples, batch_size)):
    n = min(batch_size, num_samples - start)
    images = np.asarray(jax.device_get(sample_fn(state, n, jax.random.fold_in(rng, i))))
    if images.ndim != 4 or len(images) != n:
      raise ValueError(f'sample_fn(state, {n}, rng) returned shape {images.shape}; it must '
                       f'return {n} images [n, H, W, C].')
    out.append(images)
  return np.concatenate(out)


def make_sample_evaluator(sample_fn: SampleFn, extractor: ref_lib.FeatureExtractor,
                          ref_stats: ref_lib.ReferenceStats, num_samples: int, *,
                          batch_size: int = 250, value_range: str | None = None,
                          seed: int = 0, kid_subsets: int = 100, kid_subset_size: int = 1000,
                          print_fn: Callable[[str], None] | None = None
                          ) -> Callable[[Any, int], dict[str, float]]:
  """evaluate(state, step) -> {'fid', 'kid', 'kid_std'} (or 'fid_domain', ... for domain
  features) on `num_samples` fresh samples against `ref_stats`.

  The samples of an eval step depend only on (seed, step): reruns give the same numbers.
  `value_range` is the samples' range when sample_fn returns floats.
  """
  if num_samples < 2:
    raise ValueError(f'eval.fid_samples={num_samples}: need >= 2 samples (0 turns FID off; '
                     '10,000+ for numbers comparable to papers).')
  base_rng = jax.random.key(seed)

  def evaluate(state, step: int) -> dict[str, float]:
    t0 = time.perf_counter()
    images = generate_samples(sample_fn, state, num_samples,
                              jax.random.fold_in(base_rng, step), batch_size)
    feats = ref_lib.compute_features(extractor, images, value_range)['pool']
    mu, sigma = image_metrics.gaussian_stats(feats, f'{num_samples} generated samples')
    fid = image_metrics.frechet_distance(mu, sigma, ref_stats.mu, ref_stats.sigma)
    kid, kid_std = image_metrics.kernel_inception_distance(
        feats, ref_stats.features, num_subsets=kid_subsets, subset_size=kid_subset_size,
        seed=step)
    if print_fn:
      print_fn(f'{extractor.key("fid")} on {num_samples} samples vs {ref_stats.count} '
               f'reference images ({extractor.name}): {time.perf_counter() - t0:.1f}s')
    return {extractor.key('fid'): fid, extractor.key('kid'): kid,
            extractor.key('kid_std'): kid_std}

  return evaluate


def from_config(config: ml_collections.ConfigDict, sample_fn: SampleFn, *,
                value_range: str | None = None,
                print_fn: Callable[[str], None] | None = print, key_prefix: str = ''
                ) -> Callable[[Any, int], dict[str, float]] | None:
  """The evaluator an experiment's config asks for, or None when eval.fid_samples is 0/unset.

  `key_prefix` is prepended to every result key (the experiments pass 'eval/').

  The reference is the experiment's own data (config.data, its eval split and image size);
  its statistics are cached (reference_stats.get_reference_stats) so only the first run
  pays for them.
  """
  ec = config.get('eval') or ml_collections.ConfigDict()
  num_samples = int(ec.get('fid_samples', 0) or 0)
  if num_samples <= 0:
    return None
  extractor = ref_lib.load_extractor(ec.get('fid_features', 'inception'),
                                     inception_weights=ec.get('inception_weights') or None)
  ref = ref_lib.reference_from_data_config(config.data)
  stats = ref_lib.get_reference_stats(ref, extractor, count=int(ec.get('fid_ref_count', 0)),
                                      print_fn=print_fn or (lambda s: None))
  evaluate = make_sample_evaluator(
      sample_fn, extractor, stats, num_samples,
      batch_size=int(ec.get('fid_batch_size', 250)), value_range=value_range,
      seed=int(config.get('seed', 0)) + 2, kid_subsets=int(ec.get('kid_subsets', 100)),
      kid_subset_size=int(ec.get('kid_subset_size', 1000)), print_fn=print_fn)
  if not key_prefix:
    return evaluate
  return lambda state, step: {key_prefix + k: v for k, v in evaluate(state, step).items()}
