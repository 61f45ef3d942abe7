"""Loading image data sets and feeding them as shuffled grain batches."""

from __future__ import annotations

import dataclasses
import gzip
import os
from typing import Any

from absl import logging
import grain
from etils import epath
import numpy as np

from genai import paths
from genai import errors
from genai.data import batching

Batch = dict[str, np.ndarray]

VALID_SOURCES = ('embedded', 'idx', 'folder', 'tfds')
VALID_VALUE_RANGES = ('[-1,1]', '[0,1]')
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')
_KNOWN_SPLITS = ('train', 'test', 'validation', 'val')


def load_images(data_cfg: Any, split: str
                ) -> tuple[np.ndarray, np.ndarray | None]:
  """Returns (uint8 images [N, H, W, C], int32 labels [N] or None).

  `data_cfg.source` picks the loader: 'embedded' (scikit-learn's 8x8 digits),
  'idx' (MNIST-format files in `data_cfg.path`), 'folder' (PNG/JPEG files
  under `data_cfg.path`, one subfolder per class optional) or 'tfds'
  (`data_cfg.tfds_name`).

  A folder is scanned whole: every unreadable image, and every image smaller than
  `data_cfg.min_image_size` or that `data_cfg.image_size` would upscale by more than
  `data_cfg.max_upscale`, is named in one error (or skipped with a count in the log when
  `data_cfg.skip_bad_images`). A folder without train/test subfolders holds out
  `data_cfg.eval_fraction` of its images (a fixed draw) as the split named
  `data_cfg.eval_split`; the rest is `data_cfg.train_split`. Fields a `data_cfg` lacks are
  off (no size checks, no held-out split).
  """
  source = getattr(data_cfg, 'source', 'embedded')
  if source == 'embedded':
    images, labels = embedded_digits(split)
  elif source == 'idx':
    images, labels = _load_idx(getattr(data_cfg, 'path', None), split)
  elif source == 'folder':
    images, labels = _load_folder(getattr(data_cfg, 'path', None), split, data_cfg=data_cfg)
  elif source == 'tfds':
    images, labels = _load_tfds(
        name=getattr(data_cfg, 'tfds_name', None), split=split,
        max_examples=int(getattr(data_cfg, 'max_examples', 0) or 0),
        data_dir=getattr(data_cfg, 'tfds_data_dir', None) or None)
  else:
    raise ValueError(
        f'data.source={source!r} is not a known image source; use one of '
        f'{", ".join(repr(s) for s in VALID_SOURCES)}.')
  if len(images) == 0:
    raise ValueError(
        f'data.source={source!r} split {split!r} produced no images; check '
        'data.path / data.tfds_name and the split name.')
  return images, labels


def embedded_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's 1,797 8x8 digits as uint8 [N, 8, 8, 1] in 0..255.

  'train' is the first 90% and 'test' the last 10%, in the shipped order.
  """
  try:
    from sklearn import datasets  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(
        "data.source='embedded' needs scikit-learn (its bundled digits); "
        '`pip install scikit-learn` or use another data.source.') from e
  digits = datasets.load_digits()
  # Pixel values are counts 0..16; map 16 -> 255 exactly.
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int32)
  n_train = int(len(images) * 0.9)
  if split == 'train':
    return images[:n_train], labels[:n_train]
  if split == 'test':
    return images[n_train:], labels[n_train:]
  raise ValueError(f"split={split!r} is not a split of data.source='embedded';"
                   " use 'train' or 'test'.")


# ---------------------------------------------------------------- IDX files.

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype('>i2'),
               0x0C: np.dtype('>i4'), 0x0D: np.dtype('>f4'),
               0x0E: np.dtype('>f8')}


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Parses one IDX file (raw or .gz) into a numpy array."""
  path = str(path)
  try:
    data = paths.path(path).read_bytes()
    if path.endswith('.gz'):
      data = gzip.decompress(data)
  except (OSError, EOFError, gzip.BadGzipFile) as e:
    raise ValueError(f'cannot read IDX file {path!r} ({e}); re-download it.'
                     ) from e
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
    raise ValueError(f'{path!r} is not an IDX file (bad magic number); point '
                     'data.path at MNIST-format files.')
  dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
  header = 4 + 4 * ndim
  shape = tuple(int(d) for d in np.frombuffer(data, '>u4', ndim, offset=4))
  count = int(np.prod(shape))
  if len(data) != header + count * dtype.itemsize:
    raise ValueError(f'IDX file {path!r} is truncated or corrupt (header says '
                     f'shape {shape}); re-download it.')
  return np.frombuffer(data, dtype, count, offset=header).reshape(shape)


