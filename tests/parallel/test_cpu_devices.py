"""genai/parallel/cpu_devices.py: how a command splits a CPU host into devices, and that a
run on the split host trains what it trains on one device."""
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import common
from conftest import load_config
from genai.parallel import cpu_devices

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, 'configs/lm/pydoc_char.py')


@pytest.mark.parametrize('cores, batches, want', [
    (2, [128], 2), (1, [128], 1), (16, [64], 8), (6, [64], 4), (3, [12], 3),
    (4, [12, 10], 2), (4, [], 4), (8, [7], 7), (2, [0], 2), (5, [7], 1),
])
def test_auto_count_is_one_per_core_dividing_every_batch(cores, batches, want):
  assert cpu_devices.auto_count(batches, cores) == want


@pytest.fixture
def fresh_jax(monkeypatch):
  """As a command sees it: no device count in XLA_FLAGS, JAX's backends not started."""
  monkeypatch.setenv('XLA_FLAGS', '--xla_backend_optimization_level=0')
  monkeypatch.setattr(cpu_devices, '_backends_started', lambda: False)
  monkeypatch.setattr(cpu_devices, 'usable_cores', lambda: 2)
  monkeypatch.setattr(cpu_devices, '_jaxlib_measured', lambda: True)


def _config(**parallel):
  c = load_config(CONFIG, 'runlocal')
  c.parallel = common.parallel_config(**parallel)
  return c


def test_one_device_is_the_default_and_auto_splits_the_host_once(fresh_jax):
  assert cpu_devices.configure(_config(cpu_devices=0)) == 2
  # One core per device: convolutions stay on YNNPACK (no flag for them).
  assert os.environ['XLA_FLAGS'] == ('--xla_backend_optimization_level=0 '
                                     '--xla_force_host_platform_device_count=2')
  assert cpu_devices.current_flag() == 2
  assert cpu_devices.configure(_config(cpu_devices=4)) is None  # already set: kept


def test_one_device_with_two_cores_takes_convolutions_off_ynnpack(fresh_jax):
  assert cpu_devices.configure(_config()) is None  # parallel.cpu_devices=1: plain JAX
  assert cpu_devices.current_flag() is None
  assert os.environ['XLA_FLAGS'] == ('--xla_backend_optimization_level=0 '
                                     '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution')
  assert not cpu_devices.conv_kernels(1)  # set once


@pytest.mark.parametrize('devices, cores, want', [(1, 2, True), (2, 2, False), (1, 1, False),
                                                  (2, 4, True), (8, 8, False), (3, 4, False)])
def test_conv_kernels_leave_ynnpack_only_where_a_device_has_several_cores(
    fresh_jax, devices, cores, want):
  assert cpu_devices.conv_kernels(devices, cores) == want
  assert (cpu_devices.CONV_OFF_YNN in os.environ['XLA_FLAGS']) == want


