"""benchmarks/bias_mitigation.py end to end with tiny settings: every variant's runs train,
are audited and scored on the held-out tail, and the result file follows the schema."""
import json

import numpy as np
import pytest

from benchmarks import results


@pytest.mark.slow  # two short trainings
def test_bias_mitigation_benchmark_tiny(tmp_path, monkeypatch):
  from benchmarks import bias_mitigation  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  who = ['He', 'She', 'The king', 'The queen', 'My lord', 'The man', 'His son']
  what = ['spoke to his brother', 'was a good doctor', 'went home', 'said nothing at all']
  text = '\n\n'.join(f'{rng.choice(who)} {rng.choice(what)}.\n{rng.choice(who)} '
                     f'{rng.choice(what)}.' for _ in range(400))
  alphabet = 'abcdefghijklmnopqrstuvwxyz'  # every letter the audit's probes use, once at least
  text = f'{alphabet} {alphabet.upper()}, thou.\n\n' + text + '\n'
  data = tmp_path / 'corpus.txt'
  data.write_text(text)
  monkeypatch.setattr('sys.argv', [
      'bias_mitigation', f'--data={data}', '--steps=16', '--seeds=0', '--variants=none,all',
      f'--out_dir={tmp_path / "runs"}', f'--results_dir={tmp_path / "res"}'])
  bias_mitigation.main()
  r = json.loads((tmp_path / 'res' / 'bias_mitigation.json').read_text())
  assert results.validate(r) == []
  f = r['figures']
  assert f['none.gender_term_rate_ratio'] > 1.5 and f['all.gender_term_rate_ratio'] == 1.0
  for v in ('none', 'all'):
    assert np.isfinite(f[f'{v}.heldout_loss']) and f[f'{v}.gender_loglik_gap'] >= 0
  assert [row[0] for row in r['tables'][0]['rows']] == ['none', 'all']