def _find_idx(folder: epath.Path, stem: str) -> epath.Path:
  for name in (stem, stem + '.gz'):
    if (folder / name).is_file():
      return folder / name
  raise ValueError(f"data.path='{folder}' has no {stem} or {stem}.gz; point "
                   'data.path at a folder of MNIST-format IDX files.')


def _load_idx(path: str | None, split: str) -> tuple[np.ndarray, np.ndarray]:
  if not path:
    raise ValueError("data.source='idx' needs data.path (a folder of "
                     'MNIST-format IDX files); set data.path.')
  folder = paths.path(path)
  if not folder.is_dir():
    raise ValueError(f'data.path={path!r} is not a folder; point it at the '
                     'folder that holds train-images-idx3-ubyte(.gz) etc.')
  prefix = {'train': 'train', 'test': 't10k', 't10k': 't10k'}.get(split)
  if prefix is None:
    raise ValueError(f"split={split!r} is not a split of data.source='idx'; "
                     "use 'train' or 'test'.")
  images = read_idx(_find_idx(folder, f'{prefix}-images-idx3-ubyte'))
  labels = read_idx(_find_idx(folder, f'{prefix}-labels-idx1-ubyte'))
  if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
    raise ValueError(
        f"IDX files in data.path={path!r} disagree: images {images.shape}, "
        f'labels {labels.shape}; expected [N, H, W] and [N].')
  return (np.ascontiguousarray(images.astype(np.uint8)[..., None]),
          labels.astype(np.int32))


# ------------------------------------------------------------ image folders.


def _is_image(p: epath.Path) -> bool:
  return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS


def _decode(path: epath.Path, image_size: int) -> tuple[np.ndarray, tuple[int, int]]:
  """Decodes one file to (uint8 [H, W, C] with C in {1, 3}, its size (h, w) before any
  resize). Raises ValueError naming the file when it cannot be decoded."""
  try:
    from PIL import Image  # pylint: disable=import-outside-toplevel
  except ImportError:
    return _decode_tf(path, image_size)
  try:
    with paths.path(path).open('rb') as fh, Image.open(fh) as im:
      im.load()
      size = (im.size[1], im.size[0])
      if im.mode not in ('L', 'RGB'):
        grey = im.mode in ('1', 'LA', 'I', 'I;16', 'F')
        im = im.convert('L' if grey else 'RGB')
      if image_size and im.size != (image_size, image_size):
        im = im.resize((image_size, image_size), Image.Resampling.BILINEAR)
      arr = np.asarray(im, dtype=np.uint8)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"cannot decode image file '{path}' ({e}); delete or "
                     'replace it.') from e
  return (arr[..., None] if arr.ndim == 2 else arr), size


def _decode_tf(path: epath.Path, image_size: int) -> tuple[np.ndarray, tuple[int, int]]:
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  try:
    img = tf.io.decode_image(paths.path(path).read_bytes(), expand_animations=False)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"cannot decode image file '{path}' ({e}); delete or "
                     'replace it.') from e
  size = (int(img.shape[0]), int(img.shape[1]))
  if img.shape[-1] in (2, 4):  # Drop alpha.
    img = img[..., :img.shape[-1] - 1]
  if image_size and tuple(img.shape[:2]) != (image_size, image_size):
    img = tf.image.resize(img, (image_size, image_size), antialias=True)
    img = tf.cast(tf.clip_by_value(tf.round(img), 0, 255), tf.uint8)
  return img.numpy().astype(np.uint8), size


