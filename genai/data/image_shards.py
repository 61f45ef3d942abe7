"""Images as encoded records (PNG/JPEG bytes + label) in ArrayRecord shards, or a TFDS data
source, decoded and resized per batch in the input pipeline: never one array of the set.

Prepare (genai.data.prepare --images) from a folder of PNG/JPEG files (class subfolders
give labels, train/test subfolders give splits), MNIST-format IDX files or a TFDS dataset:

  OUT/<split>/images-00000.array_record ...   one shard per work unit
  OUT/<split>/manifest.json                   written last: image count, shape, classes

Read with `load_image_data(data_cfg, batch_size=..., seed=...)`: for data.source='prepared'
(data.path=OUT) or 'tfds_source' (data.tfds_name, a TFDS dataset built as ArrayRecord) it
streams (`load_streamed_image_data`); for every other source it is
`genai.data.images.load_image_data`. Both return the same `ImageData`, so an image
experiment that calls this one switches with one config field.
"""
from __future__ import annotations

import io
import logging
import os
import struct
import zlib
from pathlib import Path
from typing import Any, Sequence

import grain
import numpy as np

from genai import errors
from genai.data import batching
from genai.data import images as images_lib
from genai.data import token_shards
from genai.data import work_units

FORMAT = 'genai.images/1'
STREAMED_SOURCES = ('prepared', 'tfds_source')
SHARD_PATTERN = 'images-{:05d}.array_record'
_HEADER = struct.Struct('<4siI')  # magic, label (-1 = none), crc32 of the encoded bytes
_MAGIC = b'GIM1'
log = logging.getLogger('genai.data.prepare')


def encode_record(encoded: bytes, label: int | None) -> bytes:
  return _HEADER.pack(_MAGIC, -1 if label is None else int(label), zlib.crc32(encoded)) + encoded


def decode_record(data: bytes, where: str) -> tuple[bytes, int]:
  try:
    magic, label, crc = _HEADER.unpack_from(data)
  except struct.error:
    magic = None
  body = data[_HEADER.size:]
  if magic != _MAGIC or zlib.crc32(body) != crc:
    raise ValueError(f'{where} is corrupt (a record fails its checksum); prepare the images '
                     'again with python -m genai.data.prepare --images.')
  return body, label


def png_bytes(image: np.ndarray) -> bytes:
  from PIL import Image  # pylint: disable=import-outside-toplevel
  arr = np.asarray(image, np.uint8)
  buf = io.BytesIO()
  Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr).save(
      buf, format='PNG', compress_level=1)
  return buf.getvalue()


