"""Mesh, batch-split and multi-host start-up configuration: clear errors, no devices needed."""
import jax
import ml_collections
import pytest
from jax.sharding import PartitionSpec as P

from configs import common
from genai.parallel import distributed
from genai.parallel import mesh as mesh_lib
from genai.parallel import sharding
from genai.train import throughput


def _pc(**kw):
  return common.parallel_config(**kw)


@pytest.mark.parametrize('kw, n, want', [
    (dict(), 8, (8, 1, 1)),
    (dict(fsdp=-1, data=1), 8, (1, 8, 1)),
    (dict(data=2, tensor=4), 8, (2, 1, 4)),
    (dict(data=-1, fsdp=2, tensor=2), 8, (2, 2, 2)),
    (dict(), 1, (1, 1, 1)),
])
def test_mesh_shape_resolves_the_free_axis(kw, n, want):
  assert mesh_lib.mesh_shape(_pc(**kw), n) == want


def test_a_missing_parallel_block_is_data_parallel_over_every_device():
  # make_mesh() without a config (restoring a workdir to sample from it) on a host of
  # several devices used to ask for a 1-device mesh and fail.
  assert mesh_lib.mesh_shape({}, 8) == (8, 1, 1)
  assert mesh_lib.mesh_shape({'num_devices': 2}, 2) == (2, 1, 1)


@pytest.mark.parametrize('kw, n, match', [
    (dict(data=-1, tensor=3), 8, 'does not divide the 8 devices'),
    (dict(data=2, tensor=2), 8, 'has 4 devices but 8 are in use'),
    (dict(data=-1, fsdp=-1), 8, 'at most one may be -1'),
    (dict(tensor=0), 8, 'size >= 1'),
])
def test_bad_mesh_errors_name_the_fix(kw, n, match):
  with pytest.raises(ValueError, match=match):
    mesh_lib.mesh_shape(_pc(**kw), n)


def test_make_mesh_uses_auto_axes_and_num_devices():
  mesh = mesh_lib.make_mesh(_pc())
  assert mesh.axis_names == ('data', 'fsdp', 'tensor')
  assert mesh.shape['data'] == len(jax.devices())
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
  with pytest.raises(ValueError, match='only 1 devices exist|only .* devices exist'):
    mesh_lib.make_mesh(_pc(num_devices=len(jax.devices()) + 1))


def test_batch_that_does_not_divide_the_data_axes_is_a_clear_error():
  mesh = mesh_lib.make_mesh(_pc(num_devices=1))
  assert mesh_lib.local_batch_size(12, mesh) == 12

  class FakeMesh:
    shape = {'data': 4, 'fsdp': 2, 'tensor': 1}

  with pytest.raises(ValueError, match=r'train.batch_size=12 does not divide .* 8 shards'):
    mesh_lib.local_batch_size(12, FakeMesh())


def test_rules_from_config_take_priority():
  pc = _pc(rules=(('vocab', None), ('mlp', ('fsdp', 'tensor'))))
  rules = sharding.rules_from_config(pc)
  assert rules[:2] == (('vocab', None), ('mlp', ('fsdp', 'tensor')))
  assert rules[2:] == sharding.DEFAULT_RULES


def test_fit_spec_replicates_dimensions_that_do_not_divide():
  class FakeMesh:
    shape = {'data': 2, 'fsdp': 4, 'tensor': 2}

  assert sharding._fit_spec(P('tensor', 'fsdp'), (65, 32), FakeMesh()) == P(None, 'fsdp')
  assert sharding._fit_spec(P(('data', 'fsdp'),), (16,), FakeMesh()) == P(('data', 'fsdp'))
  assert sharding._fit_spec(P(('data', 'fsdp'),), (12,), FakeMesh()) == P(None)


def test_distributed_modes(monkeypatch):
  for var in ('JAX_COORDINATOR_ADDRESS', 'SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE',
              'TPU_WORKER_HOSTNAMES'):
    monkeypatch.delenv(var, raising=False)
  assert distributed.initialize(_pc()) is False          # auto, single machine
  assert distributed.initialize(_pc(distributed='off')) is False
  assert distributed.initialize(None) is False
  with pytest.raises(ValueError, match="parallel.distributed='maybe'"):
    distributed.initialize(_pc(distributed='maybe'))
  with pytest.raises(ValueError, match='needs parallel.num_processes'):
    distributed.initialize(_pc(coordinator_address='10.0.0.1:1234'))
  monkeypatch.setenv('SLURM_JOB_ID', '7')
  monkeypatch.setenv('SLURM_NTASKS', '4')
  assert distributed.cluster_env() == 'SLURM job with 4 tasks'


def test_mfu_and_peak_lookup(monkeypatch):
  assert throughput.peak_flops_per_device(123.0) == 123.0
  assert throughput.peak_flops_per_device() == 0.0  # a CPU: unknown, MFU not logged

  class Dev:
    device_kind = 'NVIDIA H100 80GB HBM3'

  monkeypatch.setattr(jax, 'devices', lambda: [Dev()])
  assert throughput.peak_flops_per_device() == 989e12
  # 6 * 124M params * 1M tokens/step at 1 step/s on 8 devices of 989 TFLOP/s.
  assert throughput.mfu(6 * 124e6 * 2**20, 1.0, 8, 989e12) == pytest.approx(0.0986, abs=1e-4)


def test_configs_carry_a_parallel_block():
  from configs.lm import pydoc_char
  c = pydoc_char.get_config('')
  assert isinstance(c.parallel, ml_collections.ConfigDict) and c.parallel.data == -1
