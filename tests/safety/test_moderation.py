"""Moderation rules on crafted inputs: every PII type is redacted and its look-alikes are
not, blocklists match whole words only, regex flags, block > redact > flag, bad rule
configs give ValueErrors that name the rule and the fix, and the CLI prints JSON lines."""
import dataclasses
import io
import json

import pytest

from genai.safety import moderation as mod


@pytest.fixture(scope='module')
def pii():
  return mod.Moderator(mod.default_rules())


@pytest.mark.parametrize('text, expected, rule', [
    ('mail john.doe+news@example.co.uk today', 'mail [EMAIL] today', 'pii_email'),
    ('Contact: Ana_B@mail.example.org.', 'Contact: [EMAIL].', 'pii_email'),
    ('call (555) 123-4567 now', 'call [PHONE] now', 'pii_phone'),
    ('call 555-123-4567 or 555.123.4567', 'call [PHONE] or [PHONE]', 'pii_phone'),
    ('US +1 555 123 4567, toll free 1-800-555-0199', 'US [PHONE], toll free [PHONE]',
     'pii_phone'),
    ('UK +44 20 7946 0958; FR +33 1 23 45 67 89', 'UK [PHONE]; FR [PHONE]', 'pii_phone'),
    ('DE +49 (0)30 1234567.', 'DE [PHONE].', 'pii_phone'),
    ('card 4111 1111 1111 1111 exp', 'card [CREDIT_CARD] exp', 'pii_credit_card'),
    ('cards 4111-1111-1111-1111 and 378282246310005', 'cards [CREDIT_CARD] and [CREDIT_CARD]',
     'pii_credit_card'),
    ('server 192.168.0.1. backup 10.0.0.255', 'server [IP_ADDRESS]. backup [IP_ADDRESS]',
     'pii_ipv4'),
])
def test_each_pii_type_is_redacted(pii, text, expected, rule):
  res = pii(text)
  assert res.text == expected
  assert res.flags == (rule,) and not res.blocked and not res.needs_review
  assert all(m.rule == rule and m.action == 'redact' for m in res.matches)


@pytest.mark.parametrize('text', [
    'release 1.2.3.4.5 is out',              # a version number, not an IP
    'ip 256.1.1.1 and 1.2.3 and v1.2.3.4',    # out-of-range octet, too short, part of a word
    'order 123456789012345 shipped',          # 15 digits failing the Luhn check
    'id 4111 1111 1111 1112',                 # a card-shaped number failing Luhn
    'on 2024-01-15 at 10:30, 3.14159, 1,234,567 users, pin 1234, zip 90210',
    'user@localhost and @handle and a@b',     # no dotted domain
    '12345678 and 555-1234 and +12',          # too few digits for a phone
])
def test_pii_look_alikes_are_not_redacted(pii, text):
  res = pii(text)
  assert res.text == text and res.flags == () and res.matches == ()


def test_luhn():
  assert mod.luhn_ok('4111111111111111') and mod.luhn_ok('378282246310005')
  assert not mod.luhn_ok('123456789012345') and not mod.luhn_ok('4111111111111112')


def _rules(*specs):
  return mod.load_rules(list(specs))


def test_blocklist_matches_whole_words_case_insensitively():
  m = mod.Moderator(_rules({'name': 'insults', 'type': 'blocklist', 'action': 'block',
                            'terms': ['idiot', 'shut up', 'ass']}))
  for text in ('You IDIOT!', 'idiot', 'well, shut   UP then', 'what an ass.'):
    res = m(text)
    assert res.blocked and res.text == '' and res.flags == ('insults',), text
  for text in ('that was idiotic', 'the idiots', 'a class assistant', 'shutup', 'passage'):
    res = m(text)
    assert not res.blocked and res.text == text and res.flags == (), text


def test_blocklist_redact_uses_its_replacement():
  m = mod.Moderator(_rules({'name': 'names', 'type': 'blocklist', 'action': 'redact',
                            'terms': ['Project Falcon'], 'replacement': '[CODENAME]'}))
  assert m('Project falcon ships; project falconry does not.').text == \
      '[CODENAME] ships; project falconry does not.'