def decode_image(encoded: bytes, *, channels: int, image_size: int, where: str) -> np.ndarray:
  """uint8 [H, W, channels] (resized to image_size x image_size when > 0)."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  try:
    with Image.open(io.BytesIO(encoded)) as im:
      im = im.convert('L' if channels == 1 else 'RGB')
      if image_size and im.size != (image_size, image_size):
        im = im.resize((image_size, image_size), Image.Resampling.BILINEAR)
      arr = np.asarray(im, np.uint8)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'{where}: an image does not decode ({e}); prepare the images again.'
                     ) from None
  return arr[..., None] if arr.ndim == 2 else arr


# ------------------------------------------------------------------ preparation.


def _idx_arrays(folder: str, split: str):
  cache = _idx_arrays.__dict__.setdefault('cache', {})
  if (folder, split) not in cache:
    cache[(folder, split)] = images_lib.load_images(
        _Cfg(source='idx', path=folder), split)
  return cache[(folder, split)]


class _Cfg(dict):
  __getattr__ = dict.get


def _tfds_split_source(name: str, split: str, data_dir: str | None):
  from genai.data import corpus_inputs  # pylint: disable=import-outside-toplevel
  return corpus_inputs.tfds_source(name, split, data_dir)


def encode_unit(item: tuple[int, dict, dict]) -> dict[str, Any]:
  """Writes one shard of encoded images; returns its manifest entry and what it skipped."""
  from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel
  index, unit, job = item
  path = os.path.join(job['out'], unit['split'], SHARD_PATTERN.format(index))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f'{path}.tmp-{os.getpid()}'
  writer = array_record_module.ArrayRecordWriter(tmp, token_shards.WRITER_OPTIONS)
  shapes: dict[str, int] = {}
  skipped, max_label, count = [], -1, 0
  try:
    for encoded, label, shape, name in _unit_images(unit, skipped):
      writer.write(encode_record(encoded, label))
      key = 'x'.join(map(str, shape))
      shapes[key] = shapes.get(key, 0) + 1
      max_label = max(max_label, -1 if label is None else int(label))
      count += 1
    writer.close()
  except BaseException:
    writer.close()
    os.remove(tmp)
    raise
  if not count:
    os.remove(tmp)
    return {'skipped': skipped}
  os.replace(tmp, path)
  return {'shard': {'file': os.path.basename(path), 'num_records': count,
                    'bytes': os.path.getsize(path)},
          'shapes': shapes, 'max_label': max_label, 'skipped': skipped}


def _unit_images(unit: dict, skipped: list[str]):
  """(encoded bytes, label, (H, W, C), name) of a unit's images."""
  if unit['kind'] == 'idx':
    x, y = _idx_arrays(unit['path'], unit['split'])
    for i in range(unit['start'], unit['stop']):
      yield png_bytes(x[i]), int(y[i]), x[i].shape, f'{unit["path"]}[{i}]'
  elif unit['kind'] == 'tfds':
    src = _tfds_split_source(unit['name'], unit['tfds_split'], unit['data_dir'])
    for i in range(unit['start'], unit['stop']):
      ex = src[i]
      if 'image' not in ex:
        raise ValueError(f"TFDS dataset {unit['name']!r} has no 'image' feature (has "
                         f'{sorted(ex)}); pick an image dataset.')
      img = np.asarray(ex['image'])
      img = img[..., None] if img.ndim == 2 else img
      label = int(ex['label']) if 'label' in ex else None
      yield png_bytes(img), label, img.shape, f"tfds:{unit['name']}[{i}]"
  else:
    from PIL import Image  # pylint: disable=import-outside-toplevel
    for name, label in unit['files']:
      with open(name, 'rb') as f:
        data = f.read()
      try:
        with Image.open(io.BytesIO(data)) as im:
          im.load()
          channels = 1 if im.mode in ('1', 'L', 'LA', 'I', 'I;16', 'F') else 3
          shape = (im.size[1], im.size[0], channels)
      except Exception:  # pylint: disable=broad-except
        skipped.append(name)  # a broken file among many: skip it, count it, warn
        continue
      yield data, label, shape, name


def _folder_units(root: Path, per_shard: int) -> list[dict]:
  splits = [p for p in sorted(root.iterdir()) if p.is_dir() and p.name in
            images_lib._KNOWN_SPLITS]  # pylint: disable=protected-access
  units = []
  for split_root, split in ([(p, p.name) for p in splits] or [(root, 'train')]):
    classes = sorted(p.name for p in split_root.iterdir() if p.is_dir())
    files: list[tuple[str, int | None]] = []
    if classes:
      for label, c in enumerate(classes):
        files += [(str(p), label) for p in sorted((split_root / c).rglob('*'))
                  if images_lib._is_image(p)]  # pylint: disable=protected-access
    else:
      files = [(str(p), None) for p in sorted(split_root.iterdir())
               if images_lib._is_image(p)]  # pylint: disable=protected-access
    if not files:
      raise ValueError(f"'{split_root}' holds no {'/'.join(images_lib.IMAGE_EXTENSIONS)} "
                       'files; point --folder at a folder of images.')
    units += [{'kind': 'folder', 'split': split, 'files': files[i:i + per_shard]}
              for i in range(0, len(files), per_shard)]
  return units


