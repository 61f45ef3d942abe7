"""Feature extractors by name, and cached feature statistics of a reference dataset split.

Extractors (`load_extractor(spec)`), each fn(images, value_range=None) -> {'pool': [N, D],
'logits': [N, K] (optional)}:
  'inception'        the FID InceptionV3 (2048-d pool3), genai/evaluation/inception.py.
  'domain:WORKDIR'   the penultimate layer of a classifier trained on the dataset by
                     experiments/classifier.py. Its metrics are FID-domain etc.: every key
                     is labelled with `_domain` (metric_key) and never reported as FID.

Reference datasets (`parse_dataset_spec`): 'mnist:test' (IDX files from `data_path` when
given, else TFDS 'mnist'), any 'NAME:SPLIT' likewise, 'digits:test' (the embedded
scikit-learn digits), 'idx:/path:test', 'folder:/path:test', 'tfds:NAME:SPLIT', or an
experiment workdir (its config.data, eval split and image size).

Statistics (mean and covariance in float64, plus up to `max_features` rows of the features
in float32 for KID and precision/recall) are cached as one .npz per (dataset, split, count,
image size, extractor, weights hash) under $GENAI_CACHE_DIR/ref_stats (default
~/.cache/genai/ref_stats). Those keys are in the file name and in the file's metadata; a
file is reused only when every key matches, and recomputed otherwise.

Provenance: beside each .npz a .json (and the same record inside the .npz) says which images
(dataset, split, count, shape and the SHA-256 of their uint8 bytes), which network (extractor,
weights hash, feature layer and width) and which resizes (the dataset's own resize to
image_size, the network's input resize) made the statistics. A cached file whose provenance
does not match what this evaluation would compute (the images at that path changed, another
resize, other weights) is refused with an error, never silently used; so is a stats file
given by hand (`load_stats_file`, `--ref_stats`) whose provenance does not match.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import types
from pathlib import Path
from typing import Any, Callable

import numpy as np

from genai import errors
from genai.data import images as images_lib
from genai.evaluation import image_metrics

FeatureFn = Callable[..., dict[str, np.ndarray]]
CACHE_ENV = 'GENAI_CACHE_DIR'
FORMAT_VERSION = 2  # 2: provenance (images hash, network, resizes) stored and checked


# ---------------------------------------------------------------- extractors.


@dataclasses.dataclass(frozen=True)
class FeatureExtractor:
  """A named feature function; `weights_hash` identifies its weights in cache keys."""
  name: str            # 'inception' | 'domain:<absolute workdir>'
  weights_hash: str
  fn: FeatureFn
  layer: str = ''       # which features, for provenance ('pool3', 'penultimate')
  input_resize: str = ''  # how the network resizes its input, for provenance

  @property
  def is_domain(self) -> bool:
    return self.name.startswith('domain:')

  def key(self, metric: str) -> str:
    return metric_key(metric, self.is_domain)


# What genai/evaluation/inception.py's preprocess does to every image (its docstring).
INCEPTION_RESIZE = ('to [0, 255], rounded to 8 bits; TF1 resize_bilinear (align_corners=False, '
                    'no antialiasing) to 299x299; (x - 128) / 128; grey repeated to RGB')


def metric_key(metric: str, domain: bool) -> str:
  """'fid' -> 'fid_domain', 'kid_mean' -> 'kid_domain_mean' for domain features."""
  if not domain:
    return metric
  for suffix in ('_mean', '_std'):
    if metric.endswith(suffix):
      return metric[:-len(suffix)] + '_domain' + suffix
  return metric + '_domain'


def load_extractor(spec: str = 'inception', *, inception_weights: str | None = None,
                   batch_size: int = 100) -> FeatureExtractor:
  """'inception' or 'domain:WORKDIR' -> FeatureExtractor."""
  if spec == 'inception':
    # pylint: disable=import-outside-toplevel
    from genai.evaluation import inception
    from genai.evaluation import inception_weights as weights_lib
    params, weights_hash = weights_lib.load_inception_params(inception_weights or None)
    return FeatureExtractor('inception', weights_hash,
                            inception.make_feature_fn(params, batch_size=batch_size),
                            layer='pool3 (2048)', input_resize=INCEPTION_RESIZE)
  if spec.startswith('domain:'):
    from genai.families import classifier  # pylint: disable=import-outside-toplevel
    workdir = spec[len('domain:'):]
    if not workdir:
      raise ValueError("--features domain: needs a classifier workdir: 'domain:WORKDIR' "
                       '(train one with python -m experiments.classifier).')
    trained = classifier.load_classifier(workdir)
    return FeatureExtractor(f'domain:{trained.workdir}', trained.weights_hash,
                            classifier.make_feature_fn(trained, batch_size=max(batch_size, 500)),
                            layer='penultimate', input_resize='none (the classifier input)')
  raise ValueError(f'features={spec!r} is not a feature extractor; use "inception" or '
                   '"domain:WORKDIR" (a classifier trained by experiments/classifier.py).')


def compute_features(extractor: FeatureExtractor, images: np.ndarray,
                     value_range: str | None = None, chunk: int = 5000
                     ) -> dict[str, np.ndarray]:
  """Runs the extractor over `images` in chunks (bounded memory): {'pool', 'logits'?}."""
  parts: dict[str, list[np.ndarray]] = {}
  for i in range(0, len(images), chunk):
    out = extractor.fn(images[i:i + chunk], value_range=value_range)
    for k, v in out.items():
      if v is not None:
        parts.setdefault(k, []).append(np.asarray(v, np.float32))
  return {k: np.concatenate(v) for k, v in parts.items()}


# ----------------------------------------------------------- reference datasets.


@dataclasses.dataclass(frozen=True)
class DatasetRef:
  key: str           # canonical id used in the cache key, e.g. 'mnist@idx:/abs/path'
  data_cfg: Any      # what images.load_images reads (source, path, tfds_name, ...)
  split: str
  image_size: int = 0  # 0 = native size; N = resized to N x N as the experiment sees them


def _cfg(**kw) -> types.SimpleNamespace:
  return types.SimpleNamespace(**kw)


def reference_from_data_config(data_cfg: Any, split: str | None = None) -> DatasetRef:
  """The reference set of an experiment's `config.data` (default: its eval split)."""
  get = data_cfg.get if hasattr(data_cfg, 'get') else lambda k, d=None: getattr(data_cfg, k, d)
  source = get('source', 'embedded')
  split = split or get('eval_split', 'test')
  if source == 'embedded':
    key = 'digits'
  elif source in ('idx', 'folder'):
    key = f'{source}:{os.path.abspath(os.path.expanduser(get("path", "") or "."))}'
  elif source == 'tfds':
    key = f'tfds:{get("tfds_name", "")}'
  else:
    raise ValueError(f'data.source={source!r} is not a known image source; use one of '
                     f'{images_lib.VALID_SOURCES}.')
  return DatasetRef(key, data_cfg, split, int(get('image_size', 0) or 0))


