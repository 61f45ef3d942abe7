"""Bias mitigation (genai/safety/mitigation.py): term swaps on hand-worked text, the swap
list against the audit's groups, counterfactual augmentation against the audit's counts,
rebalancing weights and proportions against their closed forms, near-duplicate removal
against a brute-force Jaccard reference, the text round trip, the LM data path and the
retrain job's stages."""
import dataclasses
import json

import ml_collections
import numpy as np
import pytest

from genai.safety import audit
from genai.safety import mitigation as mit
from genai.safety.audit_data import DEFAULT_GROUPS
from test_audit import brute_force_keep  # every pair's exact Jaccard, clusters joined

GENDER = DEFAULT_GROUPS['gender']
SWAPS = mit.load_swaps('gender')


# =========================== Swaps =====================================================

@pytest.mark.parametrize('text, want, n', [
    ('She gave her book to him.', 'He gave his book to her.', 3),
    ('SHE IS THE QUEEN', 'HE IS THE KING', 2),
    ('The King and his Wife', 'The Queen and her Husband', 3),
    ("he's theme, the, there, hero, he-goat", "she's theme, the, there, heroine, he-goat", 2),
    ('Ladies and gentlemen; my lord!', 'Lords and gentlewomen; my lady!', 3),
    ('herself/himself, woman2man', 'himself/herself, man2woman', 4),  # digits end a word
    ('no terms at all', 'no terms at all', 0),
])
def test_swap_terms_hand_worked(text, want, n):
  assert mit.swap_terms(text, SWAPS) == (want, n)


def test_shipped_swap_list_covers_the_audit_groups():
  # her -> his (the first line wins), his -> her, him -> her, hers -> his.
  assert (SWAPS['her'], SWAPS['his'], SWAPS['him'], SWAPS['hers']) == ('his', 'her', 'her', 'his')
  # Every audited gender term maps to a term of the other category, so an augmented corpus
  # mentions both categories equally (the closed form of the next test).
  for a, b in (('female', 'male'), ('male', 'female')):
    for term in GENDER[a]:
      assert SWAPS[term] in GENDER[b], term


def test_load_swaps_file_and_errors(tmp_path):
  p = tmp_path / 'swaps.tsv'
  p.write_text('# comment\nMonk\tnun\n\nfriar nun\n')
  assert mit.load_swaps(str(p)) == {'monk': 'nun', 'nun': 'monk', 'friar': 'nun'}
  p.write_text("king's\tqueen\n")
  with pytest.raises(ValueError, match=r'swaps.tsv:1: .* two different words'):
    mit.load_swaps(str(p))
  with pytest.raises(FileNotFoundError, match=r"no such swap list; use one of \['gender'\]"):
    mit.load_swaps('klingon')


DOCS = ['The king spoke to his son and his brother.',
        'She said her mother was a queen.',
        'My lord, the boy and the man are here.',
        'Nothing to swap here.',
        'The widow and the bride; sir, madam.']


def _counts(docs):
  t = audit.audit_text_dataset(docs)['terms']['gender']
  return t['female']['count'], t['male']['count']


def test_cda_augment_balances_the_audit_counts():
  f, m = _counts(DOCS)
  assert (f, m) == (7, 9)  # she her mother queen widow bride madam; king his son his brother lord boy man sir
  out, added, rep = mit.counterfactual(DOCS, SWAPS, [1] * 5, mode='augment')
  assert out == DOCS and len(added) == 4 and rep['docs_swapped'] == 4
  assert rep['terms_swapped'] == f + m
  assert _counts(out + added) == (f + m, f + m)  # closed form: both F + M
  assert added[0] == 'The queen spoke to her daughter and her sister.'


def test_cda_substitute():
  out, added, _ = mit.counterfactual(DOCS, SWAPS, [1] * 5, mode='substitute', probability=1.0)
  assert not added and _counts(out) == (9, 7)  # every document swapped: the counts swap
  out, _, _ = mit.counterfactual(DOCS, SWAPS, [1] * 5, mode='substitute', probability=0.0)
  assert out == DOCS
  a = mit.counterfactual(DOCS, SWAPS, [1] * 5, mode='substitute', seed=3)
  assert a == mit.counterfactual(DOCS, SWAPS, [1] * 5, mode='substitute', seed=3)
  # A dropped document (copies 0) is neither swapped nor copied.
  out, added, rep = mit.counterfactual(DOCS, SWAPS, [0, 1, 0, 0, 0], mode='augment')
  assert len(added) == 1 and rep['docs_swapped'] == 1


# =========================== Rebalancing ===============================================