@dataclasses.dataclass(frozen=True)
class FolderChecks:
  """What a folder scan refuses (data.min_image_size, data.max_upscale) and whether it
  skips refused files with a count (data.skip_bad_images) instead of failing."""
  image_size: int = 0        # the resize target, 0 = none
  min_image_size: int = 0    # smallest side allowed, in pixels; 0 = any
  max_upscale: float = 0.0   # largest resize factor of a side; 0 = any
  skip_bad: bool = False

  @classmethod
  def of(cls, data_cfg: Any) -> 'FolderChecks':
    return cls(image_size=int(getattr(data_cfg, 'image_size', 0) or 0),
               min_image_size=int(getattr(data_cfg, 'min_image_size', 0) or 0),
               max_upscale=float(getattr(data_cfg, 'max_upscale', 0) or 0),
               skip_bad=bool(getattr(data_cfg, 'skip_bad_images', False)))

  def problem(self, size: tuple[int, int]) -> str:
    """Why an image of `size` (h, w) is refused ('' if it is not)."""
    h, w = size
    if self.min_image_size and min(h, w) < self.min_image_size:
      return f'{h}x{w}, below data.min_image_size={self.min_image_size}'
    if self.image_size and self.max_upscale:
      factor = self.image_size / min(h, w)
      if factor > self.max_upscale:
        return (f'{h}x{w}: resizing it to data.image_size={self.image_size} upscales it '
                f'{factor:g}x, over data.max_upscale={self.max_upscale:g}')
    return ''


_LISTED = 20  # bad files named in the error line (all of them go to the log)


def scan_folder(files: list[epath.Path], checks: FolderChecks, root: epath.Path
                ) -> tuple[list[np.ndarray], list[int]]:
  """Decodes every file; returns (arrays, indices of the files kept). Every unreadable or
  refused file is found in one pass: with checks.skip_bad they are skipped and counted in
  the log, otherwise one DataError names them all (the first 20 in its line, every one in
  the log above it)."""
  arrays, kept, bad = [], [], []
  for i, f in enumerate(files):
    try:
      arr, size = _decode(f, checks.image_size)
    except ValueError as e:
      cause = e.__cause__
      bad.append((f, f'unreadable: {cause}' if cause is not None else str(e)))
      continue
    problem = checks.problem(size)
    if problem:
      bad.append((f, problem))
      continue
    arrays.append(arr)
    kept.append(i)
  if bad:
    for f, why in bad:
      logging.warning('bad image %s: %s', f, why)
    if checks.skip_bad and kept:
      logging.warning("skipped %d of %d images under '%s' (data.skip_bad_images=True): "
                      'unreadable or refused, listed above.', len(bad), len(files), root)
    else:
      listed = '; '.join(f"'{f}' ({why})" for f, why in bad[:_LISTED])
      more = f'; and {len(bad) - _LISTED} more (all in the log above)' if len(bad) > _LISTED else ''
      fix = ('fix or delete them, or set data.skip_bad_images=True to train without them'
             if kept else 'every image is unusable: fix them or point data.path elsewhere')
      raise errors.DataError(
          f"{len(bad)} of {len(files)} images under '{root}' cannot be used: {listed}{more}",
          fix)
  return arrays, kept


_SCANNED: dict[str, Any] = {}  # the last scan of a folder with a held-out split, for its
                                # second split's load


def _held_out(n: int, fraction: float, root: epath.Path) -> np.ndarray:
  """A fixed boolean mask of the `fraction` of n files held out for evaluation."""
  n_eval = max(1, int(round(n * fraction)))
  if n_eval >= n:
    raise errors.DataError(
        f"'{root}' has {n} images and no train/test subfolders: too few to hold out "
        f'data.eval_fraction={fraction:g} for evaluation',
        f'add images, add {root}/train and {root}/test, or set data.eval_fraction=0 to '
        'evaluate on the training images')
  mask = np.zeros(n, bool)
  mask[np.random.default_rng(0).permutation(n)[:n_eval]] = True
  return mask