def parse_dataset_spec(spec: str, data_path: str | None = None, image_size: int = 0
                       ) -> DatasetRef:
  """A --ref string (see the module docstring) -> DatasetRef."""
  if os.path.isdir(spec):
    config_path = os.path.join(spec, 'config.json')
    if not os.path.exists(config_path):
      raise ValueError(f'--ref {spec!r} is a folder without config.json: not an experiment '
                       "workdir. Give a dataset like 'mnist:test' or a trained workdir.")
    with open(config_path) as f:
      data = json.load(f).get('data')
    if not data:
      raise ValueError(f'{config_path} has no data block; cannot tell its dataset.')
    ref = reference_from_data_config(data)
    return dataclasses.replace(ref, data_cfg=_cfg(**data), image_size=image_size or
                               ref.image_size)
  kind, sep, rest = spec.partition(':')
  if not sep or not rest:
    raise ValueError(f"--ref {spec!r} is not a dataset spec: use 'NAME:SPLIT' (e.g. "
                     "mnist:test, digits:test), 'idx:/path:SPLIT', 'folder:/path:SPLIT', "
                     "'tfds:NAME:SPLIT' or a workdir.")
  if kind in ('idx', 'folder', 'tfds'):
    target, sep, split = rest.rpartition(':')
    if not sep or not target or not split:
      raise ValueError(f"--ref {spec!r} needs '{kind}:{'NAME' if kind == 'tfds' else 'PATH'}"
                       ":SPLIT', e.g. '{kind}:{'mnist' if kind == 'tfds' else '/data/mnist'}"
                       ":test'.")
    if kind == 'tfds':
      data_cfg = _cfg(source='tfds', tfds_name=target)
    else:
      data_cfg = _cfg(source=kind, path=target, image_size=image_size)
  elif kind == 'digits':
    data_cfg, split = _cfg(source='embedded'), rest
  elif data_path:  # NAME:SPLIT with a local copy in MNIST IDX format.
    data_cfg, split = _cfg(source='idx', path=data_path), rest
  else:
    data_cfg, split = _cfg(source='tfds', tfds_name=kind), rest
  ref = reference_from_data_config(data_cfg, split)
  named_copy = kind not in ('idx', 'folder', 'tfds', 'digits') and data_path
  key = f'{kind}@{ref.key}' if named_copy else ref.key
  return DatasetRef(key, data_cfg, split, image_size)


