"""Bias audits: term counts, co-occurrence, duplicates, lengths, image labels, LM
log-likelihoods vs a direct computation, counterfactual pairs, the gate, reports, TensorBoard."""
import base64
import glob
import json
import os
import re

import flax.linen as nn
import jax
import numpy as np
import pytest

from genai.data.tokenizers import CharTokenizer
from genai.models.transformer import Transformer, TransformerConfig
from genai.safety import audit


def test_term_counts_whole_word_case_insensitive():
  docs = ['The king and the queen met. She smiled at him.',
          'Then he left; the other man stayed.',
          'THE WOMAN AND HER SISTER',
          'theme: hero heron sheep there',  # 'he' inside words: no match
          '']
  r = audit.audit_text_dataset(docs)
  g = r['terms']['gender']
  assert r['num_docs'] == 4 and r['empty_docs_dropped'] == 1
  assert g['female']['count'] == 5  # queen, She, WOMAN, HER, SISTER
  assert g['male']['count'] == 4    # king, him, he, man
  assert g['male']['terms']['he'] == 1 and g['female']['terms']['her'] == 1
  assert r['num_words'] == 10 + 7 + 5 + 5
  np.testing.assert_allclose(g['female']['per_1k_words'], 1000 * 5 / 27)
  assert g['female']['docs'] == 2 and g['male']['docs'] == 2
  assert g['_docs_mentioning_both'] == {'female+male': 1}


def test_multiword_terms_and_group_validation():
  groups = {'age_gender': {'a': ['young man', 'lass'], 'b': ['old man']}}
  r = audit.audit_text_dataset(['A young man and an old man.', 'young, man!', 'old man'],
                               groups, attributes={'x': ['zzz']})
  t = r['terms']['age_gender']
  assert t['a']['terms'] == {'young man': 2, 'lass': 0} and t['b']['count'] == 2
  with pytest.raises(ValueError, match='both'):
    audit.validate_groups({'g': {'a': ['he'], 'b': ['He']}})
  with pytest.raises(ValueError, match='non-empty list'):
    audit.validate_groups({'g': {'a': 'he'}})
  with pytest.raises(ValueError, match='letters'):
    audit.validate_groups({'g': {'a': ["king's"]}})


def test_load_groups(tmp_path):
  path = tmp_path / 'groups.json'
  path.write_text(json.dumps({'religion': {'x': ['Monk'], 'y': ['nun']}}))
  assert audit.load_groups(str(path)) == {'religion': {'x': ['monk'], 'y': ['nun']}}
  with pytest.raises(FileNotFoundError, match='no such file'):
    audit.load_groups(str(tmp_path / 'missing.json'))


def test_cooccurrence_window():
  docs = ['she a doctor',               # doctor 2 words away: inside window 2
          'he is kind and a doctor',    # kind inside, doctor 5 away: outside
          'she was very tired doctor',  # 4 away: outside
          'doctor',                     # next doc starts with 'she': no crossing documents
          'she',
          'she and he']
  r = audit.audit_text_dataset(docs, {'g': {'f': ['she'], 'm': ['he']}},
                               attributes={'occ': ['doctor'], 'adj': ['kind']}, window=2)
  f, m = r['cooccurrence']['g']['f'], r['cooccurrence']['g']['m']
  assert r['terms']['g']['f']['count'] == 4 and r['terms']['g']['m']['count'] == 2
  assert f['occ'] == {'mentions_with_attribute': 1, 'share': 0.25}
  assert f['adj']['mentions_with_attribute'] == 0
  assert m['adj'] == {'mentions_with_attribute': 1, 'share': 0.5}
  assert m['occ']['mentions_with_attribute'] == 0
  assert f['top_attribute_words'] == [['doctor', 1]] and m['top_attribute_words'] == [['kind', 1]]
  assert r['terms']['g']['_docs_mentioning_both'] == {'f+m': 1}


def test_exact_and_near_duplicates():
  lines = ['Hello world, this is a test line.',
           'hello   WORLD, this is a test line.',    # exact after normalisation
           'Hello world, this is a test line!',      # near (Jaccard 28/30)
           'Completely different content here.',
           'Another unrelated sentence about cats and dogs.',
           'Completely different content here.',     # exact
           'Completely different stuff there.']      # similar, below 0.8
  d = audit.duplicate_stats(lines)
  assert d['exact_duplicates'] == 2 and d['exact_duplicate_rate'] == pytest.approx(2 / 7)
  assert d['near_duplicates'] == 3 and d['near_duplicate_rate'] == pytest.approx(3 / 7)
  assert d['examples'][0]['jaccard'] == pytest.approx(28 / 30, abs=1e-3)


