"""pmap semantics through shard_map (genai/parallel/per_device.py) on 4 fake CPU devices."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(code: str, devices: int) -> dict:
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
             TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=REPO)
  proc = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True,
                        text=True, env=env, cwd=REPO, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


TOY = '''
import json
import jax, jax.numpy as jnp, numpy as np
from configs import common
from genai.parallel import mesh as mesh_lib, per_device

mesh = mesh_lib.make_mesh(common.parallel_config(data=2, fsdp=2))

def step(state, batch, rng):
  x = batch['x']
  mu = x.mean(0)                       # a BatchNorm-style statistic of the rows seen
  g = jax.grad(lambda w: jnp.mean((x - mu) ** 2 @ w))(state['w'])
  new = {'w': state['w'] - per_device.pmean(g), 'mu': per_device.pmean(mu)}
  return new, {'noise': jax.random.normal(rng, ()), 'rows': jnp.float32(x.shape[0])}

x = (np.arange(24.0).reshape(8, 3) % 7) ** 2
state = {'w': jnp.ones(3), 'mu': jnp.zeros(3)}
pd_state, pd_m = jax.jit(per_device.per_device_step(step, mesh))(state, {'x': x}, jax.random.key(0))
gl_state, _ = jax.jit(step)(state, {'x': x}, jax.random.key(0))
noises = [float(jax.random.normal(jax.random.fold_in(jax.random.key(0), d), ())) for d in range(4)]
print(json.dumps({'pd_w': np.asarray(pd_state['w']).tolist(), 'pd_mu': np.asarray(pd_state['mu']).tolist(),
                  'gl_w': np.asarray(gl_state['w']).tolist(), 'noise': float(pd_m['noise']),
                  'rows': float(pd_m['rows']), 'noises': noises, 'x': x.tolist()}))
'''


def test_per_device_step_has_pmap_semantics():
  r = _run(TOY, 4)
  x = np.array(r['x'])
  shards = x.reshape(4, 2, 3)  # device d holds rows 2d, 2d+1
  per_dev_var = ((shards - shards.mean(1, keepdims=True)) ** 2).mean(1)
  np.testing.assert_allclose(r['pd_w'], 1 - per_dev_var.mean(0), rtol=1e-6)
  np.testing.assert_allclose(r['pd_mu'], x.mean(0), rtol=1e-6)
  # Plain sharded jit sees the global batch: global variance, not the mean of local ones.
  np.testing.assert_allclose(r['gl_w'], 1 - x.var(0), rtol=1e-6)
  assert not np.allclose(r['pd_w'], r['gl_w'])
  assert r['rows'] == 2  # each device saw its 2 rows
  np.testing.assert_allclose(r['noise'], np.mean(r['noises']), rtol=1e-6)  # own noise per device


GAN = '''
import json, tempfile
from configs.gan import digits
from experiments import gan
from genai.train import workdir as workdir_lib
c = digits.get_config('runlocal')
c.train.per_device = True
c.train.batch_size = 8
c.model.g_norm = 'batch'
c.train.num_steps = 4
c.train.log_every = 2
lines = []
with tempfile.TemporaryDirectory() as wd:
  state = workdir_lib.run(c, wd, gan.build_task, print_fn=lines.append)
loss = [float(l.split('| loss ')[1].split()[0]) for l in lines if l.startswith('step ')]
print(json.dumps({'loss': loss, 'has_stats': 'g_batch_stats' in state}))
'''


@pytest.mark.slow  # a GAN training in a subprocess
def test_gan_trains_with_per_device_batchnorm():
  r = _run(GAN, 4)
  assert r['has_stats'] and r['loss'] and np.isfinite(r['loss']).all()


def test_per_device_needs_replicated_state():
  from genai.parallel import per_device

  class FakeMesh:
    shape = {'data': 1, 'fsdp': 1, 'tensor': 2}

  with pytest.raises(ValueError, match='needs parallel.tensor=1'):
    per_device.per_device_step(lambda s, b, r: (s, {}), FakeMesh())