def load_reference_images(ref: DatasetRef, count: int = 0) -> np.ndarray:
  """uint8 [N, H, W, C] of the reference split: the first `count` (0 = all), resized to
  ref.image_size with the experiments' own resize (images.preprocess) when set."""
  x, _ = images_lib.load_images(ref.data_cfg, ref.split)
  if count:
    if count > len(x):
      raise ValueError(f'asked for {count} reference images but {ref.key} split '
                       f'{ref.split!r} has {len(x)}; lower the count (0 = all).')
    x = x[:count]
  if ref.image_size and tuple(x.shape[1:3]) != (ref.image_size, ref.image_size):
    unit = images_lib.preprocess(x, image_size=ref.image_size, value_range='[0,1]')
    x = np.round(unit * 255.0).astype(np.uint8)
  return x


# ----------------------------------------------------------- cached statistics.


@dataclasses.dataclass
class ReferenceStats:
  mu: np.ndarray            # [D] float64
  sigma: np.ndarray         # [D, D] float64
  features: np.ndarray      # [<= max_features, D] float32, for KID and precision/recall
  meta: dict[str, Any]      # dataset, split, count, image_size, extractor, weights_hash, ...
  path: str | None = None   # the cache file, when cached

  @property
  def count(self) -> int:
    return int(self.meta['count'])


def default_cache_dir() -> Path:
  return Path(os.environ.get(CACHE_ENV) or Path.home() / '.cache' / 'genai') / 'ref_stats'


def _slug(text: str) -> str:
  return re.sub(r'[^A-Za-z0-9._-]+', '-', text).strip('-')[:60]


def cache_path(meta: dict[str, Any], cache_dir: str | os.PathLike | None = None
               ) -> tuple[Path, str]:
  """(folder, file name). The name carries every key, plus a short hash of all of them."""
  digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:12]
  ext = 'domain' if meta['extractor'].startswith('domain:') else _slug(meta['extractor'])
  name = (f'{_slug(meta["dataset"])}_{_slug(meta["split"])}_n{meta["count"]}'
          f'_s{meta["image_size"]}_{ext}-{meta["weights_hash"][:12]}_{digest}.npz')
  return Path(cache_dir) if cache_dir else default_cache_dir(), name


def _read(path: Path) -> ReferenceStats | None:
  try:
    with np.load(path) as z:
      meta = json.loads(str(z['meta']))
      return ReferenceStats(z['mu'], z['sigma'], z['features'], meta, str(path))
  except (OSError, ValueError, KeyError) as e:  # Corrupt or foreign file: recompute.
    del e
    return None


def compute_stats(extractor: FeatureExtractor, images: np.ndarray, *,
                  value_range: str | None = None, max_features: int = 10_000, seed: int = 0,
                  name: str = 'reference features') -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(mu, sigma, a float32 subsample of at most `max_features` feature rows)."""
  feats = compute_features(extractor, images, value_range)['pool']
  mu, sigma = image_metrics.gaussian_stats(feats, name)
  if len(feats) > max_features:
    keep = np.sort(np.random.default_rng(seed).choice(len(feats), max_features, replace=False))
    feats = feats[keep]
  return mu, sigma, feats.astype(np.float32)


def images_sha256(images: np.ndarray) -> str:
  """SHA-256 of the images' uint8 bytes and shape: which images, exactly."""
  x = np.ascontiguousarray(np.asarray(images))
  h = hashlib.sha256(f'{x.dtype.str}{list(x.shape)}'.encode())
  h.update(x.tobytes())
  return h.hexdigest()


def provenance(ref: DatasetRef, images: np.ndarray, extractor: FeatureExtractor
               ) -> dict[str, Any]:
  """Which images, which network, which resizes made a set of reference statistics."""
  return {
      'images': {'dataset': ref.key, 'split': ref.split, 'count': int(len(images)),
                 'which': f'the first {len(images)} of the split, in file order',
                 'shape': [int(d) for d in images.shape[1:]], 'dtype': str(images.dtype),
                 'sha256': images_sha256(images)},
      'network': {'extractor': extractor.name, 'weights_sha256': extractor.weights_hash,
                  'layer': extractor.layer},
      'resize': {'dataset': (f'images.preprocess to {ref.image_size}x{ref.image_size}, '
                             'rounded to uint8') if ref.image_size else 'none (native size)',
                 'network_input': extractor.input_resize},
  }


