"""Sharded training on 8 fake CPU devices and on two processes over gloo: every mesh gives
the one-device result, and checkpoints restore across device counts.

Each case runs tests/parallel/lm_sharded_run.py in a subprocess, because the number of
fake devices is fixed when jax starts.
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # training subprocesses on 8 fake devices and over gloo

SCRIPT = os.path.join(os.path.dirname(__file__), 'lm_sharded_run.py')


def _run(tmp_path, name, devices, runs, extra=(), timeout=600):
  out = tmp_path / f'{name}.json'
  cmd = [sys.executable, SCRIPT, '--devices', str(devices), '--workdir', str(tmp_path / name),
         '--out', str(out), *extra]
  for r in runs:
    cmd += ['--run', r]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  return json.loads(out.read_text())


def _max_param_diff(a, b):
  return max(float(np.abs(np.array(a['params'][k]) - np.array(b['params'][k])).max())
             for k in a['params'])


@pytest.fixture(scope='module')
def eight_devices(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('eight')
  return _run(tmp, 'eight', 8, [
      'base:num_devices=1,data=1',
      'dp:data=-1',
      'fsdp:data=1,fsdp=-1',
      'tp:data=2,tensor=4',
      'mixed:data=2,fsdp=2,tensor=2',
      # 8 -> 1: written with FSDP over 8 devices, resumed on one device.
      'save8:data=1,fsdp=-1,train.stop_after=2',
      'restore1:num_devices=1,data=1,resume_from=save8',
      # 1 -> 4: written on one device, resumed with data=2 x tensor=2 on 4.
      'save1:num_devices=1,data=1,train.stop_after=4',
      'restore4:num_devices=4,data=2,tensor=2,resume_from=save1',
      # Gradient accumulation under FSDP equals one device's full-batch step.
      'accum_base:num_devices=1,data=1,model.dropout=0.0',
      'accum8:data=2,fsdp=4,model.dropout=0.0,train.grad_accum_steps=2',
      # Layer scan + remat under FSDP x tensor equals it on one device.
      'scan_base:num_devices=1,data=1,model.scan_layers=1,model.remat=full',
      'scan:data=1,fsdp=4,tensor=2,model.scan_layers=1,model.remat=full',
  ])


@pytest.mark.parametrize('name', ['dp', 'fsdp', 'tp', 'mixed'])
def test_every_mesh_matches_one_device(eight_devices, name):
  base, run = eight_devices['base'], eight_devices[name]
  assert run['devices'] == 8 and len(base['losses']) == 3
  np.testing.assert_allclose(run['losses'], base['losses'], atol=2e-4)
  assert _max_param_diff(run, base) < 1e-5  # measured: 8e-7 after 6 Adam steps


def test_parameters_are_really_sharded(eight_devices):
  fsdp, tp = eight_devices['fsdp']['specs'], eight_devices['tp']['specs']
  assert fsdp["['layer_0']['mlp']['fc_in']['kernel']"] == "P('fsdp', 'tensor')"
  assert tp["['layer_0']['attn']['qkv']['kernel']"] == "P('fsdp', 'tensor', None, None)"
  # The char vocabulary does not divide by tensor=4, so that axis stays replicated.
  assert tp["['embed']['embedding']"] == "P(None, 'fsdp')"


@pytest.mark.parametrize('saved, restored', [('save8', 'restore1'), ('save1', 'restore4')])
def test_checkpoint_restores_on_another_device_count(eight_devices, saved, restored):
  base = eight_devices['base']
  assert len(eight_devices[saved]['losses']) < 3
  np.testing.assert_allclose(eight_devices[restored]['losses'],
                             base['losses'][-len(eight_devices[restored]['losses']):], atol=2e-4)
  assert _max_param_diff(eight_devices[restored], base) < 1e-5


def test_grad_accumulation_and_scan_remat_under_sharding(eight_devices):
  r = eight_devices
  np.testing.assert_allclose(r['accum8']['losses'], r['accum_base']['losses'], atol=2e-4)
  assert _max_param_diff(r['accum8'], r['accum_base']) < 1e-5
  np.testing.assert_allclose(r['scan']['losses'], r['scan_base']['losses'], atol=2e-4)
  assert _max_param_diff(r['scan'], r['scan_base']) < 1e-5
  assert r['scan']['specs']["['layers']['mlp']['fc_in']['kernel']"] == "P(None, 'fsdp', 'tensor')"


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_train_in_lockstep_with_one(tmp_path):
  """2 processes x 2 devices (gloo on localhost) == 1 process x 4 devices fed the same
  global batches (the concatenation of the two hosts' data shards)."""
  port = _free_port()
  runs = ['dp:data=-1', 'fsdp:data=1,fsdp=-1']
  procs = []
  for pid in range(2):
    cmd = [sys.executable, SCRIPT, '--devices', '2', '--num_processes', '2', '--process_id',
           str(pid), '--coordinator', f'127.0.0.1:{port}', '--workdir', str(tmp_path / 'mp'),
           '--out', str(tmp_path / 'mp.json')]
    for r in runs:
      cmd += ['--run', r]
    procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True))
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, out[-3000:] + err[-5000:]
  assert 'step 6/6' in outs[0][0] and 'step ' not in outs[1][0]  # only process 0 logs
  multi = json.loads((tmp_path / 'mp.json').read_text())
  single = _run(tmp_path, 'single', 4, runs, extra=['--emulate_hosts', '2'])
  for name in ('dp', 'fsdp'):
    np.testing.assert_allclose(multi[name]['losses'], single[name]['losses'], atol=2e-4)
    assert _max_param_diff(multi[name], single[name]) < 1e-5
  # Process 0 wrote every checkpoint collectively: both runs ended with one at step 6.
  assert os.path.isdir(tmp_path / 'mp' / 'dp' / 'checkpoints' / '6')