def test_category_weights_closed_form():
  counts = {'female': 2, 'male': 6, 'x': 0}
  assert mit.category_weights(counts, 'balanced') == {'female': 2.0, 'male': 4 / 6}
  assert mit.category_weights(counts, 'upsample') == {'female': 3.0, 'male': 1.0}
  assert mit.category_weights(counts, 'downsample') == {'female': 1.0, 'male': 2 / 6}
  assert mit.category_weights(counts, 'upsample', max_weight=2.5) == {'female': 2.5, 'male': 1.0}
  assert mit.category_weights({'a': 0}) == {}


def test_document_labels():
  docs = ['she and he', 'she, her and him', 'he', 'nobody', 'the woman and the man',
          'HIS lordship', 'SHE']
  assert mit.document_labels(docs, GENDER) == [None, 'female', 'male', None, None, 'male',
                                               'female']


@pytest.mark.parametrize('strategy, target', [('balanced', 8), ('upsample', 13),
                                              ('downsample', 3)])
def test_rebalance_proportions(strategy, target):
  rng = np.random.default_rng(0)
  docs = ['she spoke'] * 3 + ['he spoke'] * 13 + ['it rained'] * 4
  docs = [docs[i] + f' {i}' for i in rng.permutation(len(docs))]
  copies, rep = mit.rebalance(docs, GENDER, strategy=strategy, seed=1)
  labels = mit.document_labels(docs, GENDER)
  for c, n in (('female', 3), ('male', 13)):
    k = copies[[i for i, lab in enumerate(labels) if lab == c]]
    w = target / n
    assert k.sum() == target and rep['docs_after'][c] == target  # round(w_c n_c) = T
    assert set(k) <= {int(np.floor(w)), int(np.ceil(w))}         # floor or ceil of w_c
    assert rep['weights'][c] == pytest.approx(w)
  assert all(copies[i] == 1 for i, lab in enumerate(labels) if lab is None)
  assert rep['unlabelled'] == 4 and rep['docs_before'] == {'female': 3, 'male': 13}


# =========================== Near duplicates ===========================================

@pytest.mark.parametrize('thr', [0.8, 0.6])
def test_dedup_matches_brute_force_jaccard(thr):
  rng = np.random.default_rng(1)
  words = 'alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu'.split()
  docs = [' '.join(rng.choice(words, 12)) for _ in range(60)]
  for i in range(40):  # mutated copies: a word changed, a case change, a char appended
    src = docs[rng.integers(len(docs))].split()
    src[rng.integers(len(src))] = str(rng.choice(words))
    docs.append(' '.join(src).upper() if i % 4 == 0 else ' '.join(src) + '!' * (i % 3))
  keep, rep = mit.deduplicate(docs, thr)
  want = brute_force_keep(docs, thr=thr)
  assert np.nonzero(keep)[0].tolist() == want
  assert rep['removed'] == len(docs) - len(want) > 0


# =========================== Text, config, data path ===================================

TEXT = ('First Citizen:\nThe king is here.\n\n\nSecond Citizen:\nThe king is here.\n  \n'
        'QUEEN:\nMy son, my lord.\n\nAll:\nNo one.\n')


def test_text_round_trip_and_heldout_split():
  docs, seps = mit.split_text(TEXT, 'paragraphs')
  assert ''.join(d + s for d, s in zip(docs, seps)) == TEXT and len(docs) == 4
  # A pass that finds nothing leaves the text exactly as it was (separators kept).
  same, rep = mit.Mitigation(dedup=True, split='lines').apply_to_text('a b c\n\nd e f\n')
  assert same == 'a b c\n\nd e f\n' and rep['dedup']['removed'] == 0
  train, val = mit.split_heldout(TEXT, 0.3, 'paragraphs')
  assert train + val == TEXT and val == 'All:\nNo one.\n'  # from the next paragraph
  assert mit.split_heldout(TEXT, 0.0, 'lines') == (TEXT, '')


def test_apply_to_text_all_passes():
  text = TEXT.replace('Second', 'First')  # speeches 1 and 2 now differ only in whitespace
  new, rep = mit.Mitigation(dedup=True, rebalance='gender', cda='gender').apply_to_text(text)
  assert rep['dedup'] == {'threshold': 0.8, 'removed': 1, 'exact': 1, 'near': 0,
                          'examples': []}
  # Left: one male ("king") and one mixed ("QUEEN ... son, lord": 2 male, 1 female) doc,
  # no female-labelled doc, so nothing to reweight; CDA adds both swapped.
  assert rep['rebalance']['docs_before'] == {'female': 0, 'male': 2}
  assert rep['rebalance']['weights'] == {'male': 1.0} and rep['cda']['docs_swapped'] == 2
  orig = ['First Citizen:\nThe king is here.', 'QUEEN:\nMy son, my lord.', 'All:\nNo one.']
  swapped = ['First Citizen:\nThe queen is here.', 'KING:\nMy daughter, my lady.']
  assert new.startswith('\n\n\n'.join(orig[:1]) + '\n\n\n' + orig[1] + '\n\n' + orig[2])
  assert sorted(new.rstrip('\n').split('\n\n')[-2:]) == sorted(swapped)
  assert new.endswith('.\n')  # the trailing newline stays last
  assert rep['mentions_before']['gender'] == {'female': 1, 'male': 4, 'term_rate_ratio': 4.0}
  assert rep['mentions_after']['gender'] == {'female': 4, 'male': 4, 'term_rate_ratio': 1.0}
  assert rep['docs_in'] == 4 and rep['docs_out'] == 5 and rep['chars_out'] == len(new)