class ReferenceStatsMismatch(errors.UserError, ValueError):
  """Reference statistics made from other images, network or resize than this evaluation's."""


def _differences(have: dict[str, Any], want: dict[str, Any], prefix: str = '') -> list[str]:
  out = []
  for k in sorted(set(have) | set(want)):
    a, b = have.get(k), want.get(k)
    if isinstance(a, dict) and isinstance(b, dict):
      out += _differences(a, b, f'{prefix}{k}.')
    elif a != b:
      out.append(f'{prefix}{k}: file {a!r}, evaluation {b!r}')
  return out


def check_provenance(stats: ReferenceStats, want: dict[str, Any]) -> None:
  """Raises ReferenceStatsMismatch unless `stats` were made exactly as `want` says."""
  have = stats.meta.get('provenance')
  if not have:
    raise ReferenceStatsMismatch(
        f'reference stats {stats.path} carry no provenance (written before format '
        f'{FORMAT_VERSION})', 'delete the file (it is recomputed and cached on the next run)')
  diff = _differences(have, want)
  if diff:
    raise ReferenceStatsMismatch(
        f'reference stats {stats.path} do not match this evaluation: ' + '; '.join(diff[:4]),
        'use the statistics of these images, network and resize, or delete the file so '
        'they are recomputed (or pass --no_cache)')


def _write(path: Path, stats: ReferenceStats) -> None:
  """The .npz (atomic) and its provenance .json beside it."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f'.{path.name}.{os.getpid()}.tmp.npz'
  np.savez(tmp, mu=stats.mu, sigma=stats.sigma, features=stats.features,
           meta=np.array(json.dumps(stats.meta)))
  os.replace(tmp, path)  # Atomic: a killed run never leaves a half-written cache file.
  side = path.with_suffix('.json')
  tmp = path.parent / f'.{side.name}.{os.getpid()}.tmp'
  tmp.write_text(json.dumps(stats.meta, indent=1, sort_keys=True) + '\n')
  os.replace(tmp, side)
  stats.path = str(path)


def load_stats_file(path: str | os.PathLike, ref: DatasetRef, extractor: FeatureExtractor, *,
                    count: int = 0) -> ReferenceStats:
  """A reference-stats .npz given by hand, refused unless its provenance matches `ref`
  (its first `count` images, 0 = all) under `extractor`."""
  stats = _read(Path(path))
  if stats is None:
    raise FileNotFoundError(f'--ref_stats {path!r} is not a readable reference-stats .npz; '
                            'give a file written by genai.evaluation (or omit --ref_stats).')
  images = load_reference_images(ref, count)
  check_provenance(stats, provenance(ref, images, extractor))
  return stats


def get_reference_stats(ref: DatasetRef, extractor: FeatureExtractor, *, count: int = 0,
                        max_features: int = 10_000, cache_dir: str | os.PathLike | None = None,
                        use_cache: bool = True, print_fn: Callable[[str], None] = print
                        ) -> ReferenceStats:
  """Cached statistics of `ref` under `extractor`; computed and saved on a miss.

  `count`: the first `count` images of the split (0 = all). The images are always read (a
  few seconds for MNIST) to check a cached file's provenance against them: a cached file
  made from other images or with another resize or network raises ReferenceStatsMismatch.
  """
  images = load_reference_images(ref, count)
  meta = {'version': FORMAT_VERSION, 'dataset': ref.key, 'split': ref.split,
          'count': int(len(images)), 'image_size': int(ref.image_size),
          'extractor': extractor.name, 'weights_hash': extractor.weights_hash,
          'max_features': int(max_features)}
  folder, name = cache_path(meta, cache_dir)
  path = folder / name
  want = provenance(ref, images, extractor)
  if use_cache and path.exists():
    cached = _read(path)
    if cached is not None and {k: v for k, v in cached.meta.items() if k != 'provenance'} == meta:
      check_provenance(cached, want)
      return cached
    print_fn(f'reference stats {path} do not match {meta}; recomputing.')
  print_fn(f'computing reference stats: {ref.key} {ref.split} ({len(images)} images) with '
           f'{extractor.name} ...')
  mu, sigma, feats = compute_stats(extractor, images, max_features=max_features,
                                   name=f'reference {ref.key}:{ref.split}')
  stats = ReferenceStats(mu, sigma, feats, {**meta, 'provenance': want})
  if use_cache:
    _write(path, stats)
    print_fn(f'saved reference stats to {path} (provenance: {path.with_suffix(".json")})')
  return stats
