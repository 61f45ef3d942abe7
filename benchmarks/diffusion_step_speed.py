"""Train-step and forward time of a diffusion config's backbone (no data loading, no loop).

  python -m benchmarks.diffusion_step_speed \
    --config configs/diffusion/mnist.py:path=../shared/data/mnist
  python -m benchmarks.diffusion_step_speed \
    --config configs/diffusion/mnist.py:path=../shared/data/mnist --config.model.unet.patch_size=1

Builds the config's backbone for 28x28x1 images (--image_shape), then times one jitted
step of the experiment's own loss + optimizer update on a random batch of
config.train.batch_size (best and median of --repeats after a compile call), and one jitted
forward pass of --forward_batch images (what each sampler step costs). Prints one JSON object
and writes the result file (benchmarks/results.py).
"""
from __future__ import annotations

import json
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np
import optax

from benchmarks import results as results_lib
from experiments import diffusion
from genai.objectives import diffusion as dfn
from genai.train.optimizers import make_optimizer

config_flags.DEFINE_config_file('config', 'configs/diffusion/mnist.py:path=../shared/data/mnist',
                                'Diffusion config whose backbone is timed.')
_SHAPE = flags.DEFINE_list('image_shape', ['28', '28', '1'], 'H,W,C of the images.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed train steps after the compile call.')
_FORWARD = flags.DEFINE_integer('forward_batch', 500, 'Images per timed forward pass.')
results_lib.define_flags('diffusion_step_speed')


def headline(fig: dict) -> dict:
  fwd = next(k for k in fig if k.startswith('forward_ms_batch'))
  return {'speed': f'train step {fig["train_step_ms_best"]} ms (batch {fig["batch_size"]}, best; '
                   f'median {fig["train_step_ms_median"]}), forward {fig[fwd]} '
                   f'ms per {fwd[len("forward_ms_batch"):]} images; '
                   f'{fig["params_millions"]}M params'}


def _timed(fn, *args):
  t = time.perf_counter()
  out = fn(*args)
  jax.block_until_ready(out)
  return time.perf_counter() - t, out


def main(argv):
  del argv
  config = flags.FLAGS.config
  shape = tuple(int(s) for s in _SHAPE.value)
  model = diffusion.make_backbone(config.model, shape, 0)
  sched = dfn.make_schedule(config.diffusion)
  tx, _ = make_optimizer(config.optimizer, config.train.num_steps)
  b = int(config.train.batch_size)
  x0 = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (b,) + shape), jnp.float32)
  params = jax.jit(model.init)(jax.random.key(0), x0[:1], jnp.zeros((1,)), None)['params']
  n_params = sum(p.size for p in jax.tree.leaves(params))

  def step(params, opt_state, rng):
    def loss(p):
      apply = lambda x, t, y, r: model.apply({'params': p}, x, t, y)
      return dfn.diffusion_loss(apply, sched, x0, None, rng,
                                prediction=config.diffusion.prediction, num_classes=0,
                                p_uncond=0.0)[0]
    value, grads = jax.value_and_grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value

  step = jax.jit(step, donate_argnums=(0, 1))
  opt_state = tx.init(params)
  compile_s, (params, opt_state, _) = _timed(step, params, opt_state, jax.random.key(1))
  times = []
  for i in range(_REPEATS.value):
    t, (params, opt_state, _) = _timed(step, params, opt_state, jax.random.key(2 + i))
    times.append(t)
  fwd = jax.jit(lambda p, x, t: model.apply({'params': p}, x, t, None))
  xf = jnp.zeros((_FORWARD.value,) + shape)
  tf = jnp.full((_FORWARD.value,), 500.0)
  _timed(fwd, params, xf, tf)
  forward_s, _ = _timed(fwd, params, xf, tf)
  figures = {
      'backbone': config.model.backbone,
      'params_millions': round(n_params / 1e6, 3),
      'batch_size': b,
      'compile_and_first_step_s': round(compile_s, 1),
      'train_step_ms_best': round(1e3 * min(times), 1),
      'train_step_ms_median': round(1e3 * float(np.median(times)), 1),
      f'forward_ms_batch{_FORWARD.value}': round(1e3 * forward_s, 1),
  }
  backbone = config.model.get(config.model.backbone).to_dict()
  print(json.dumps(figures | {'backbone_config': backbone}, indent=1, default=str))
  results_lib.write(flags.FLAGS.result_name, figures, headline=headline(figures),
                    config={'backbone_config': backbone}, results_dir=flags.FLAGS.results_dir)


if __name__ == '__main__':
  app.run(main)