def test_regex_flag_lets_text_through_for_review():
  m = mod.Moderator(_rules({'name': 'ticket', 'type': 'regex', 'pattern': r'TICKET-\d+',
                            'action': 'flag', 'ignore_case': True}))
  res = m('see ticket-42 please')
  assert res.text == 'see ticket-42 please' and not res.blocked
  assert res.needs_review and res.flags == ('ticket',)
  assert [(x.start, x.end) for x in res.matches] == [(4, 13)]
  assert not m('see TICKET-x').needs_review


def test_action_precedence_block_beats_redact_beats_flag():
  rules = mod.default_rules() + _rules(
      {'name': 'secret', 'type': 'blocklist', 'terms': ['launch codes'], 'action': 'block'},
      {'name': 'money', 'type': 'regex', 'pattern': r'\$\d+', 'action': 'flag'})
  m = mod.Moderator(rules)
  both = 'pay $500 to x@y.com'
  res = m(both)
  assert res.text == 'pay $500 to [EMAIL]' and not res.blocked and res.needs_review
  assert set(res.flags) == {'pii_email', 'money'}
  res = m(both + ' for the launch codes')
  assert res.blocked and res.text == '' and res.needs_review
  assert set(res.flags) == {'pii_email', 'money', 'secret'}
  # The same span matched by a flag rule and a redact rule: redacted, and still flagged.
  m = mod.Moderator(_rules(
      {'name': 'f', 'type': 'regex', 'pattern': 'abc', 'action': 'flag'},
      {'name': 'r', 'type': 'regex', 'pattern': 'b', 'action': 'redact', 'replacement': '#'}))
  res = m('xabcx')
  assert res.text == 'xa#cx' and res.needs_review and res.flags == ('f', 'r')


def test_overlapping_redactions_merge_and_leak_nothing():
  m = mod.Moderator(mod.default_rules() + _rules(
      {'name': 'acct', 'type': 'regex', 'pattern': r'acct \S+@\S+', 'action': 'redact'}))
  res = m('use acct bob@example.com now')
  assert res.text == 'use [REDACTED] now'
  assert 'bob' not in json.dumps(res.to_dict())  # matches keep spans, not the text


def test_result_is_the_serving_filter_contract():
  from genai.serve import api  # pylint: disable=import-outside-toplevel
  needed = {f.name for f in dataclasses.fields(api.FilterResult)}
  assert needed <= {f.name for f in dataclasses.fields(mod.ModerationResult)}
  res = mod.Moderator()('hi at a@b.io')
  assert isinstance(res.flags, tuple) and isinstance(res.blocked, bool)


def test_classifier_is_batched_and_thresholded():
  calls = []

  def fake(texts):
    calls.append(list(texts))
    return [0.9 if 'bad' in t else 0.1 for t in texts]

  m = mod.Moderator([], fake, threshold=0.8)
  out = m.moderate_many(['good one', 'bad one', 'fine'])
  assert calls == [['good one', 'bad one', 'fine']]
  assert [r.flags for r in out] == [(), ('classifier',), ()]
  assert [r.needs_review for r in out] == [False, True, False]
  assert out[1].score == pytest.approx(0.9) and out[1].text == 'bad one'
  blocking = mod.Moderator([], fake, threshold=0.5, classifier_action='block')
  assert blocking('bad').blocked and not blocking('good').blocked
  assert mod.Moderator([])('x').score is None


def test_from_config_dict_and_file(tmp_path):
  assert [r.name for r in mod.Moderator.from_config({}).rules] == [
      'pii_email', 'pii_phone', 'pii_credit_card', 'pii_ipv4']
  assert mod.Moderator.from_config({'rules': []}).rules == []
  path = tmp_path / 'rules.json'
  path.write_text(json.dumps({'rules': [
      {'name': 'pii_email', 'type': 'pii', 'pattern': 'email', 'action': 'redact'},
      {'name': 'custom', 'type': 'regex', 'pattern': 'foo+', 'action': 'flag'}]}))
  res = mod.Moderator.from_config(str(path))('fooo a@b.io')
  assert res.text == 'fooo [EMAIL]' and res.flags == ('pii_email', 'custom')