def test_conv_kernels_keep_the_users_setting_and_unmeasured_jaxlibs(fresh_jax, monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_experimental_ynn_fusion_type=dot')
  assert not cpu_devices.conv_kernels(1, 2)
  assert os.environ['XLA_FLAGS'] == '--xla_cpu_experimental_ynn_fusion_type=dot'
  monkeypatch.setenv('XLA_FLAGS', '')
  monkeypatch.setattr(cpu_devices, '_jaxlib_measured', lambda: False)
  assert not cpu_devices.conv_kernels(1, 2)
  assert os.environ['XLA_FLAGS'] == ''


def test_the_installed_jaxlib_is_one_the_conv_flag_was_measured_on():
  # If this fails after a jax upgrade, check the flag still exists (an unknown flag
  # aborts XLA) and re-measure (benchmarks/conv_step_speed.py) before widening the check.
  assert cpu_devices._jaxlib_measured()  # pylint: disable=protected-access


_CONV_CHECK = """
import sys, numpy as np, jax, jax.numpy as jnp
def conv(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
x = jax.random.normal(jax.random.key(0), (4, 14, 14, 16))  # large enough for YNNPACK
w = jax.random.normal(jax.random.key(1), (3, 3, 16, 32))
loss = lambda x, w: jnp.sum(jnp.tanh(conv(x, w)))
gx, gw = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, w)
hlo = jax.jit(conv).lower(x, w).compile().as_text()
np.savez(sys.argv[1], y=conv(x, w), gx=gx, gw=gw, ynn=int('ynn_fusion' in hlo))
"""


@pytest.mark.slow  # two subprocesses
def test_convolutions_off_ynnpack_compute_the_same(tmp_path):
  got = {}
  for name, flags in [('ynn', ''), ('eigen', cpu_devices.CONV_OFF_YNN)]:
    env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
    env['XLA_FLAGS'] = flags
    proc = subprocess.run([sys.executable, '-c', _CONV_CHECK, str(tmp_path / f'{name}.npz')],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]  # the flag is one this jaxlib knows
    got[name] = dict(np.load(tmp_path / f'{name}.npz'))
  assert got['ynn']['ynn'] == 1 and got['eigen']['ynn'] == 0
  for k in ('y', 'gx', 'gw'):  # float32 sums in another order: 1e-5 of each array's scale
    ref = got['ynn'][k]
    np.testing.assert_allclose(got['eigen'][k], ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize('parallel', [
    dict(num_devices=1), dict(data=1, tensor=-1), dict(distributed='on'),
    dict(coordinator_address='10.0.0.1:1234'),
])
def test_auto_leaves_a_chosen_mesh_and_multi_process_runs_alone(fresh_jax, parallel):
  assert cpu_devices.configure(_config(cpu_devices=0, **parallel)) is None
  assert cpu_devices.current_flag() is None


def test_auto_leaves_a_cluster_alone(fresh_jax, monkeypatch):
  monkeypatch.setenv('SLURM_JOB_ID', '1')
  monkeypatch.setenv('SLURM_NTASKS', '4')
  assert cpu_devices.configure(_config(cpu_devices=0)) is None


def test_an_explicit_count_is_kept_and_a_bad_one_named(fresh_jax):
  assert cpu_devices.configure(_config(cpu_devices=3, num_devices=3)) == 3
  with pytest.raises(ValueError, match=r'parallel.cpu_devices=-2: use 0 \(auto\)'):
    cpu_devices.configure(_config(cpu_devices=-2))


def test_inference_runs_on_one_device_with_eigen_convolutions(fresh_jax):
  assert cpu_devices.split_for([64, 100])
  assert cpu_devices.current_flag() == 1
  assert cpu_devices.CONV_OFF_YNN in os.environ['XLA_FLAGS']


def test_inference_splits_one_device_per_core_where_eigen_is_not_chosen(fresh_jax, monkeypatch):
  monkeypatch.setattr(cpu_devices, '_jaxlib_measured', lambda: False)
  assert cpu_devices.split_for([64, 100])
  assert cpu_devices.current_flag() == 2
  assert cpu_devices.CONV_OFF_YNN not in os.environ['XLA_FLAGS']


def test_inference_split_takes_an_explicit_count(fresh_jax):
  assert cpu_devices.split_for([7], 3)
  assert cpu_devices.current_flag() == 3
  assert not cpu_devices.split_for([64])  # the first count stands


def test_the_baby_lm_recipes_split_and_the_others_do_not():
  for path, want in [('configs/diffusion/mnist.py', 1), ('configs/diffusion/mnist_fid.py', 1),
                     ('configs/lm/shakespeare_char.py', 0), ('configs/gan/mnist.py', 1),
                     ('configs/diffusion/dit_mnist.py', 1), ('configs/lm/pydoc_char.py', 1)]:
    assert load_config(os.path.join(REPO, path), None).parallel.cpu_devices == want, path


def test_a_started_jax_is_not_touched(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '')
  monkeypatch.setattr(cpu_devices, '_backends_started', lambda: True)
  assert not cpu_devices.set_count(2)
  assert cpu_devices.current_flag() is None


def _train(workdir, *flags):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['XLA_FLAGS'] = '--xla_backend_optimization_level=0'
  return subprocess.run(
      [sys.executable, '-m', 'experiments.lm', '--config', f'{CONFIG}:runlocal',
       '--workdir', str(workdir), '--config.train.num_steps=6', '--config.train.log_every=2',
       '--config.train.eval_every=0', *flags],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # two training subprocesses
def test_a_split_host_trains_the_same_global_batch_step(tmp_path):
  split = _train(tmp_path / 'split', '--config.parallel.cpu_devices=2')
  one = _train(tmp_path / 'one', '--config.parallel.cpu_devices=1')
  assert split.returncode == 0, split.stderr[-2000:]
  assert one.returncode == 0, one.stderr[-2000:]
  assert split.stdout.splitlines()[0] == ('Mesh data=2 over 2 CPU devices '
                                          '(--config.parallel.cpu_devices=1 runs on one).')
  assert 'Mesh' not in one.stdout
  loss = lambda out: [float(l.split('| loss ')[1].split(' ')[0])
                      for l in out.splitlines() if '| loss ' in l]
  assert len(loss(split.stdout)) == 3
  np.testing.assert_allclose(loss(split.stdout), loss(one.stdout), rtol=2e-4)


@pytest.mark.slow  # a subprocess
def test_a_bad_count_is_one_usage_line(tmp_path):
  proc = _train(tmp_path / 'bad', '--config.parallel.cpu_devices=-1')
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      'error: parallel.cpu_devices=-1: use 0 (auto) or a device count >= 1.')


@pytest.mark.slow  # two subprocesses, each compiling InceptionV3
def test_split_inference_gives_the_one_device_results(tmp_path):
  got = {}
  for n in (2, 1):
    out = tmp_path / f'{n}.npz'
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'tests/parallel/split_inference_run.py'),
                           str(n), str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got[n] = dict(np.load(out))
  assert got[2]['split'] == 1 and got[1]['split'] == 0
  assert got[2]['pool'].shape == (6, 2048)
  np.testing.assert_allclose(got[2]['pool'], got[1]['pool'], rtol=1e-4, atol=1e-4)
  assert got[2]['samples'].shape == (6, 8, 8, 1)
  np.testing.assert_allclose(got[2]['samples'], got[1]['samples'], atol=1e-4)
  np.testing.assert_allclose(got[2]['lm_loss'], got[1]['lm_loss'], rtol=1e-5)
