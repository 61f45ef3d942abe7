"""Export report: sizes, latency and parity of the SavedModel and TFLite exports.

  python -m benchmarks.export_report [--lm_workdir runs/shakespeare] [--iters 50]

Models (random init unless --lm_workdir is given; no data needed):
  lm        the Tiny-Shakespeare char GPT (6 layers x 384 wide, 6 heads, vocab 65,
            max_len 256); timed: one 'decode_step' at batch 1 with a 256-slot cache,
            writing position 128
  gan       configs/gan/mnist.py's DCGAN generator (z 64 -> 28x28x1); one 'sample' call
  vae       configs/vae/mnist.py's decoder (z 32 -> 28x28x1 Bernoulli decoder mean); one
            'sample' call
  diffusion configs/diffusion/mnist.py's UNet (28x28x1; its all-zero initial leaves, the output
            conv and biases, drawn from N(0, 0.02^2) so the model is not constant); one 'sample'
            call = the whole --diffusion_steps DDIM chain
Columns: SavedModel bytes on disk; TFLite float / int8 (dynamic range) bytes; median
latency of --iters calls after --warmup calls of JAX jit, the loaded SavedModel signature
(tf.saved_model.load), and the TFLite float and int8 files (ai_edge_litert Interpreter,
one thread per core), batch 1; max |output - JAX| (decode: logits; images: float images),
and its mean for int8. Writes the result file (benchmarks/results.py).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf

from benchmarks import results as results_lib
from configs.diffusion import mnist as diffusion_mnist
from configs.gan import mnist as gan_mnist
from configs.vae import mnist as vae_mnist
from genai import paths
from genai.families import diffusion, gan, lm
from genai.families import vae as vae_family
from genai.export import saved_model as sm
from genai.export import tflite
from genai.models.transformer import Transformer, TransformerConfig
from genai.models.vae import make_vae
from genai.objectives import diffusion as dfn

MNIST_SHAPE = (28, 28, 1)


def _lm(workdir: str | None):
  if workdir:
    _, model, params, _ = lm.load_workdir(workdir)
  else:
    model = Transformer(TransformerConfig(vocab_size=65, num_layers=6, num_heads=6, d_model=384,
                                          max_len=256))
    params = model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))['params']
  params = jax.tree.map(jnp.asarray, params)
  sigs = lm.signatures(model, batch_size=1, prompt_len=8, num_tokens=8)
  cfg = model.config
  shape = (cfg.num_layers, 1, cfg.num_kv_heads, cfg.max_len, cfg.head_dim)  # [L, B, K, S, D]
  rng = np.random.RandomState(0)
  cache = lambda: (rng.randn(*shape) * 0.5).astype(np.float32)
  inputs = {'tokens': np.array([[7]], np.int32),
            'positions': np.array([[cfg.max_len // 2]], np.int32),
            'cache_k': cache(), 'cache_v': cache()}
  return params, sigs, 'decode_step', inputs, 'logits'


def _gan():
  nets = gan.GanNets(gan_mnist.get_config(), MNIST_SHAPE)
  rng = jax.random.key(0)
  variables = nets.gen.init(rng, nets.latents(rng, 1), train=False)
  z = np.random.RandomState(0).randn(1, nets.latent_dim).astype(np.float32)
  sigs = gan.signatures(nets, '[-1,1]', batch_size=1)
  return variables, sigs, 'sample', {'z': z}, 'images'


def _vae():
  model = make_vae(vae_mnist.get_config().model, MNIST_SHAPE)
  params = model.init(jax.random.key(0), jnp.zeros((1,) + MNIST_SHAPE), jax.random.key(1))['params']
  z = np.random.RandomState(0).randn(1, model.cfg.latent_dim).astype(np.float32)
  sigs = vae_family.signatures(model, '[0,1]', batch_size=1)
  return vae_family.decoder_params(params), sigs, 'sample', {'z': z}, 'images'


def _diffusion(steps: int):
  config = diffusion_mnist.get_config()
  model = diffusion.make_backbone(config.model, MNIST_SHAPE, 0)
  params = model.init(jax.random.key(0), jnp.zeros((1,) + MNIST_SHAPE), jnp.zeros((1,)),
                      None)['params']
  # The UNet's output conv (and every bias) starts at zero, a constant eps = 0 model that
  # every format reproduces trivially: give the all-zero leaves N(0, 0.02^2) values.
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  params = jax.tree.unflatten(treedef, [0.02 * jax.random.normal(k, x.shape) if not x.any() else x
                                        for x, k in zip(leaves, keys)])
  sigs = diffusion.signatures(
      model, dfn.make_schedule(config.diffusion), image_shape=MNIST_SHAPE, num_classes=0,
      prediction=config.diffusion.prediction, value_range='[-1,1]', clip=True, steps=steps,
      batch_size=1)
  noise = np.random.RandomState(0).randn(1, *MNIST_SHAPE).astype(np.float32)
  return params, sigs, 'sample', {'noise': noise}, 'images'


def _median_ms(fn: Callable[[], Any], warmup: int, iters: int) -> float:
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return 1e3 * statistics.median(times)


def report(name: str, built, tmp: str, *, warmup: int, iters: int) -> dict[str, Any]:
  params, sigs, sig_name, inputs, key = built
  sm_dir = os.path.join(tmp, name, 'saved_model')
  sm.save(params, sigs, sm_dir, default=sig_name)
  row: dict[str, Any] = {'model': name, 'call': sig_name,
                         'params': sum(np.size(x) for x in jax.tree.leaves(params)),
                         'saved_model_MB': paths.tree_bytes(sm_dir) / 1e6}
  fn = jax.jit(sigs[sig_name].fn)
  want = np.asarray(fn(params, inputs)[key])
  row['jax_ms'] = _median_ms(lambda: jax.block_until_ready(fn(params, inputs)), warmup, iters)
  sig = tf.saved_model.load(sm_dir).signatures[sig_name]
  tf_inputs = {k: tf.constant(v) for k, v in inputs.items()}
  row['tf_max_diff'] = float(np.abs(sig(**tf_inputs)[key].numpy() - want).max())
  row['tf_ms'] = _median_ms(lambda: sig(**tf_inputs)[key].numpy(), warmup, iters)
  for q in ('none', 'int8'):
    tag = 'float' if q == 'none' else q
    path = os.path.join(tmp, name, f'{tag}.tflite')
    row[f'tflite_{tag}_MB'] = tflite.write(sm_dir, sig_name, path, q) / 1e6
    runner = tflite.Runner(path, sig_name, num_threads=os.cpu_count())
    diff = np.abs(runner(**inputs)[key] - want)
    row[f'tflite_{tag}_max_diff'] = float(diff.max())
    row[f'tflite_{tag}_mean_diff'] = float(diff.mean())
    row[f'tflite_{tag}_ms'] = _median_ms(lambda: runner(**inputs), warmup, iters)
  print(row, flush=True)
  return row


def headline(fig: dict) -> dict:
  models = [k[:-len('.call')] for k in fig if k.endswith('.call')]
  f = lambda m, key: fig[f'{m}.{key}']
  return {'quality': '; '.join(
              f'{m}: max diff {f(m, "tf_max_diff"):.1e} / {f(m, "tflite_float_max_diff"):.1e} / '
              f'{f(m, "tflite_int8_max_diff"):.1e} (mean {f(m, "tflite_int8_mean_diff"):.1e})'
              for m in models if m == 'lm'),
          'speed': '; '.join(f'{m} {f(m, "call")}: JAX {f(m, "jax_ms"):.2f} ms, TFLite float '
                             f'{f(m, "tflite_float_ms"):.2f} / int8 {f(m, "tflite_int8_ms"):.2f} ms'
                             for m in models),
          'memory': '; '.join(f'{m}: SavedModel {f(m, "saved_model_MB"):.2f} MB, TFLite '
                              f'{f(m, "tflite_float_MB"):.2f} / {f(m, "tflite_int8_MB"):.2f} MB'
                              for m in models)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--lm_workdir', default=None,
                      help='An LM workdir instead of the random GPT.')
  parser.add_argument('--diffusion_steps', type=int, default=20)
  parser.add_argument('--warmup', type=int, default=5)
  parser.add_argument('--iters', type=int, default=50)
  parser.add_argument('--models', default='lm,gan,vae,diffusion')
  results_lib.add_args(parser, 'export_report')
  args = parser.parse_args()
  builders = {'lm': lambda: _lm(args.lm_workdir), 'gan': _gan, 'vae': _vae,
              'diffusion': lambda: _diffusion(args.diffusion_steps)}
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for name in args.models.split(','):
      rows.append(report(name, builders[name](), tmp, warmup=args.warmup, iters=args.iters))
  title = (f'{os.cpu_count()} CPU cores; latency = median of {args.iters} calls after '
           f'{args.warmup} warmup, batch 1; diff = max |output - JAX| (int8: also the mean)')
  columns = ['model', 'call', 'params', 'SavedModel MB', 'TFLite MB float / int8', 'JAX ms',
             'SavedModel ms', 'TFLite float ms', 'TFLite int8 ms',
             'diff SavedModel / float / int8']
  cells = []
  for r in rows:
    if r['model'] == 'diffusion':
      r['call'] += f' ({args.diffusion_steps} DDIM steps)'
    cells.append([
        r['model'], r['call'], f"{r['params'] / 1e6:.2f}M", f"{r['saved_model_MB']:.2f}",
        f"{r['tflite_float_MB']:.2f} / {r['tflite_int8_MB']:.2f}", f"{r['jax_ms']:.2f}",
        f"{r['tf_ms']:.2f}", f"{r['tflite_float_ms']:.2f}", f"{r['tflite_int8_ms']:.2f}",
        f"{r['tf_max_diff']:.1e} / {r['tflite_float_max_diff']:.1e} / "
        f"{r['tflite_int8_max_diff']:.1e} (mean {r['tflite_int8_mean_diff']:.1e})"])
  print(f'\n{title}\n')
  for line in (columns, ['---'] * len(columns), *cells):
    print('| ' + ' | '.join(line) + ' |')
  figures = {f'{r["model"]}.{k}': v for r in rows for k, v in r.items() if k != 'model'}
  results_lib.write(args.result_name, figures, headline=headline(figures),
                    tables=[results_lib.table(title, columns, cells)],
                    config={k: v for k, v in vars(args).items()
                            if k not in ('results_dir', 'result_name')},
                    results_dir=args.results_dir)


if __name__ == '__main__':
  main()