def prepare_images(out: str, *, folder: str = '', idx: str = '', tfds: str = '',
                   tfds_splits: Sequence[str] = (), tfds_data_dir: str = '',
                   image_size: int = 0, images_per_shard: int = 10_000, workers: int = 0,
                   runner: str | None = None, beam_args: Sequence[str] = (),
                   command: str = '') -> dict[str, dict[str, Any]]:
  """Encodes images into OUT/<split>/ shards + manifest per split; returns the manifests.
  `image_size` is recorded as the size readers resize to by default (decoding happens at
  read time)."""
  if sum(bool(x) for x in (folder, idx, tfds)) != 1:
    raise ValueError('--images needs exactly one of --folder, --idx or --tfds.')
  if images_per_shard < 1:
    raise ValueError(f'--images_per_shard={images_per_shard} must be >= 1.')
  if folder:
    root = Path(os.path.expanduser(folder))
    if not root.is_dir():
      raise FileNotFoundError(f'--folder={folder!r} is not a folder; point it at a folder of '
                              'PNG/JPEG files.')
    units = _folder_units(root, images_per_shard)
  elif idx:
    units = []
    for split in ('train', 'test'):
      n = len(_idx_arrays(idx, split)[0])
      units += [{'kind': 'idx', 'path': idx, 'split': split, 'start': s,
                 'stop': min(s + images_per_shard, n)} for s in range(0, n, images_per_shard)]
  else:
    units = []
    for split in (tfds_splits or ['train', 'test']):
      n = len(_tfds_split_source(tfds, split, tfds_data_dir or None))
      units += [{'kind': 'tfds', 'name': tfds, 'tfds_split': split, 'split': split,
                 'data_dir': tfds_data_dir or None, 'start': s,
                 'stop': min(s + images_per_shard, n)} for s in range(0, n, images_per_shard)]
  splits = sorted({u['split'] for u in units})
  for s in splits:
    stale = os.path.join(out, s, token_shards.MANIFEST)
    if os.path.exists(stale):
      os.remove(stale)
  job = {'out': os.path.abspath(out)}
  results = work_units.map_units(encode_unit, [(i, u, job) for i, u in enumerate(units)],
                              workers=workers, runner=runner, beam_args=beam_args,
                              tmp_dir=out)
  skipped = [name for r in results for name in r['skipped']]
  if skipped:
    log.warning('skipped %d image files that do not decode: %s%s', len(skipped),
                ', '.join(skipped[:5]), ' ...' if len(skipped) > 5 else '')
  max_label = max([r['max_label'] for r in results if 'shard' in r] or [-1])
  manifests = {}
  for s in splits:
    mine = [r for r, u in zip(results, units) if u['split'] == s and 'shard' in r]
    if not mine:
      raise ValueError(f'split {s!r} has no image that decodes ({len(skipped)} skipped); '
                       'check the inputs.')
    shapes: dict[str, int] = {}
    for r in mine:
      for k, v in r['shapes'].items():
        shapes[k] = shapes.get(k, 0) + v
    dims = [tuple(map(int, k.split('x'))) for k in shapes]
    manifest = {
        'format': FORMAT, 'split': s, 'command': command,
        'num_images': sum(r['shard']['num_records'] for r in mine),
        'image_shape': list(dims[0]) if len(dims) == 1 else None,
        'channels': max(d[2] for d in dims), 'shapes': shapes,
        'image_size': int(image_size), 'num_classes': max_label + 1,
        'source': {'folder': folder} if folder else {'idx': idx} if idx else {'tfds': tfds},
        'skipped': {'undecodable_files': {'count': len(skipped), 'examples': skipped[:20]}},
        'shards': [r['shard'] for r in mine],
    }
    token_shards.write_json_atomic(os.path.join(out, s, token_shards.MANIFEST), manifest)
    work_units.remove_unlisted(os.path.join(out, s), {r['shard']['file'] for r in mine},
                               token_shards.MANIFEST)
    manifests[s] = manifest
  return manifests


# ---------------------------------------------------------------------- reading.


class EncodedImages:
  """Random access to (encoded bytes, label) of a prepared image split; picklable."""

  def __init__(self, root: str, split: str):
    self.root, self.split = root, split
    self.manifest = token_shards.read_manifest(root, split, FORMAT)
    self.paths = token_shards.shard_paths(root, split, self.manifest)
    self._base = np.cumsum([0] + [s['num_records'] for s in self.manifest['shards']])
    self._source = None

  def __len__(self) -> int:
    return int(self._base[-1])

  def __getstate__(self):
    return {**self.__dict__, '_source': None}

  def read(self, ids: Sequence[int]) -> list[tuple[bytes, int]]:
    if self._source is None:
      self._source = grain.sources.ArrayRecordDataSource(
          [f'{p}[0:{s["num_records"]}]' for p, s in zip(self.paths, self.manifest['shards'])],
          reader_options=token_shards.READER_OPTIONS)
    out = []
    for i in ids:
      where = self.paths[int(np.searchsorted(self._base, i, 'right')) - 1]
      try:
        data = self._source[int(i)]
      except (RuntimeError, OSError) as e:
        raise ValueError(f'{where} is corrupt ({str(e).splitlines()[0][:160]}); prepare the '
                         'images again.') from None
      out.append(decode_record(data, where))
    return out