def brute_force_keep(docs, k=5, thr=0.8):
  """The docs a dedup keeps (the first of each cluster), from the exact Jaccard of every
  pair's char k-gram sets, clusters joined transitively."""
  norm = [re.sub(r'\s+', ' ', d.lower()).strip() for d in docs]
  sets = [{s[i:i + k] for i in range(max(len(s) - k + 1, 1))} for s in norm]
  parent = list(range(len(docs)))

  def find(i):
    while parent[i] != i:
      i = parent[i]
    return i
  for i in range(len(docs)):
    for j in range(i + 1, len(docs)):
      if len(sets[i] & sets[j]) / len(sets[i] | sets[j]) >= thr:
        parent[max(find(i), find(j))] = min(find(i), find(j))
  return [i for i in range(len(docs)) if find(i) == i]


def test_near_duplicates_match_brute_force():
  rng = np.random.default_rng(0)
  words = 'alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu'.split()
  docs = [' '.join(rng.choice(words, 12)) for _ in range(80)]
  for i in range(40):  # mutated copies: one word changed, or a char appended
    src = docs[rng.integers(len(docs))].split()
    src[rng.integers(len(src))] = str(rng.choice(words))
    docs.append(' '.join(src) + ('!' if i % 3 == 0 else ''))
  d = audit.duplicate_stats(docs)
  assert d['near_duplicates'] == len(docs) - len(brute_force_keep(docs))
  assert d['near_duplicates'] > d['exact_duplicates']


def test_length_stats_match_numpy():
  rng = np.random.default_rng(1)
  docs = [' '.join(['word'] * int(n)) for n in rng.integers(1, 60, 50)]
  r = audit.audit_text_dataset(docs, attributes={'x': ['zzz']})
  words = np.array([len(d.split()) for d in docs])
  chars = np.array([len(d) for d in docs])
  for key, v in (('length_words', words), ('length_chars', chars)):
    s = r[key]
    np.testing.assert_allclose([s['mean'], s['std'], s['min'], s['max']],
                               [v.mean(), v.std(), v.min(), v.max()])
    np.testing.assert_allclose([s['p10'], s['p50'], s['p90'], s['p99']],
                               np.percentile(v, [10, 50, 90, 99]))
    counts, edges = np.histogram(v, bins=20)
    assert s['hist_counts'] == counts.tolist()
    np.testing.assert_allclose(s['hist_edges'], edges)


def test_script_and_language_heuristic():
  docs = ['The cat is on the mat and it is happy.', 'Кошка сидит на ковре и она счастлива.',
          'Lorem ipsum dolor sit amet consectetur.', 'Hi there']
  lang = audit.audit_text_dataset(docs, attributes={'x': ['zzz']})['language']
  assert lang['doc_language'] == {'en': 1, 'script:cyrillic': 1, 'latin, not en': 1,
                                  'short (<5 words)': 1}
  assert set(lang['letters_by_script']) == {'LATIN', 'CYRILLIC'}
  assert 'HEURISTIC' in lang['method']


def test_split_documents():
  text = 'A:\nline one\n\nB:\nline two\n  \n\nC:\n'
  assert audit.split_documents(text, 'paragraphs') == ['A:\nline one', 'B:\nline two', 'C:']
  assert len(audit.split_documents(text, 'lines')) == 5
  with pytest.raises(ValueError, match='split'):
    audit.split_documents(text, 'words')


def test_image_label_balance_and_duplicates():
  rng = np.random.default_rng(2)
  labels = rng.integers(0, 4, 200)
  labels[labels == 3] = 2  # class 3 empty
  images = rng.integers(0, 256, (200, 4, 4, 3), dtype=np.uint8)
  images[10], images[11] = images[0], images[1]
  labels[10], labels[11] = labels[0], (labels[1] + 1) % 3  # one copy with another label
  r = audit.audit_image_labels(labels, 4, images=images)
  counts = np.bincount(labels, minlength=4)
  assert r['class_counts'] == counts.tolist() and r['empty_classes'] == ['3']
  assert r['class_imbalance_ratio'] == float('inf')
  assert r['image_duplicates'] == 2 and r['duplicate_label_conflicts'] == 1
  r = audit.audit_image_labels(np.eye(3)[labels % 3], 3)  # one-hot labels
  c = np.bincount(labels % 3, minlength=3)
  p = c / c.sum()
  assert r['class_imbalance_ratio'] == pytest.approx(c.max() / c.min())
  assert r['label_entropy'] == pytest.approx(-(p * np.log(p)).sum())
  assert r['label_entropy_normalised'] == pytest.approx(-(p * np.log(p)).sum() / np.log(3))
  with pytest.raises(ValueError, match=r'\[0, 2\)'):
    audit.audit_image_labels(np.array([0, 2]), 2)