def _load_folder(path: str | None, split: str, *, data_cfg: Any = None
                 ) -> tuple[np.ndarray, np.ndarray | None]:
  if not path:
    raise ValueError("data.source='folder' needs data.path (a folder of "
                     'PNG/JPEG files); set data.path.')
  root = paths.path(path)
  if not root.is_dir():
    raise ValueError(f'data.path={path!r} is not a folder; point it at a '
                     'folder of PNG/JPEG files.')
  role = 'all'
  if (root / split).is_dir():
    root = root / split
  else:
    splits = sorted(p.name for p in root.iterdir()
                    if p.is_dir() and p.name in _KNOWN_SPLITS)
    if splits:
      raise ValueError(
          f'data.path={path!r} has split folders {splits} but no {split!r}; '
          f'add {path}/{split}/ or ask for one of {splits}.')
    if split == getattr(data_cfg, 'train_split', 'train'):
      role = 'train'
    elif split == getattr(data_cfg, 'eval_split', 'test'):
      role = 'eval'
  classes = sorted(p.name for p in root.iterdir() if p.is_dir())
  files: list[epath.Path] = []
  labels: list[int] | None = None
  if classes:
    loose = sorted(p.name for p in root.iterdir() if _is_image(p))
    if loose:
      raise ValueError(
          f"'{root}' mixes class subfolders {classes[:3]} with loose images "
          f'(e.g. {loose[0]!r}); move every image into a class subfolder.')
    labels = []
    for label, name in enumerate(classes):
      found = [p for p in paths.files_under(root / name) if _is_image(p)]
      files.extend(found)
      labels.extend([label] * len(found))
  else:
    files = sorted(p for p in root.iterdir() if _is_image(p))
  if not files:
    raise ValueError(
        f"data.path='{root}' is an empty folder (no "
        f'{"/".join(IMAGE_EXTENSIONS)} files); add images or fix data.path.')

  fraction = float(getattr(data_cfg, 'eval_fraction', 0) or 0)
  checks = FolderChecks.of(data_cfg)
  # The whole folder is scanned (every bad file named at once, whichever split it falls
  # in); a held-out split then takes its part. The train and eval loads share one scan.
  key = (str(root), tuple(map(str, files)), checks)
  if _SCANNED.get('key') == key:
    arrays, kept = _SCANNED.pop('value')
    _SCANNED.clear()
  else:
    arrays, kept = scan_folder(files, checks, root)
    if role != 'all' and fraction > 0:
      _SCANNED.update(key=key, value=(arrays, kept))
  if role != 'all':
    if fraction > 0:
      held = _held_out(len(files), fraction, root)
      keep = held if role == 'eval' else ~held
      if role == 'eval':
        logging.warning("data.path='%s' has no train/test subfolders: holding out %d of its "
                        '%d images for evaluation (data.eval_fraction=%g); the other %d '
                        'train.', root, int(held.sum()), len(files), fraction,
                        int((~held).sum()))
      arrays = [a for a, i in zip(arrays, kept) if keep[i]]
      kept = [i for i in kept if keep[i]]
    elif role == 'eval':
      logging.warning("data.path='%s' has no train/test subfolders and data.eval_fraction=0: "
                      'evaluating on the training images.', root)
  if not kept:
    raise errors.DataError(f"the {split!r} split of '{root}' is empty once its unusable "
                           'images are skipped', 'fix or replace them')
  files = [files[i] for i in kept]
  labels = None if labels is None else [labels[i] for i in kept]
  sizes: dict[tuple[int, int], epath.Path] = {}
  for f, a in zip(files, arrays):
    sizes.setdefault(a.shape[:2], f)
  if len(sizes) > 1:
    (s1, f1), (s2, f2) = list(sizes.items())[:2]
    raise ValueError(
        f"images differ in size: '{f1}' is {s1[0]}x{s1[1]} but '{f2}' is "
        f'{s2[0]}x{s2[1]}; set data.image_size to resize them all to one '
        'square size.')
  if len({a.shape[-1] for a in arrays}) > 1:  # Mixed grey and colour.
    arrays = [np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a
              for a in arrays]
  images = np.stack(arrays).astype(np.uint8)
  return images, (None if labels is None else np.asarray(labels, np.int32))


# -------------------------------------------------------------------- TFDS.


