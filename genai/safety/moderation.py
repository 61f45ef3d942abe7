"""Output moderation: rules (blocklists, regexes, built-in PII patterns) plus an optional
trained text classifier, as the serving app's `output_filter`.

  moderator = Moderator.from_config('rules.json')     # or Moderator(default_rules())
  app = make_app(model, engine=engine, output_filter=moderator)
  moderator('mail me at a@b.org').text                # 'mail me at [EMAIL]'

Every rule has a name and an action:
  'block'   withhold the whole output (`.blocked`; `.text` becomes '')
  'redact'  replace each match with the rule's placeholder ('[EMAIL]', '[REDACTED]', ...)
  'flag'    let the text through but mark it for human review (`.needs_review`)
All rules run on the original text and every rule that fires is named in `.flags`; the
strongest action decides the output: block beats redact beats flag. The classifier scores
the original text and fires ('classifier' in `.flags`) when P(unsafe) >= its threshold;
its action is 'flag' (default) or 'block'.

Rule file (JSON) or dict:
  {"rules": [
     {"name": "pii_email", "type": "pii", "pattern": "email", "action": "redact"},
     {"name": "insults", "type": "blocklist", "terms": ["idiot", "shut up"], "action": "block"},
     {"name": "ticket", "type": "regex", "pattern": "TICKET-\\\\d+", "action": "flag",
      "ignore_case": true}],
   "classifier": {"workdir": "runs/moderation_clf", "threshold": 0.8, "action": "flag"}}
Optional per rule: "replacement" (the redaction placeholder). PII patterns: email, phone
(US formats with separators, and '+' international numbers), credit_card (13-19 digits,
spaces/dashes allowed, Luhn-checked), ipv4. Blocklist terms match whole words,
case-insensitively (a space in a term matches any run of whitespace).

Command line (one JSON result per input line):
  python -m genai.safety.moderation --rules rules.json --classifier W < texts.txt
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from typing import Any, Callable, Mapping, Sequence

ACTIONS = ('block', 'redact', 'flag')
RULE_TYPES = ('blocklist', 'regex', 'pii')
_STRENGTH = {'flag': 0, 'redact': 1, 'block': 2}
_RULE_KEYS = {'blocklist': {'terms'}, 'regex': {'pattern', 'ignore_case'}, 'pii': {'pattern'}}
_COMMON_KEYS = {'name', 'type', 'action', 'replacement'}
_CLASSIFIER_KEYS = {'workdir', 'threshold', 'action', 'batch_size'}


# ------------------------------------------------------------------ PII patterns.


def luhn_ok(digits: str) -> bool:
  """The Luhn checksum of a digit string (payment card numbers pass it)."""
  total = 0
  for i, ch in enumerate(reversed(digits)):
    d = ord(ch) - 48
    if i % 2:
      d = d * 2 - 9 if d > 4 else d * 2
    total += d
  return total % 10 == 0


def _card_ok(match: str) -> bool:
  digits = re.sub(r'\D', '', match)
  return 13 <= len(digits) <= 19 and luhn_ok(digits)


def _phone_ok(match: str) -> bool:
  n = sum(ch.isdigit() for ch in match)
  return 8 <= n <= 15 if match.startswith('+') else n in (10, 11)


_OCTET = r'(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)'
_US_PHONE = r'(?:\+?1[\s.-]?)?(?:\(\d{3}\)[\s.-]?|\d{3}[\s.-])\d{3}[\s.-]\d{4}'
_INTL_PHONE = r'\+\d{1,3}(?:[\s.-]?(?:\(\d{1,4}\)|\d{1,4})){2,6}'

# kind -> (regex, validator of a match or None, default placeholder)
PII_PATTERNS: dict[str, tuple[str, Callable[[str], bool] | None, str]] = {
    'email': (r'(?<![\w.%+-])[\w.%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}(?![\w-])',
              None, '[EMAIL]'),
    'phone': (rf'(?<![\w+]){_INTL_PHONE}(?!\w)|(?<![\w+(]){_US_PHONE}(?!\w)',
              _phone_ok, '[PHONE]'),
    'credit_card': (r'(?<![\w.+-])\d(?:[ -]?\d){12,18}(?!\w|[.-]\d)', _card_ok,
                    '[CREDIT_CARD]'),
    'ipv4': (rf'(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\w|\.\d)', None, '[IP_ADDRESS]'),
}


# ------------------------------------------------------------------------ rules.


@dataclasses.dataclass(frozen=True)
class Rule:
  """One compiled rule. `find(text)` -> [(start, end)] of its (validated) matches."""
  name: str
  type: str
  action: str
  regex: re.Pattern
  replacement: str = '[REDACTED]'
  validator: Callable[[str], bool] | None = None

  def find(self, text: str) -> list[tuple[int, int]]:
    return [m.span() for m in self.regex.finditer(text)
            if m.end() > m.start() and (self.validator is None or self.validator(m.group()))]


@dataclasses.dataclass(frozen=True)
class Match:
  """A rule that fired on [start, end) of the original text (the matched text itself is
  not kept, so results can be logged without the PII they found)."""
  rule: str
  action: str
  start: int
  end: int


@dataclasses.dataclass
class ModerationResult:
  """What the moderator decided. `text`, `blocked` and `flags` are the serving app's
  FilterResult contract (genai/serve/api.py)."""
  text: str
  blocked: bool = False
  flags: tuple[str, ...] = ()
  needs_review: bool = False
  matches: tuple[Match, ...] = ()
  score: float | None = None       # the classifier's P(unsafe), when there is one

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def _bad(name: str, message: str) -> ValueError:
  return ValueError(f'moderation rule {name!r}: {message}')


def _blocklist_regex(name: str, terms: Any) -> re.Pattern:
  if (not isinstance(terms, (list, tuple)) or not terms
      or not all(isinstance(t, str) and t.strip() for t in terms)):
    raise _bad(name, '"terms" must be a non-empty list of non-empty strings, e.g. '
               '["idiot", "shut up"].')
  words = sorted({' '.join(t.split()) for t in terms}, key=len, reverse=True)
  alternation = '|'.join(r'\s+'.join(re.escape(w) for w in term.split(' ')) for term in words)
  return re.compile(rf'(?<!\w)(?:{alternation})(?!\w)', re.IGNORECASE)


def make_rule(spec: Mapping[str, Any]) -> Rule:
  """A Rule from one dict of the rule file; ValueError names the rule and the fix."""
  if not isinstance(spec, Mapping):
    raise ValueError(f'each moderation rule must be an object with "name", "type" and '
                     f'"action"; got {spec!r}.')
  name = spec.get('name')
  if not isinstance(name, str) or not name.strip():
    raise ValueError(f'moderation rule {dict(spec)!r} needs a non-empty string "name".')
  kind = spec.get('type')
  if kind not in RULE_TYPES:
    raise _bad(name, f'unknown type {kind!r}; use one of {", ".join(RULE_TYPES)}.')
  action = spec.get('action')
  if action not in ACTIONS:
    raise _bad(name, f'unknown action {action!r}; use one of {", ".join(ACTIONS)}.')
  unknown = set(spec) - _COMMON_KEYS - _RULE_KEYS[kind]
  if unknown:
    raise _bad(name, f'unknown key(s) {sorted(unknown)} for a {kind} rule; it takes '
               f'{sorted(_COMMON_KEYS | _RULE_KEYS[kind])}.')
  replacement = spec.get('replacement')
  if replacement is not None and not isinstance(replacement, str):
    raise _bad(name, f'"replacement" must be a string, got {replacement!r}.')
  validator = None
  if kind == 'blocklist':
    regex = _blocklist_regex(name, spec.get('terms'))
  elif kind == 'pii':
    pii = spec.get('pattern')
    if pii not in PII_PATTERNS:
      raise _bad(name, f'unknown pii pattern {pii!r}; use one of {", ".join(PII_PATTERNS)} '
                 '(or a "regex" rule for anything else).')
    source, validator, default = PII_PATTERNS[pii]
    regex = re.compile(source)
    replacement = replacement if replacement is not None else default
  else:
    source = spec.get('pattern')
    if not isinstance(source, str) or not source:
      raise _bad(name, '"pattern" must be a non-empty regular expression string.')
    ignore_case = spec.get('ignore_case', False)
    if not isinstance(ignore_case, bool):
      raise _bad(name, f'"ignore_case" must be true or false, got {ignore_case!r}.')
    try:
      regex = re.compile(source, re.IGNORECASE if ignore_case else 0)
    except re.error as e:
      raise _bad(name, f'invalid regex {source!r}: {e}. Fix the pattern (JSON strings '
                 'need doubled backslashes, e.g. "\\\\d+").') from None
    if regex.fullmatch(''):
      raise _bad(name, f'the regex {source!r} matches the empty string, so it would fire '
                 'on every text; make it require at least one character (e.g. + not *).')
  return Rule(name=name, type=kind, action=action, regex=regex, validator=validator,
              replacement=replacement if replacement is not None else '[REDACTED]')


def load_rules(specs: Sequence[Mapping[str, Any]]) -> list[Rule]:
  """Rules from the "rules" list of a rule file; names must be unique."""
  if not isinstance(specs, (list, tuple)):
    raise ValueError(f'"rules" must be a list of rule objects, got {type(specs).__name__}.')
  rules = [make_rule(s) for s in specs]
  seen = set()
  for r in rules:
    if r.name in seen or r.name == 'classifier':
      raise _bad(r.name, 'duplicate rule name (names identify rules in .flags; "classifier" '
                 'is reserved); rename one.')
    seen.add(r.name)
  return rules


def default_rules() -> list[Rule]:
  """Every built-in PII pattern, redacting: pii_email, pii_phone, pii_credit_card, pii_ipv4."""
  return load_rules([{'name': f'pii_{k}', 'type': 'pii', 'pattern': k, 'action': 'redact'}
                     for k in PII_PATTERNS])


def _redact(text: str, spans: list[tuple[int, int, str]]) -> str:
  """Replaces [start, end) spans by their placeholders; overlapping spans merge into one
  (taking the earliest, longest span's placeholder), so no piece of a match leaks."""
  out, pos, cur = [], 0, None
  for start, end, placeholder in sorted(spans, key=lambda s: (s[0], -s[1])):
    if cur is not None and start < cur[1]:
      cur[1] = max(cur[1], end)
      continue
    if cur is not None:
      out.append(text[pos:cur[0]] + cur[2])
      pos = cur[1]
    cur = [start, end, placeholder]
  if cur is not None:
    out.append(text[pos:cur[0]] + cur[2])
    pos = cur[1]
  return ''.join(out) + text[pos:]


# -------------------------------------------------------------------- moderator.


class Moderator:
  """callable(text) -> ModerationResult: the rules, then the classifier (if any).

  `classifier`: callable(texts) -> P(unsafe) [N] (e.g. text_classifier.load_classifier);
  it fires at score >= `threshold` with `classifier_action` ('flag' or 'block').
  """

  def __init__(self, rules: Sequence[Rule] | None = None,
               classifier: Callable[[Sequence[str]], Any] | None = None, *,
               threshold: float = 0.5, classifier_action: str = 'flag'):
    self.rules = list(default_rules() if rules is None else rules)
    names = [r.name for r in self.rules]
    if len(set(names)) != len(names):
      raise ValueError(f'moderation rule names must be unique; got {names}.')
    if classifier_action not in ('flag', 'block'):
      raise ValueError(f'classifier action {classifier_action!r} is not supported; use '
                       "'flag' or 'block' (a score cannot be redacted).")
    if not 0.0 <= float(threshold) <= 1.0:
      raise ValueError(f'classifier threshold={threshold} must be a probability in [0, 1].')
    self.classifier = classifier
    self.threshold = float(threshold)
    self.classifier_action = classifier_action

  @classmethod
  def from_config(cls, config: Mapping[str, Any] | str) -> 'Moderator':
    """From a rule-file dict or the path of a JSON rule file (see the module docstring).
    No "rules" key means `default_rules()`; "rules": [] means none."""
    if isinstance(config, (str, os.PathLike)):
      with open(config, encoding='utf-8') as f:
        try:
          config = json.load(f)
        except json.JSONDecodeError as e:
          raise ValueError(f'{config}: not valid JSON ({e}).') from None
    if not isinstance(config, Mapping):
      raise ValueError('a moderation config is an object {"rules": [...], "classifier": '
                       '{...}}.')
    unknown = set(config) - {'rules', 'classifier'}
    if unknown:
      raise ValueError(f'unknown moderation config key(s) {sorted(unknown)}; use "rules" '
                       'and "classifier".')
    rules = load_rules(config['rules']) if 'rules' in config else default_rules()
    clf = config.get('classifier')
    if clf is None:
      return cls(rules)
    if not isinstance(clf, Mapping) or not isinstance(clf.get('workdir'), str):
      raise ValueError('"classifier" must be an object with a "workdir" string (a run of '
                       'experiments/text_classifier.py), e.g. {"workdir": "runs/clf", '
                       '"threshold": 0.8, "action": "flag"}.')
    unknown = set(clf) - _CLASSIFIER_KEYS
    if unknown:
      raise ValueError(f'unknown classifier key(s) {sorted(unknown)}; it takes '
                       f'{sorted(_CLASSIFIER_KEYS)}.')
    threshold, action = clf.get('threshold', 0.5), clf.get('action', 'flag')
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
      raise ValueError(f'classifier "threshold" must be a number in [0, 1], got {threshold!r}.')
    cls(rules, threshold=threshold, classifier_action=action)  # Validate before loading.
    from genai.safety import text_classifier  # pylint: disable=import-outside-toplevel
    scorer = text_classifier.load_classifier(clf['workdir'],
                                             batch_size=int(clf.get('batch_size', 256)))
    return cls(rules, scorer, threshold=threshold, classifier_action=action)

  def _apply_rules(self, text: str, score: float | None) -> ModerationResult:
    matches: list[Match] = []
    spans: list[tuple[int, int, str]] = []
    fired: dict[str, str] = {}  # name -> action, in rule order
    for rule in self.rules:
      found = rule.find(text)
      if not found:
        continue
      fired[rule.name] = rule.action
      matches.extend(Match(rule.name, rule.action, s, e) for s, e in found)
      if rule.action == 'redact':
        spans.extend((s, e, rule.replacement) for s, e in found)
    if score is not None and score >= self.threshold:
      fired['classifier'] = self.classifier_action
    actions = set(fired.values())
    blocked = 'block' in actions
    out = '' if blocked else (_redact(text, spans) if spans else text)
    return ModerationResult(text=out, blocked=blocked, flags=tuple(fired),
                            needs_review='flag' in actions, matches=tuple(matches),
                            score=score)

  def __call__(self, text: str) -> ModerationResult:
    return self.moderate_many([text])[0]

  def moderate_many(self, texts: Sequence[str]) -> list[ModerationResult]:
    """Results for many texts; the classifier scores them all in batches."""
    if isinstance(texts, str):
      raise TypeError('moderate_many takes a list of texts; use moderator(text) for one.')
    scores = [None] * len(texts)
    if self.classifier is not None and len(texts):
      scores = [float(p) for p in self.classifier(list(texts))]
    return [self._apply_rules(t, s) for t, s in zip(texts, scores)]


# ------------------------------------------------------------------- command line.


def main(argv: Sequence[str] | None = None) -> None:
  p = argparse.ArgumentParser(
      prog='python -m genai.safety.moderation',
      description='Moderate texts, one per input line; prints one JSON result per line.')
  p.add_argument('--rules', help='JSON rule file (default: the built-in PII redaction rules).')
  p.add_argument('--classifier', help='workdir of experiments/text_classifier.py (overrides '
                 'the rule file\'s "classifier.workdir").')
  p.add_argument('--threshold', type=float, help='classifier threshold (default: the rule '
                 "file's, else 0.5).")
  p.add_argument('--batch', type=int, default=256, help='lines moderated per batch.')
  args = p.parse_args(argv)
  config: dict[str, Any] = {}
  if args.rules:
    with open(args.rules, encoding='utf-8') as f:
      config = json.load(f)
  if args.classifier or args.threshold is not None:
    clf = dict(config.get('classifier') or {})
    if args.classifier:
      clf['workdir'] = args.classifier
    if args.threshold is not None:
      clf['threshold'] = args.threshold
    if 'workdir' not in clf:
      p.error('--threshold needs a classifier (--classifier or the rule file\'s).')
    config['classifier'] = clf
  moderator = Moderator.from_config(config)

  def flush(lines):
    for line, res in zip(lines, moderator.moderate_many(lines)):
      d = res.to_dict()
      d['input_chars'] = len(line)
      print(json.dumps(d, ensure_ascii=False))

  lines: list[str] = []
  for raw in sys.stdin:
    lines.append(raw.rstrip('\n'))
    if len(lines) >= args.batch:
      flush(lines)
      lines = []
  flush(lines)


if __name__ == '__main__':
  main()