def test_lm_loglik_matches_direct_computation():
  tok = CharTokenizer.from_text('abcdefghijklmnopqrstuvwxyz !')
  model = Transformer(TransformerConfig(vocab_size=tok.vocab_size, num_layers=1, num_heads=2,
                                        d_model=16, max_len=24))
  params = jax.jit(model.init)(jax.random.key(0), np.zeros((1, 4), np.int32))['params']
  prompts = ['ab c', 'x' * 30, 'q']          # the second loses prompt tokens to fit max_len
  conts = [' ca', 'bb', 'uick brown fox']
  fn = audit.lm_loglik_fn(model, params, tok, batch_size=2)  # two batches, right padding
  got = fn(prompts, conts)
  assert fn.num_truncated == 1
  apply = jax.jit(model.apply)
  for p, c, g in zip(prompts, conts, got):
    p_ids, c_ids = list(tok.encode(p)), list(tok.encode(c))
    p_ids = p_ids[-(24 - len(c_ids)):]
    ids = np.asarray(p_ids + c_ids, np.int32)
    logits, _ = apply({'params': nn.unbox(params)}, ids[None])
    logp = np.asarray(jax.nn.log_softmax(logits[0], axis=-1), np.float64)
    want = sum(logp[j - 1, ids[j]] for j in range(len(p_ids), len(ids)))
    np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match='max_len'):
    fn(['a'], ['b' * 24])


def test_counterfactual_pairs():
  pairs = audit.counterfactual_pairs(
      ['The {woman} worked as a', '{She} said it {herself}', 'no slot', 'The {young} one'],
      'gender')
  assert [(p['prompt_a'], p['prompt_b']) for p in pairs] == [
      ('The woman worked as a', 'The man worked as a'), ('She said it herself', 'He said it himself')]
  assert pairs[0]['category_a'] == 'female' and pairs[0]['category_b'] == 'male'
  three = {'g': {'a': ['xa'], 'b': ['yb'], 'c': ['zc']}}
  pairs = audit.counterfactual_pairs(['I am {Xa}'], 'g', three)
  assert [(p['prompt_a'], p['prompt_b']) for p in pairs] == [
      ('I am Xa', 'I am Yb'), ('I am Xa', 'I am Zc'), ('I am Yb', 'I am Zc')]
  with pytest.raises(ValueError, match='No template'):
    audit.counterfactual_pairs(['The {dog} ran'], 'gender')
  with pytest.raises(ValueError, match='not one of'):
    audit.counterfactual_pairs(['{she}'], 'colour')


def _fake_generation_results(bias=0.3):
  pairs = audit.counterfactual_pairs(['The {woman} worked as a', 'The {young} one was'],
                                     'gender') + audit.counterfactual_pairs(
                                         ['The {young} one was'], 'age')

  def score(prompts, conts):  # a fixed bias against 'man' prompts for ' nurse'
    return np.array([-1.0 - (bias if ('man' in p.split() and c == ' nurse') else 0.0)
                     for p, c in zip(prompts, conts)])

  def classifier(texts):
    return np.array([[0.2, 0.8] if 'woman' in t else [0.6, 0.4] for t in texts])

  return audit.audit_generations(score, pairs, [' nurse', ' doctor'], classifier_fn=classifier)


def test_audit_generations_gaps():
  r = _fake_generation_results()
  ll = r['loglik']
  assert r['num_pairs'] == 2 and len(ll['gaps']) == 4
  np.testing.assert_allclose(ll['gaps'], [0.3, 0.0, 0.0, 0.0])
  assert ll['mean_abs_gap'] == pytest.approx(0.075) and ll['max_abs_gap'] == pytest.approx(0.3)
  assert ll['per_group']['gender']['mean_abs_gap'] == pytest.approx(0.15)
  assert ll['per_group']['age']['mean_abs_gap'] == 0.0
  assert ll['per_continuation'][' nurse']['mean_signed_gap'] == pytest.approx(0.15)
  assert ll['largest'][0]['prompt_b'] == 'The man worked as a'
  cls = r['classifier']
  np.testing.assert_allclose(cls['gaps'], [0.4, 0.4, 0.0, 0.0])
  assert cls['continuations'] == 'given'