def _load_tfds(*, name: str | None, split: str, max_examples: int = 0,
               data_dir: str | None = None
               ) -> tuple[np.ndarray, np.ndarray | None]:
  """Reads (image, label) of a TFDS image dataset into numpy."""
  if not name:
    raise ValueError("data.source='tfds' needs data.tfds_name (e.g. 'mnist' "
                     "or 'cifar10'); set it or use data.source='embedded'.")
  # Imported lazily: tensorflow_datasets pulls in TensorFlow (~5 s).
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  try:
    # Not batch_size=-1: it aborts the process under tfds.testing.mock_data.
    ds = tfds.load(name, split=split, shuffle_files=False, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(
        f'data.tfds_name={name!r} is not a known TFDS dataset; check the name '
        'against tfds.list_builders() (e.g. mnist, cifar10).') from e
  except AssertionError as e:  # TFDS signals "not prepared" this way.
    raise ValueError(
        f'TFDS dataset {name!r} split {split!r} is not available ({e}); '
        f'prepare it with `tfds build {name}` (needs network), set '
        "data.tfds_data_dir, or use data.source='idx'/'embedded'.") from e
  if max_examples > 0:
    ds = ds.take(max_examples)  # Split slicing is ignored under the mock.
  images, labels = [], []
  for ex in tfds.as_numpy(ds):
    if 'image' not in ex:
      raise ValueError(f'TFDS dataset {name!r} has no "image" feature (has '
                       f'{sorted(ex)}); pick an image dataset.')
    img = np.asarray(ex['image'])
    images.append(img[..., None] if img.ndim == 2 else img)
    if 'label' in ex:
      labels.append(int(ex['label']))
  if not images:
    return np.zeros((0, 1, 1, 1), np.uint8), None
  if len({i.shape for i in images}) > 1:
    raise ValueError(f'TFDS dataset {name!r} has images of several sizes; '
                     'resize them before stacking (not supported here).')
  out_labels = np.asarray(labels, np.int32) if len(labels) == len(images) else None
  return np.stack(images).astype(np.uint8), out_labels


# ------------------------------------------------------------ preprocessing.


def _check_value_range_name(value_range: str) -> None:
  if value_range not in VALID_VALUE_RANGES:
    raise ValueError(
        f'data.value_range={value_range!r} is not supported; use one of '
        f'{", ".join(repr(v) for v in VALID_VALUE_RANGES)}.')


def preprocess(images_uint8: np.ndarray, *, image_size: int | None = None,
               value_range: str = '[-1,1]', binarize: bool = False
               ) -> np.ndarray:
  """uint8 [N, H, W, C] -> float32 in `value_range`, optionally resized.

  `image_size` resizes to image_size x image_size (bilinear, antialiased).
  `binarize=True` thresholds at 0.5 (static binarisation, e.g. for eval sets;
  needs value_range='[0,1]'); dynamic binarisation is make_image_iterator's.
  """
  _check_value_range_name(value_range)
  images = np.asarray(images_uint8)
  if images.ndim != 4:
    raise ValueError(f'images must be [N, H, W, C], got shape {images.shape}.')
  if binarize and value_range != '[0,1]':
    raise ValueError("binarize=True needs value_range='[0,1]' (Bernoulli "
                     "pixels); set data.value_range='[0,1]'.")
  x = images.astype(np.float32)
  if image_size and tuple(x.shape[1:3]) != (image_size, image_size):
    import jax  # pylint: disable=import-outside-toplevel
    out = np.empty((len(x), image_size, image_size, x.shape[-1]), np.float32)
    chunk = 4096  # Bounds peak memory on big datasets.
    for i in range(0, len(x), chunk):
      part = x[i:i + chunk]
      out[i:i + chunk] = np.asarray(jax.image.resize(
          part, (len(part), image_size, image_size, x.shape[-1]),
          method='linear', antialias=True))
    x = np.clip(out, 0.0, 255.0)
  x = x / np.float32(255.0)
  if binarize:
    return (x > 0.5).astype(np.float32)
  if value_range == '[-1,1]':
    x = x * np.float32(2.0) - np.float32(1.0)
  return x.astype(np.float32, copy=False)


def check_value_range(images: np.ndarray, expected: str) -> None:
  """Raises if `images` do not look like they lie in `expected`."""
  _check_value_range_name(expected)
  images = np.asarray(images)
  lo, hi = float(images.min()), float(images.max())
  eps = 1e-5
  if expected == '[0,1]':
    if lo < -eps or hi > 1 + eps:
      found = '[-1,1]' if lo >= -1 - eps and hi <= 1 + eps else f'[{lo}, {hi}]'
      raise ValueError(
          f'the model expects images in [0,1] (e.g. a Bernoulli likelihood) '
          f'but the data is in {found} (min={lo:g}, max={hi:g}); set '
          "data.value_range='[0,1]'.")
  else:
    if lo < -1 - eps or hi > 1 + eps:
      raise ValueError(
          f'the model expects images in [-1,1] but the data spans min={lo:g}, '
          f"max={hi:g}; normalise it with preprocess(value_range='[-1,1]').")
    if lo >= -eps and hi > eps:
      raise ValueError(
          f'the model expects images in [-1,1] but the data looks like [0,1] '
          f"(min={lo:g}, max={hi:g}); set data.value_range='[-1,1]'.")


# ----------------------------------------------------------------- batching.



def augment(x: np.ndarray, key: tuple[int, ...], *, random_flip: bool, binarize: bool
            ) -> np.ndarray:
  """A batch's random horizontal flips and dynamic binarisation, drawn from `key` (seed,
  host, batch index): a pure function of it, so a resumed run draws the same."""
  if random_flip or binarize:
    rng = np.random.default_rng(key)
    if random_flip:
      flip = rng.random(len(x)) < 0.5
      x[flip] = x[flip, :, ::-1]
    if binarize:
      x = (rng.random(x.shape, dtype=np.float32) < x).astype(np.float32)
  return x

class _GatherBatch:
  """Gathers one batch and applies per-batch randomness keyed by its index."""

  def __init__(self, images: np.ndarray, labels: np.ndarray | None, *,
               seed: int, shard_index: int, random_flip: bool, binarize: bool):
    self.images = images
    self.labels = labels
    self.seed = seed
    self.shard_index = shard_index
    self.random_flip = random_flip
    self.binarize = binarize

  def __call__(self, index: int, idx: np.ndarray) -> Batch:
    x = self.images[idx]  # One fancy-index gather (a copy).
    batch = {'image': augment(x, (self.seed, self.shard_index, int(index)),
                              random_flip=self.random_flip, binarize=self.binarize)}
    if self.labels is not None:
      batch['label'] = self.labels[idx]
    return batch


def make_image_dataset(images_f32: np.ndarray, labels: np.ndarray | None, *,
                       batch_size: int, seed: int, random_flip: bool = False,
                       binarize: bool = False, shard_index: int | None = None,
                       shard_count: int | None = None,
                       read_options: grain.ReadOptions | None = None
                       ) -> grain.IterDataset:
  """The endless, shuffled, sharded image batches as a grain IterDataset."""
  if batch_size < 1:
    raise ValueError(f'batch_size={batch_size} must be >= 1.')
  images = np.ascontiguousarray(images_f32, dtype=np.float32)
  if images.ndim != 4:
    raise ValueError(f'images must be [N, H, W, C], got shape {images.shape}.')
  if labels is not None:
    labels = np.asarray(labels).astype(np.int32)
    if labels.shape != (len(images),):
      raise ValueError(f'labels shape {labels.shape} does not match '
                       f'{len(images)} images; pass labels [N] or None.')
  if binarize:
    check_value_range(images, '[0,1]')
  shard_index, shard_count = batching.resolve_shard(shard_index, shard_count)
  per_host = batching.items_per_shard(len(images), shard_index, shard_count)
  if per_host < batch_size:
    raise ValueError(
        f'this host has {per_host} images ({len(images)} over {shard_count} '
        f'hosts) but batch_size={batch_size}; use a smaller batch size or '
        'more data.')
  ds = batching.index_batches(len(images), batch_size=batch_size, seed=seed,
                              shard_index=shard_index, shard_count=shard_count)
  ds = ds.map_with_index(_GatherBatch(
      images, labels, seed=int(seed) % 2**32, shard_index=shard_index,
      random_flip=random_flip, binarize=binarize))
  return ds.to_iter_dataset(read_options or batching.NO_PREFETCH)


def make_image_iterator(images_f32: np.ndarray, labels: np.ndarray | None, *,
                        batch_size: int, seed: int, random_flip: bool = False,
                        binarize: bool = False, shard_index: int | None = None,
                        shard_count: int | None = None
                        ) -> grain.DatasetIterator:
  """Endless iterator of {'image': f32 [B,H,W,C], 'label': i32 [B]} batches.

  `batch_size` is per host. `random_flip` mirrors each image left-right with
  probability 1/2; `binarize` samples pixels ~ Bernoulli(value) (images must
  be in [0,1]). Both are drawn from (seed, host, batch index), so
  get_state()/set_state() resume reproduces batches exactly.
  """
  return iter(make_image_dataset(
      images_f32, labels, batch_size=batch_size, seed=seed,
      random_flip=random_flip, binarize=binarize, shard_index=shard_index,
      shard_count=shard_count))


# ------------------------------------------------------ one call for an experiment.


def parse_classes(spec: Any) -> tuple[int, ...]:
  """data.classes: '' (all), '0-4', '5,7,9' or a list of ints -> the sorted class ids."""
  if isinstance(spec, (list, tuple)):
    items = [str(v) for v in spec]
  else:
    items = [v.strip() for v in str(spec or '').split(',') if v.strip()]
  out = set()
  try:
    for item in items:
      lo, sep, hi = item.partition('-')
      out.update(range(int(lo), int(hi) + 1) if sep else [int(lo)])
  except ValueError:
    raise errors.UserError(f'data.classes={spec!r} is not a list of classes',
                           "write them as '0-4' or '0,2,4'") from None
  return tuple(sorted(out))


def select_classes(images: np.ndarray, labels: np.ndarray | None, keep: tuple[int, ...],
                   split: str) -> tuple[np.ndarray, np.ndarray]:
  """The images (and labels, unchanged) of the classes in `keep`."""
  if labels is None:
    raise errors.UserError(f'data.classes={list(keep)} but split {split!r} has no labels',
                           "use labelled data or set data.classes=''")
  mask = np.isin(labels, keep)
  if not mask.any():
    raise errors.UserError(f'data.classes={list(keep)} keeps no image of split {split!r} '
                           f'(its labels are {sorted(set(labels.tolist()))[:10]})',
                           'name classes the data has')
  return images[mask], labels[mask]


@dataclasses.dataclass
class ImageData:
  """What an image experiment needs: train batches, a fixed eval set and its shape."""
  train_iter: grain.DatasetIterator
  eval_images: np.ndarray          # float32 [N, H, W, C] in value_range (binarised if asked)
  eval_labels: np.ndarray | None   # int32 [N]
  image_shape: tuple[int, int, int]
  num_classes: int                 # 0 when the data has no labels
  value_range: str


def load_image_data(data_cfg: Any, *, batch_size: int, seed: int) -> ImageData:
  """Loads, preprocesses and batches `data_cfg` (see configs/image_data.py for fields).

  `data_cfg.binarize=True` draws Bernoulli pixels afresh for every train batch (dynamic
  binarisation) and once, with a fixed seed, for the eval set: the usual protocol for
  binarised-MNIST likelihoods.
  """
  value_range = data_cfg.get('value_range', '[-1,1]')
  binarize = bool(data_cfg.get('binarize', False))
  limit = int(data_cfg.get('max_examples', 0) or 0)
  size = int(data_cfg.get('image_size', 0) or 0) or None

  keep = parse_classes(data_cfg.get('classes', ''))

  def split(name, cap):
    x, y = load_images(data_cfg, name)
    if keep:
      x, y = select_classes(x, y, keep, name)
    if cap:
      x, y = x[:cap], (None if y is None else y[:cap])
    return preprocess(x, image_size=size, value_range=value_range), y

  train_x, train_y = split(data_cfg.get('train_split', 'train'), limit)
  eval_cap = int(data_cfg.get('eval_examples', 0) or 0)
  eval_x, eval_y = split(data_cfg.get('eval_split', 'test'), eval_cap)
  if train_x.shape[1:] != eval_x.shape[1:]:
    raise ValueError(f'train images are {train_x.shape[1:]} but eval images are '
                     f'{eval_x.shape[1:]}; set data.image_size to resize both.')
  if binarize:
    check_value_range(eval_x, '[0,1]')
    rng = np.random.default_rng(12345)  # Fixed: every run scores the same binary test set.
    eval_x = (rng.random(eval_x.shape, dtype=np.float32) < eval_x).astype(np.float32)
  train_iter = make_image_iterator(
      train_x, train_y, batch_size=batch_size, seed=seed,
      random_flip=bool(data_cfg.get('random_flip', False)), binarize=binarize)
  labels = [y for y in (train_y, eval_y) if y is not None]
  num_classes = int(max(int(y.max()) for y in labels) + 1) if labels else 0
  return ImageData(train_iter=train_iter, eval_images=eval_x, eval_labels=eval_y,
                   image_shape=tuple(train_x.shape[1:]), num_classes=num_classes,
                   value_range=value_range)