@pytest.mark.parametrize('spec, message', [
    ({'name': 'x', 'type': 'pii', 'pattern': 'email', 'action': 'delete'},
     r"rule 'x': unknown action 'delete'; use one of block, redact, flag"),
    ({'name': 'x', 'type': 'keyword', 'action': 'flag'},
     r"rule 'x': unknown type 'keyword'; use one of blocklist, regex, pii"),
    ({'name': 'x', 'type': 'regex', 'pattern': '(unclosed', 'action': 'flag'},
     r"rule 'x': invalid regex '\(unclosed'.*Fix the pattern"),
    ({'name': 'x', 'type': 'regex', 'pattern': 'a*', 'action': 'flag'},
     r"rule 'x': .*matches the empty string"),
    ({'name': 'x', 'type': 'regex', 'action': 'flag'}, r"rule 'x': \"pattern\" must be"),
    ({'name': 'x', 'type': 'pii', 'pattern': 'ssn', 'action': 'redact'},
     r"rule 'x': unknown pii pattern 'ssn'; use one of email, phone, credit_card, ipv4"),
    ({'name': 'x', 'type': 'blocklist', 'terms': [], 'action': 'block'},
     r"rule 'x': \"terms\" must be a non-empty list"),
    ({'name': 'x', 'type': 'blocklist', 'terms': 'idiot', 'action': 'block'},
     r"rule 'x': \"terms\" must be a non-empty list"),
    ({'name': 'x', 'type': 'regex', 'patern': 'a', 'action': 'flag'},
     r"rule 'x': unknown key\(s\) \['patern'\]"),
    ({'type': 'regex', 'pattern': 'a', 'action': 'flag'}, r'needs a non-empty string "name"'),
])
def test_bad_rules_name_the_rule_and_the_fix(spec, message):
  with pytest.raises(ValueError, match=message):
    mod.load_rules([spec])


def test_bad_configs():
  rule = {'name': 'a', 'type': 'regex', 'pattern': 'a', 'action': 'flag'}
  with pytest.raises(ValueError, match="rule 'a': duplicate rule name"):
    mod.load_rules([rule, rule])
  with pytest.raises(ValueError, match='"rules" must be a list'):
    mod.Moderator.from_config({'rules': rule})
  with pytest.raises(ValueError, match=r"unknown moderation config key\(s\) \['rule'\]"):
    mod.Moderator.from_config({'rule': [rule]})
  with pytest.raises(ValueError, match='"workdir" string'):
    mod.Moderator.from_config({'classifier': {'threshold': 0.5}})
  with pytest.raises(ValueError, match="'flag' or 'block'"):
    mod.Moderator.from_config({'classifier': {'workdir': 'w', 'action': 'redact'}})
  with pytest.raises(ValueError, match=r'threshold=1.5 must be a probability'):
    mod.Moderator.from_config({'classifier': {'workdir': 'w', 'threshold': 1.5}})


def test_cli_prints_one_json_line_per_input(tmp_path, monkeypatch, capsys):
  rules = tmp_path / 'rules.json'
  rules.write_text(json.dumps({'rules': [
      {'name': 'pii_phone', 'type': 'pii', 'pattern': 'phone', 'action': 'redact'},
      {'name': 'rude', 'type': 'blocklist', 'terms': ['idiot'], 'action': 'block'}]}))
  monkeypatch.setattr('sys.stdin', io.StringIO('call 555-123-4567\nyou idiot\n\nhello\n'))
  mod.main(['--rules', str(rules), '--batch', '2'])
  lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
  assert [x['text'] for x in lines] == ['call [PHONE]', '', '', 'hello']
  assert [x['blocked'] for x in lines] == [False, True, False, False]
  assert lines[0]['flags'] == ['pii_phone'] and lines[0]['score'] is None