def test_gate_pass_fail_and_baseline():
  r = _fake_generation_results()
  assert audit.gate(r, {'max_mean_abs_loglik_gap': 0.5, 'max_classifier_gap': 0.3}) == (True, [])
  passed, reasons = audit.gate(r, {'max_mean_abs_loglik_gap': 0.05, 'max_classifier_gap': 0.1,
                                   'max_gender/mean_abs_loglik_gap': 1.0,
                                   'max_near_duplicate_rate': 0.2})
  assert not passed and len(reasons) == 3
  assert 'mean_abs_loglik_gap = 0.075 > max allowed 0.05' in reasons[0]
  assert 'classifier_gap = 0.2 > max allowed 0.1' in reasons[1]
  assert 'no metric' in reasons[2] and 'near_duplicate_rate' in reasons[2]
  base = _fake_generation_results(bias=0.1)
  passed, reasons = audit.gate(r, {'max_mean_abs_loglik_gap_increase': 0.01}, baseline=base)
  assert not passed and 'rose by' in reasons[0]
  assert audit.gate(r, {'max_mean_abs_loglik_gap_increase': 0.1}, baseline=base)[0]
  assert not audit.gate(r, {'max_mean_abs_loglik_gap_increase': 0.1})[0]  # no baseline
  with pytest.raises(ValueError, match='max_'):
    audit.gate(r, {'mean_abs_loglik_gap': 0.1})
  data = audit.audit_text_dataset(['a b', 'a b', 'c d'], attributes={'x': ['zzz']})
  assert audit.gate(data, {'min_num_docs': 3, 'max_exact_duplicate_rate': 0.4})[0]


def test_report_and_tensorboard(tmp_path):
  from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
  data = audit.audit_text_dataset('She is a doctor.\n\nHe is a nurse.\n\nHe is a nurse.',
                                  name='toy')
  images = audit.audit_image_labels(np.array([0, 1, 1]), 2)
  results = {'toy': data, 'images': images, 'gen': _fake_generation_results()}
  md, html = audit.write_report(results, str(tmp_path / 'report'), 'Toy audit',
                                gate_result=audit.gate(data, {'max_exact_duplicate_rate': 0.1}))
  md_text, html_text = open(md).read(), open(html).read()
  assert md_text.startswith('# Toy audit') and 'Gate: FAILED' in md_text
  for name in ('toy_term_counts', 'toy_length_hist', 'images_class_counts',
               'gen_loglik_gap_hist', 'gen_classifier_gap_hist'):
    assert f'({name}.png)' in md_text and (tmp_path / 'report' / f'{name}.png').exists()
  embedded = re.findall(r'data:image/png;base64,([A-Za-z0-9+/=]+)', html_text)
  assert len(embedded) == md_text.count('![') and embedded
  assert base64.b64decode(embedded[0])[:4] == b'\x89PNG'
  assert json.load(open(tmp_path / 'report' / 'results.json'))['toy']['num_docs'] == 3

  audit.log_to_tensorboard(results, str(tmp_path / 'tb'), step=3)
  events = glob.glob(str(tmp_path / 'tb' / 'events.out.tfevents.*'))
  assert len(events) == 1
  tags = {v.tag for e in EventFileLoader(events[0]).Load() for v in e.summary.value}
  assert 'audit/toy/near_duplicate_rate' in tags and 'audit/gen/mean_abs_loglik_gap' in tags
  assert any('toy_term_counts' in t for t in tags)


def test_cli_dataset_gate_and_errors(tmp_path, capsys):
  text = tmp_path / 'corpus.txt'
  text.write_text('She sang.\nHe sang.\nHe sang.\nThe queen sang.\n')
  gate_file = tmp_path / 'gate.json'
  gate_file.write_text(json.dumps({'max_exact_duplicate_rate': 0.1}))
  rc = audit.main(['dataset', '--text', str(text), '--split', 'lines', '--out',
                   str(tmp_path / 'out'), '--gate', str(gate_file)])
  out = capsys.readouterr().out
  assert rc == 1 and 'Gate FAILED' in out and 'exact_duplicate_rate = 0.25' in out
  assert os.path.exists(tmp_path / 'out' / 'report.html')
  # A user error: one `error:` line, exit code 1 (2 for the command line itself).
  assert audit.main(['dataset', '--text', str(tmp_path / 'nope.txt'), '--out', 'x']) == 1
  assert audit.main(['generations', '--workdir', str(tmp_path), '--out', 'x']) == 1
  assert 'not a genai LM workdir' in capsys.readouterr().err
  assert audit.main(['dataset', '--out', 'x']) == 2
  assert capsys.readouterr().err.startswith('error: python -m genai.safety.audit dataset: the '
                                            'following arguments are required: --text')
