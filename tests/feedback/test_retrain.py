"""The model registry and the retrain job: promotion of a better candidate, refusal of a
worse one, rollback, the server following the registry, and the CLI."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from experiments import lm
from experiments import retrain as retrain_cli
from genai.feedback import retrain
from genai.feedback.registry import Registry

TRAIN = lm.train_and_evaluate  # the retrain job's train function (experiments/retrain.py's)


def pydoc_text():
  from pydoc_data import topics  # pylint: disable=g-import-not-at-top
  return ''.join(topics.topics[k] for k in sorted(topics.topics))


@pytest.fixture()
def root(tmp_path, lm_workdir):
  """A registry whose v1 is a copy of the tiny LM, held-out = a slice of its corpus."""
  served = tmp_path / 'served'
  shutil.copytree(lm_workdir, served)
  r = tmp_path / 'registry'
  assert retrain_cli.main(['init', f'--root={r}', f'--workdir={served}',
                           f'--heldout={_write(tmp_path / "h.txt", pydoc_text()[-6000:])}']) == 0
  return str(r)


def _write(path, text):
  path.write_text(text)
  return str(path)


def test_registry_versions_and_rollback(tmp_path, lm_workdir):
  reg = Registry(str(tmp_path / 'r'))
  with pytest.raises(FileNotFoundError, match='retrain init'):
    reg.current()
  v1 = reg.init(lm_workdir)
  assert v1['version'] == 'v1' and reg.served_version() == 'v1' and v1['step'] == 20
  with pytest.raises(FileExistsError):
    reg.init(lm_workdir)
  v2 = reg.add(lm_workdir, parent='v1', metrics={'m': 1}, data={}, promote=False,
               reasons=['worse'])
  assert v2['status'] == 'rejected' and reg.served_version() == 'v1'
  with pytest.raises(ValueError, match='nothing to roll back to'):
    reg.rollback()
  reg.add(lm_workdir, parent='v1', metrics={}, data={}, promote=True, reasons=[])
  assert reg.served_version() == 'v3'
  assert reg.rollback()['version'] == 'v1' and reg.served_version() == 'v1'
  assert [v['version'] for v in reg.versions()] == ['v1', 'v2', 'v3']
  assert not [p for p in os.listdir(reg.root) if p.startswith('.registry.')]  # no temp left
  with pytest.raises(KeyError, match='v9'):
    reg.get('v9')


@pytest.mark.slow  # trainings
def test_retrain_promotes_a_better_model_and_refuses_a_worse_one(root, tmp_path):
  watch = tmp_path / 'incoming'
  watch.mkdir()
  opts = retrain.RetrainOptions(watch=str(watch), steps=30, lr=3e-3, samples=4,
                                sample_tokens=8)
  # Nothing new yet: no candidate.
  assert 'skipped' in retrain.run(root, opts, TRAIN)
  # Fresh text like the corpus: continuing training lowers the held-out loss.
  _write(watch / 'more.txt', pydoc_text()[20000:60000])
  entry = retrain.run(root, opts, TRAIN)
  assert entry['status'] == 'promoted', entry['reasons']
  m = entry['metrics']
  assert m['candidate']['heldout_loss'] < m['current']['heldout_loss']
  assert entry['parent'] == 'v1' and entry['data']['stages'] == ['continue']
  assert entry['data']['files'] == [str(watch / 'more.txt')]
  assert Registry(root).served_version() == 'v2'
  # Then noise (random characters of the vocabulary) at a high learning rate: worse on the
  # held-out text, so the gate refuses it and v2 stays current.
  rng = np.random.default_rng(0)
  vocab = sorted(set(pydoc_text()) - {'\r'})
  _write(watch / 'noise.txt', ''.join(rng.choice(vocab, 30000)))
  bad = retrain.run(root, retrain.RetrainOptions(watch=str(watch), steps=30, lr=3e-2,
                                                 samples=4, sample_tokens=8), TRAIN)
  assert bad['status'] == 'rejected' and 'held-out loss' in bad['reasons'][0]
  assert bad['data']['files'] == [str(watch / 'noise.txt')]  # only files newer than v2
  assert Registry(root).served_version() == 'v2'
  # Rollback to v1 through the CLI; status lists the three versions.
  assert retrain_cli.main(['rollback', f'--root={root}']) == 0
  assert Registry(root).served_version() == 'v1'
  r = subprocess.run([sys.executable, '-m', 'experiments.retrain', 'status', f'--root={root}'],
                     cwd=REPO, capture_output=True, text=True, timeout=120)
  status = json.loads(r.stdout)
  assert status['current'] == 'v1'
  assert [v['status'] for v in status['versions']] == ['promoted', 'promoted', 'rejected']


def test_server_follows_the_registry(root, lm_workdir):
  from genai.serve import api  # pylint: disable=g-import-not-at-top
  from genai.serve import reload  # pylint: disable=g-import-not-at-top
  from genai.serve.engine import Engine  # pylint: disable=g-import-not-at-top
  version_fn, load_fn = reload.registry_fns(root)
  model = load_fn(root, 'shakespeare')
  assert model.version == 'v1'
  engine = Engine(model.model, model.params, model.tokenizer, version=model.version)
  app = api.make_app(model, engine=engine)
  reloader = reload.Reloader(root, app.state.served, 3600, version_fn, load_fn)
  assert not reloader.check_once()
  Registry(root).add(lm_workdir, parent='v1', metrics={}, data={}, promote=True, reasons=[])
  assert reloader.check_once()
  assert app.state.served.model.version == 'v2'


@pytest.mark.slow  # a subprocess
def test_cli_errors(tmp_path):
  assert retrain_cli.main(['run', f'--root={tmp_path}']) == 1  # a user error: exit code 1
  assert retrain_cli.main(['run']) == 2  # the command line itself: 2
  r = subprocess.run([sys.executable, '-m', 'experiments.retrain', 'rollback',
                      f'--root={tmp_path}'], cwd=REPO, capture_output=True, text=True,
                     timeout=120)
  assert r.returncode == 1 and 'retrain init' in r.stderr and 'Traceback' not in r.stderr
  assert r.stderr.strip().splitlines()[-1].startswith('error: ')


@pytest.mark.slow  # a training
def test_feedback_in_the_served_workdir_drives_a_dpo_stage(root):
  from genai.feedback.store import FeedbackStore  # pylint: disable=g-import-not-at-top
  served = Registry(root).current()['workdir']
  with FeedbackStore.for_workdir(served) as store:
    for i in range(8):  # a rater who prefers the capitalised one of two samples
      gid = store.record_generation({'id': f'g{i}', 'prompt': 'The ',
                                     'outputs': ['QUICK fox', 'quick fox'], 'time': 0.0})
      store.add_preference('The ', 'QUICK fox', 'quick fox', [gid])
    store.add_rating('g0', 0, +1)  # one accepted response: fewer than min_sft_rows
  # A bias-audit gate no model can pass (the candidate's log-likelihood gap between
  # counterfactual prompts must shrink by 100 nats): the candidate is refused for it.
  entry = retrain.run(root, retrain.RetrainOptions(
      dpo_steps=10, samples=4, sample_tokens=8, tolerance=1.0,
      audit_gate='{"max_mean_abs_loglik_gap_increase": -100}'), TRAIN)
  # One accepted response is below min_sft_rows: DPO only.
  assert entry['data']['dpo_pairs'] == 8 and entry['data']['sft_rows'] == 1
  assert entry['data']['stages'] == ['dpo']
  assert entry['status'] == 'rejected'
  assert [r for r in entry['reasons'] if r.startswith('safety gate: mean_abs_loglik_gap')]
  assert 'mean_abs_loglik_gap' in entry['metrics']['candidate']['safety_gate']
  report = os.path.join(os.path.dirname(entry['workdir']), 'audit')
  assert {'report.md', 'report.html'} <= set(os.listdir(report))


@pytest.mark.slow  # a training
def test_accepted_and_edited_responses_drive_an_sft_stage(root):
  from genai.feedback.store import FeedbackStore  # pylint: disable=g-import-not-at-top
  with FeedbackStore(f"sqlite:///{os.path.join(root, 'feedback.db')}") as store:
    for i in range(6):
      store.record_generation({'id': f'g{i}', 'prompt': 'The ', 'outputs': ['value', 'x'],
                               'time': 0.0})
      store.add_rating(f'g{i}', 0, +1)
      store.add_edit(f'g{i}', 1, 'object')
  entry = retrain.run(root, retrain.RetrainOptions(sft_steps=6, samples=4, sample_tokens=8,
                                                   tolerance=1.0), TRAIN)
  assert entry['data']['sft_rows'] == 12 and entry['data']['stages'] == ['sft']
  assert entry['status'] == 'promoted', entry['reasons']
  assert entry['workdir'].endswith('stage_sft')