class TfdsImages:
  """Random access to a TFDS split built as ArrayRecord (`tfds.data_source`); picklable."""

  def __init__(self, name: str, split: str, data_dir: str | None = None):
    self.name, self.split, self.data_dir = name, split, data_dir
    self._source = None
    self._len = len(self._src())

  def _src(self):
    if self._source is None:
      self._source = _tfds_split_source(self.name, self.split, self.data_dir)
    return self._source

  def __len__(self) -> int:
    return self._len

  def __getstate__(self):
    return {**self.__dict__, '_source': None}

  def num_classes(self) -> int:
    """From the dataset's info (0 when it has no class label)."""
    try:
      return int(self._src().dataset_info.features['label'].num_classes)
    except (AttributeError, KeyError, TypeError):
      return 0

  def read(self, ids: Sequence[int]) -> list[tuple[np.ndarray, int]]:
    src = self._src()
    out = []
    for i in ids:  # one by one: __getitems__ fails under tfds.testing.mock_data
      ex = src[int(i)]
      out.append((np.asarray(ex['image']), int(ex.get('label', -1))))
    return out


class DecodeBatch:
  """(batch index, image indices) -> {'image': f32 [B,H,W,C], 'label'}: reads, decodes,
  resizes and scales one batch; flips/binarisation keyed by (seed, host, batch index), so
  a resumed iterator reproduces batches exactly (as images._GatherBatch)."""

  def __init__(self, source, *, channels: int, image_size: int, value_range: str,
               labels: bool, seed: int = 0, shard_index: int = 0, random_flip: bool = False,
               binarize: bool = False):
    self.source, self.channels, self.image_size = source, channels, image_size
    self.value_range, self.labels, self.seed = value_range, labels, seed
    self.shard_index, self.random_flip, self.binarize = shard_index, random_flip, binarize

  def decode(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    pixels, labels = [], []
    where = getattr(self.source, 'root', None) or getattr(self.source, 'name', '')
    for item, label in self.source.read(ids):
      if isinstance(item, bytes):
        img = decode_image(item, channels=self.channels, image_size=self.image_size,
                           where=where)
      else:
        img = _resize_array(item, self.channels, self.image_size)
      pixels.append(img)
      labels.append(label)
    if len({p.shape for p in pixels}) > 1:
      raise ValueError(f'{where}: images differ in size ({sorted({p.shape for p in pixels})[:2]}'
                       '); set data.image_size to resize them all to one square size.')
    return np.stack(pixels), np.asarray(labels, np.int32)

  def __call__(self, index: int, ids: np.ndarray) -> dict[str, np.ndarray]:
    x, y = self.decode(ids)
    x = images_lib.preprocess(x, value_range=self.value_range)
    batch = {'image': images_lib.augment(x, (self.seed, self.shard_index, int(index)),
                                         random_flip=self.random_flip, binarize=self.binarize)}
    if self.labels:
      batch['label'] = y
    return batch


def _resize_array(img: np.ndarray, channels: int, image_size: int) -> np.ndarray:
  img = np.asarray(img, np.uint8)
  img = img[..., None] if img.ndim == 2 else img
  if img.shape[-1] != channels:
    img = np.repeat(img, 3, -1) if img.shape[-1] == 1 else img[..., :1]
  if image_size and img.shape[:2] != (image_size, image_size):
    from PIL import Image  # pylint: disable=import-outside-toplevel
    im = Image.fromarray(img[..., 0] if channels == 1 else img)
    img = np.asarray(im.resize((image_size, image_size), Image.Resampling.BILINEAR), np.uint8)
    img = img[..., None] if img.ndim == 2 else img
  return img


def load_streamed_image_data(data_cfg: Any, *, batch_size: int, seed: int,
                             num_workers: int = 0, shard_index: int | None = None,
                             shard_count: int | None = None) -> images_lib.ImageData:
  """`images.load_image_data`'s ImageData, streamed: data.source='prepared' (data.path: a
  folder of genai.data.prepare --images) or 'tfds_source' (data.tfds_name, built as
  ArrayRecord). Training batches are decoded per batch (in `num_workers` processes when
  > 0); the eval split (capped by data.eval_examples) is one array, as ImageData holds it."""
  get = data_cfg.get
  if images_lib.parse_classes(get('classes', '')):
    raise errors.UserError(f"data.classes is not supported with data.source={get('source')!r}",
                           "use an in-memory source (embedded, idx, folder, tfds) or set "
                           "data.classes=''")
  value_range = get('value_range', '[-1,1]')
  binarize = bool(get('binarize', False))
  train_split, eval_split = get('train_split', 'train'), get('eval_split', 'test')
  if get('source') == 'tfds_source':
    name, data_dir = get('tfds_name'), get('tfds_data_dir') or None
    if not name:
      raise ValueError("data.source='tfds_source' needs data.tfds_name (e.g. 'mnist').")
    train, evals = TfdsImages(name, train_split, data_dir), TfdsImages(name, eval_split, data_dir)
    first = train.read([0])[0]
    channels = 1 if np.asarray(first[0]).ndim == 2 else np.asarray(first[0]).shape[-1]
    labels, size_hint, shape = first[1] >= 0, 0, np.asarray(first[0]).shape
    num_classes = train.num_classes()
  else:
    path = get('path')
    if not path:
      raise ValueError("data.source='prepared' needs data.path: a folder written by python -m "
                       'genai.data.prepare --images.')
    train, evals = EncodedImages(path, train_split), EncodedImages(path, eval_split)
    m = train.manifest
    channels = max(m['channels'], evals.manifest['channels'])
    labels = m['num_classes'] > 0
    num_classes = max(m['num_classes'], evals.manifest['num_classes'])
    size_hint, shape = m['image_size'], m['image_shape']
  image_size = int(get('image_size', 0) or 0) or size_hint
  if not image_size and shape is None:
    raise ValueError(f'{get("path")}: the images differ in size; set data.image_size to '
                     'resize them all to one square size.')
  shard_index, shard_count = batching.resolve_shard(shard_index, shard_count)
  n = len(train)
  if int(get('max_examples', 0) or 0):
    n = min(n, int(get('max_examples')))
  if batching.items_per_shard(n, shard_index, shard_count) < batch_size:
    raise ValueError(f'this host has {batching.items_per_shard(n, shard_index, shard_count)} '
                     f'images ({n} over {shard_count} hosts) but batch_size={batch_size}; '
                     'use a smaller batch size or more data.')
  decode = DecodeBatch(train, channels=channels, image_size=image_size,
                       value_range=value_range, labels=labels, seed=int(seed) % 2**32,
                       shard_index=shard_index, random_flip=bool(get('random_flip', False)),
                       binarize=binarize)
  ds = batching.index_batches(n, batch_size=batch_size, seed=seed, shard_index=shard_index,
                              shard_count=shard_count).map_with_index(decode)
  it = ds.to_iter_dataset(batching.NO_PREFETCH)
  if num_workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  train_iter = iter(it)

  eval_n = len(evals)
  if int(get('eval_examples', 0) or 0):
    eval_n = min(eval_n, int(get('eval_examples')))
  eval_decode = DecodeBatch(evals, channels=channels, image_size=image_size,
                            value_range=value_range, labels=labels)
  chunks = [eval_decode.decode(range(s, min(s + 1024, eval_n))) for s in range(0, eval_n, 1024)]
  eval_x = images_lib.preprocess(np.concatenate([c[0] for c in chunks]), value_range=value_range)
  eval_y = np.concatenate([c[1] for c in chunks]) if labels else None
  if binarize:
    images_lib.check_value_range(eval_x, '[0,1]')
    rng = np.random.default_rng(12345)  # as load_image_data: one fixed binary test set
    eval_x = (rng.random(eval_x.shape, dtype=np.float32) < eval_x).astype(np.float32)
  if labels and not num_classes:
    num_classes = int(max(int(eval_y.max()), 0) + 1)
  return images_lib.ImageData(train_iter=train_iter, eval_images=eval_x, eval_labels=eval_y,
                              image_shape=tuple(eval_x.shape[1:]),
                              num_classes=num_classes if labels else 0,
                              value_range=value_range)


def load_image_data(data_cfg: Any, *, batch_size: int, seed: int) -> images_lib.ImageData:
  """What an image experiment calls: streamed for data.source in STREAMED_SOURCES, else
  `images.load_image_data` (the whole set in memory)."""
  if data_cfg.get('source') in STREAMED_SOURCES:
    return load_streamed_image_data(data_cfg, batch_size=batch_size, seed=seed)
  return images_lib.load_image_data(data_cfg, batch_size=batch_size, seed=seed)