def test_parse_config():
  c = ml_collections.ConfigDict(dataclasses.asdict(mit.Mitigation()))
  assert not mit.parse(c).enabled and not mit.parse('').enabled
  assert mit.parse('{"cda": "gender", "dedup_threshold": 1}').dedup_threshold == 1.0
  assert mit.parse({'rebalance': 'age'}).enabled
  for bad, match in [({'cda_mod': 'x'}, 'cda_mod is unknown; the fields are'),
                     ({'dedup': 1}, 'must be a bool'),
                     ({'split': 'words'}, 'split=.* is unknown'),
                     ({'rebalance_strategy': 'x'}, 'rebalance_strategy'),
                     ({'cda_probability': 2.0}, r'in \[0, 1\]'),
                     ('{bad json', 'not valid JSON')]:
    with pytest.raises(ValueError, match=match):
      mit.parse(bad)
  with pytest.raises(ValueError, match="'religion' is not an identity group"):
    mit.Mitigation(rebalance='religion').apply(['x'])


def _lm_config(path, **mitigation):
  from configs.lm import base  # pylint: disable=g-import-not-at-top
  c = base.apply_runlocal(base.get_base_config())
  c.data.source, c.data.path, c.data.val_fraction = 'files', str(path), 0.2
  c.data.mitigation.update(mitigation)
  return c


def test_lm_data_path_mitigates_training_text_only(tmp_path):
  from experiments import lm  # pylint: disable=g-import-not-at-top
  speeches = [f'KING:\nHe said his son {i} was a lord and he was a good man.' for i in range(30)]
  text = '\n\n'.join(speeches + ['QUEEN:\nShe and her sister stay here.'] * 3) + '\n'
  path = tmp_path / 'corpus.txt'
  path.write_text(text)
  models, data = lm._load_data(_lm_config(path, cda='gender', dedup=True), str(tmp_path / 'w'))
  report = json.loads((tmp_path / 'w' / 'mitigation.json').read_text())
  train, val = mit.split_heldout(text, 0.2, 'paragraphs')
  assert report['config']['cda'] == 'gender' and report['heldout_chars'] == len(val)
  # The held-out tail is the raw text; the training part got swapped copies.
  tok = models.tokenizer
  assert tok.decode(data.val[0]['inputs'][0]) == val[:16]  # block_size 16, char tokens
  assert report['cda']['docs_swapped'] > 0 and report['mentions_after']['gender'][
      'term_rate_ratio'] == 1.0
  with pytest.raises(ValueError, match="not data.source='sft_jsonl'"):
    c = _lm_config(path, dedup=True)
    c.data.source = 'sft_jsonl'
    mit.check_source(c.data)


def test_retrain_stages_carry_the_mitigation(tmp_path):
  from configs.lm import base  # pylint: disable=g-import-not-at-top
  from genai.data.tokenizers import CharTokenizer  # pylint: disable=g-import-not-at-top
  from genai.feedback import retrain  # pylint: disable=g-import-not-at-top
  served, out = tmp_path / 'served', tmp_path / 'out'
  served.mkdir()
  out.mkdir()
  c = base.apply_runlocal(base.get_base_config())
  del c.data['mitigation']  # a run saved before data.mitigation existed
  (served / 'config.json').write_text(c.to_json())
  fresh = 'She said so. ' * 400
  CharTokenizer.from_text(fresh).save(str(served))
  (out / 'fresh.txt').write_text(fresh)
  (out / 'sft.jsonl').write_text('')
  seen = {}

  def train_fn(config, workdir):
    seen[workdir.rsplit('/', 1)[-1]] = config.data.mitigation.to_dict()

  opts = retrain.RetrainOptions(mitigation='{"cda": "gender", "dedup": true}', min_sft_rows=1)
  data = {'text_chars': len(fresh), 'sft_rows': 1, 'dpo_pairs': 0}
  _, stages = retrain.train_stages({'workdir': str(served)}, data, opts, str(out), train_fn)
  assert stages == ['continue', 'sft']
  assert seen['stage1']['cda'] == 'gender' and seen['stage1']['dedup']
  assert not seen['stage_sft']['cda'] and not seen['stage_sft']['dedup']
  with pytest.raises(ValueError, match='cda_mode'):
    retrain.run(str(tmp_path / 'none'), retrain.RetrainOptions(mitigation='{"cda_mode": "x"}'),
                train_fn)
