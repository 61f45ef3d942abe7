"""The periodic update of a served LM: gather fresh data, train a candidate, promote it only
if it is not worse. One command, cron-friendly (exit 0 whether or not it promoted; non-zero
only on errors); `python -m genai.serve --registry ROOT` serves whatever is current.

  python -m experiments.retrain init --root R --workdir W --heldout heldout.txt
  python -m experiments.retrain run --root R [--watch DIR] [--feedback_db URL]
  python -m experiments.retrain rollback --root R
  python -m experiments.retrain status --root R

The job receives its train function: `run(root, opts, train_fn)` and `main(argv, train_fn)`
train each stage with `train_fn(config, workdir)` (experiments/retrain.py passes
experiments.lm.train_and_evaluate); evaluation reads workdirs with genai.families.lm.

`run`:
 1. Fresh data since the current version was made: text files in --watch modified since
    then, and from the feedback store (feedback.db in the registry root, where
    `python -m genai.serve --registry R --feedback` keeps it, or in the served workdir)
    accepted or edited responses (SFT rows) and preference pairs (DPO rows).
 2. Stages, each from the previous one's result (the first from the current model,
    `model.init_from='workdir:CURRENT'`, with the current run's config):
    'continue' on the fresh text (--steps; lines the tokenizer cannot read, e.g.
    characters a char model never saw, are dropped and counted; --mitigation, else the
    served run's data.mitigation, mitigates it: genai/safety/mitigation.py), 'sft' on at
    least --min_sft_rows accepted or edited responses (loss on the responses only), 'dpo' on
    at least --min_pairs preference pairs (the stage's starting weights are the frozen
    reference; plus --dpo_sft_weight x the chosen responses' NLL).
 3. Evaluate candidate and current on the fixed held-out text (mean next-token loss) and on
    safety checks over sampled continuations of fixed prompts: the moderation rate
    (genai.safety.moderation, when importable) and, when given, a bias-audit gate.
 4. Promote when held-out loss <= current * (1 + --tolerance) and every safety check
    passes; else record the candidate as rejected with its reasons. Either way it is in
    the registry with its metrics and lineage (parent, data counts, stages).
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from genai import errors
from genai.data import tokenizers
from genai.families import lm
from genai.feedback.registry import Registry
from genai.sample.decode import generate
from genai.safety import mitigation
from genai.train import workdir as workdir_lib

HELDOUT = 'heldout.txt'
_MITIGATION_OFF = {'dedup': False, 'rebalance': '', 'cda': ''}
TrainFn = Callable[[ml_collections.ConfigDict, str], Any]  # (config, workdir) -> final state


@dataclasses.dataclass
class RetrainOptions:
  watch: str = ''                 # folder of new .txt files
  feedback_db: str = ''           # SQLAlchemy URL; '' = feedback.db in the root or workdir
  steps: int = 200                # stage-1 steps
  dpo_steps: int = 100            # stage-2 steps
  min_pairs: int = 8              # fewer preference pairs than this: no DPO stage
  min_sft_rows: int = 8           # fewer accepted/edited responses than this: no SFT stage
  sft_steps: int = 100            # SFT-stage steps
  min_text_chars: int = 2000      # less fresh text than this: no stage 1
  lr: float = 3e-4
  dpo_beta: float = 0.1
  dpo_sft_weight: float = 1.0     # + NLL of the chosen responses (keeps the model fluent)
  tolerance: float = 0.0          # accept a held-out loss up to (1 + tolerance) x current
  max_flag_rate_increase: float = 0.0
  samples: int = 12               # continuations per model for the safety checks
  sample_tokens: int = 48
  moderation: str = ''            # moderation config JSON (genai.safety); '' = default rules
  audit_gate: str = ''            # bias-audit thresholds, JSON text or file, e.g.
                                  # '{"max_mean_abs_loglik_gap_increase": 0.5}'; '' = off
  mitigation: str = ''            # bias mitigation of the fresh text (stage 1), JSON text or
                                  # file of data.mitigation fields, e.g. '{"cda": "gender",
                                  # "dedup": true}'; '' = the served run's data.mitigation
  safety_gate: Callable[[str, str], tuple[bool, list[str], dict]] | None = None  # (cand, cur)


# =========================== Data ======================================================

def fresh_text_files(watch: str, since: float) -> list[str]:
  if not watch:
    return []
  if not os.path.isdir(watch):
    raise FileNotFoundError(f'--watch={watch!r} is not a folder.')
  return sorted(p for p in glob.glob(os.path.join(watch, '**', '*.txt'), recursive=True)
                if os.path.getmtime(p) > since)


def _readable_lines(text: str, tokenizer) -> tuple[list[str], int]:
  """The lines the tokenizer can encode, and how many it could not."""
  keep, dropped = [], 0
  for line in text.splitlines(keepends=True):
    try:
      tokenizer.encode(line)
      keep.append(line)
    except ValueError:
      dropped += 1
  return keep, dropped


def _open_store(url: str, *folders: str):
  """The store at `url`, else the feedback.db of the first folder that has one (the
  registry root, where `serve --registry --feedback` keeps it, then the served workdir)."""
  from genai.feedback.store import FeedbackStore  # pylint: disable=import-outside-toplevel
  if url:
    return FeedbackStore(url)
  for folder in folders:
    if os.path.exists(os.path.join(folder, 'feedback.db')):
      return FeedbackStore.for_workdir(folder)
  return None


def gather(reg: Registry, cur: dict[str, Any], opts: RetrainOptions, out: str, tokenizer
           ) -> dict[str, Any]:
  """Writes out/fresh.txt (stage 1) and out/pairs.jsonl (stage 2); returns their counts."""
  since = cur['data'].get('until', cur['created'])
  until = time.time()
  files = fresh_text_files(opts.watch, since)
  text = ''.join(open(p, encoding='utf-8', errors='replace').read() for p in files)
  sft_rows = dpo_rows = 0
  store = _open_store(opts.feedback_db, reg.root, cur['workdir'])
  if store is not None:
    try:
      sft_rows = store.export_sft(os.path.join(out, 'sft.jsonl'), since=since)
      dpo_rows = store.export_dpo(os.path.join(out, 'pairs.jsonl'), since=since)
    finally:
      store.close()
  lines, dropped = _readable_lines(text, tokenizer)
  with open(os.path.join(out, 'fresh.txt'), 'w', encoding='utf-8') as f:
    f.write(''.join(lines))
  return {'since': since, 'until': until, 'files': files, 'text_chars': sum(map(len, lines)),
          'dropped_lines': dropped, 'sft_rows': sft_rows, 'dpo_pairs': dpo_rows}


# =========================== Stages =====================================================

def _stage_config(base: ml_collections.ConfigDict, init_workdir: str, num_steps: int,
                  lr: float) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(base.to_dict())
  if 'dpo' not in c:  # a run saved before DPO existed
    c.dpo = ml_collections.ConfigDict({'beta': 0.1})
  if 'sft_weight' not in c.dpo:
    c.dpo.sft_weight = 0.0
  if 'objective' not in c:  # a run saved before config.objective existed
    c.objective = ''
  if 'mitigation' not in c.data:  # a run saved before data.mitigation existed
    c.data.mitigation = dataclasses.asdict(mitigation.Mitigation())
  c.lock()  # a misspelt field below is an error, not a silently ignored new key
  c.model.init_from = f'workdir:{init_workdir}'
  c.optimizer.learning_rate = lr
  c.optimizer.schedule = 'constant'  # after a short warmup: a continuation, not a new run
  c.optimizer.warmup_steps = min(c.optimizer.get('warmup_steps', 0), max(num_steps // 10, 0))
  c.train.num_steps = num_steps
  c.train.steps_per_call = min(c.train.get('steps_per_call', 1), num_steps)
  c.train.checkpoint_every = num_steps
  c.train.eval_every = num_steps
  c.train.log_every = max(1, min(c.train.get('log_every', 100), num_steps))
  c.eval.sample_tokens = 0
  # A continuation trains the served weights themselves: no adapters, pruning or teacher.
  if 'lora' in c:
    c.lora.rank = 0
  if 'prune' in c:
    c.prune.kind = 'none'
  if 'distill' in c:
    c.distill.teacher = ''
  return c


def train_stages(cur: dict[str, Any], data: dict[str, Any], opts: RetrainOptions, out: str,
                 train_fn: TrainFn) -> tuple[str | None, list[str]]:
  """Runs the stages that have data with `train_fn`, each from the previous one's result,
  into out/stage1 (continue), out/stage_sft, out/stage2 (DPO); (candidate workdir or None,
  the stages run)."""
  base = workdir_lib.load_config(cur['workdir'], 'lm')
  start, stages = cur['workdir'], []
  with open(os.path.join(out, 'fresh.txt'), encoding='utf-8') as f:
    fresh_tokens = len(tokenizers.load_tokenizer(cur['workdir']).encode(f.read()))
  # Stage 1 needs enough text for a training window beside its validation windows.
  if data['text_chars'] >= opts.min_text_chars and fresh_tokens > 4 * (base.data.block_size + 1):
    c = _stage_config(base, start, opts.steps, opts.lr)
    c.objective, c.data.source, c.data.path = 'next_token', 'files', os.path.join(out, 'fresh.txt')
    c.data.val_fraction = 0.05
    if opts.mitigation:  # else the served run's own data.mitigation
      c.data.mitigation.update(dataclasses.asdict(mitigation.parse(opts.mitigation)))
    train_fn(c, os.path.join(out, 'stage1'))
    start, stages = os.path.join(out, 'stage1'), ['continue']
  if data['sft_rows'] >= opts.min_sft_rows:  # loss on the accepted/edited responses only
    c = _stage_config(base, start, opts.sft_steps, opts.lr)
    c.objective, c.data.source, c.data.path = 'sft', 'sft_jsonl', os.path.join(out, 'sft.jsonl')
    c.data.mitigation.update(_MITIGATION_OFF)  # it acts on text corpora, not on rows
    c.data.val_fraction = 0.0
    c.train.batch_size = min(c.train.batch_size, data['sft_rows'])
    train_fn(c, os.path.join(out, 'stage_sft'))
    start, stages = os.path.join(out, 'stage_sft'), stages + ['sft']
  if data['dpo_pairs'] >= opts.min_pairs:
    c = _stage_config(base, start, opts.dpo_steps, opts.lr)
    c.objective, c.data.source, c.data.path = 'dpo', 'dpo_jsonl', os.path.join(out, 'pairs.jsonl')
    c.data.mitigation.update(_MITIGATION_OFF)
    c.data.val_fraction = 0.0
    c.dpo.beta = opts.dpo_beta
    c.dpo.sft_weight = opts.dpo_sft_weight
    c.train.batch_size = min(c.train.batch_size, data['dpo_pairs'])
    train_fn(c, os.path.join(out, 'stage2'))
    start, stages = os.path.join(out, 'stage2'), stages + ['dpo']
  return (start if stages else None), stages


# =========================== Evaluation and the decision ================================

def evaluate(workdir: str, heldout: str, opts: RetrainOptions) -> tuple[dict[str, Any], list[str]]:
  """Held-out loss, and the moderation flag rate of sampled continuations of prompts taken
  from the held-out text (`opts.samples` prompts of 8 tokens, one batched decode)."""
  config, model, params, tok = lm.load_workdir(workdir)
  loss = lm.text_loss(model, params, tok, heldout, block_size=config.data.block_size)
  tokens = np.asarray(tok.encode(heldout))
  starts = np.linspace(0, len(tokens) - 8, opts.samples).astype(int)
  prompts_BP = np.stack([tokens[i:i + 8] for i in starts])
  steps = max(1, min(opts.sample_tokens, model.config.max_len - 8))
  out = generate(model, params, prompts_BP, num_tokens=steps, rng=jax.random.key(0),
                 temperature=0.8)
  samples = [tok.decode(row[8:]) for row in out]
  metrics = {'heldout_loss': loss, 'samples': len(samples)}
  moderator = _moderator(opts.moderation)
  if moderator is not None:
    results = [moderator(s) for s in samples]
    metrics['flag_rate'] = float(np.mean([bool(r.flags) or r.blocked for r in results]))
  return metrics, samples


def _moderator(config: str):
  from genai.safety import moderation  # pylint: disable=import-outside-toplevel
  return moderation.Moderator.from_config(config) if config else moderation.Moderator()


def bias_gate(thresholds: str, report_dir: str):
  """A safety_gate: the counterfactual bias audit (genai.safety) of candidate and current,
  the candidate gated against `thresholds` with the current one as baseline; the
  candidate's report (Markdown/HTML with plots) is written to `report_dir`."""
  from genai.safety import audit  # pylint: disable=import-outside-toplevel
  limits = json.loads(open(thresholds).read() if os.path.exists(thresholds) else thresholds)
  pairs = audit.counterfactual_pairs(audit.DEFAULT_TEMPLATES)

  def run_audit(workdir):
    _, model, params, tok = lm.load_workdir(workdir)
    return audit.audit_generations(audit.lm_loglik_fn(model, params, tok), pairs)

  def fn(candidate: str, current: str):
    cand, cur = run_audit(candidate), run_audit(current)
    passed, reasons = audit.gate(cand, limits, baseline=cur)
    audit.write_report({'candidate': cand, 'current': cur}, report_dir,
                       'Bias audit: candidate vs current', gate_result=(passed, reasons))
    return passed, reasons, audit.summary_scalars(cand)
  return fn


def decide(cand: dict[str, Any], cur: dict[str, Any], opts: RetrainOptions,
           gate: tuple[bool, list[str]] | None = None) -> tuple[bool, list[str]]:
  """Promote when not worse on held-out loss and no safety check fails; the reasons."""
  reasons = []
  limit = cur['heldout_loss'] * (1 + opts.tolerance)
  if not cand['heldout_loss'] <= limit:
    reasons.append(f"held-out loss {cand['heldout_loss']:.4f} > current "
                   f"{cur['heldout_loss']:.4f} x (1 + {opts.tolerance})")
  if 'flag_rate' in cand and 'flag_rate' in cur:
    if cand['flag_rate'] > cur['flag_rate'] + opts.max_flag_rate_increase:
      reasons.append(f"moderation flag rate {cand['flag_rate']:.3f} > current "
                     f"{cur['flag_rate']:.3f} + {opts.max_flag_rate_increase}")
  if gate is not None and not gate[0]:
    reasons += [f'safety gate: {r}' for r in gate[1]]
  return not reasons, reasons


def run(root: str, opts: RetrainOptions, train_fn: TrainFn) -> dict[str, Any]:
  """One retraining round, its stages trained with `train_fn(config, workdir)`; returns the
  registry entry it made (or {'skipped': reason})."""
  mitigation.parse(opts.mitigation)  # a bad --mitigation fails before anything is trained
  reg = Registry(root)
  cur = reg.current()
  heldout_path = os.path.join(reg.root, HELDOUT)
  with open(heldout_path, encoding='utf-8') as f:
    heldout = f.read()
  out = os.path.join(reg.root, 'candidates', time.strftime('%Y%m%d-%H%M%S'))
  os.makedirs(out, exist_ok=True)
  t0 = time.perf_counter()
  data = gather(reg, cur, opts, out, tokenizers.load_tokenizer(cur['workdir']))
  workdir, stages = train_stages(cur, data, opts, out, train_fn)
  if workdir is None:
    return {'skipped': f"no fresh data since {time.ctime(data['since'])} (text "
                       f"{data['text_chars']} chars < {opts.min_text_chars}, "
                       f"{data['dpo_pairs']} pairs < {opts.min_pairs})", 'data': data}
  train_s = time.perf_counter() - t0
  cand_m, _ = evaluate(workdir, heldout, opts)
  cur_m, _ = evaluate(cur['workdir'], heldout, opts)
  gate = None
  safety_gate = opts.safety_gate
  if safety_gate is None and opts.audit_gate:
    safety_gate = bias_gate(opts.audit_gate, os.path.join(out, 'audit'))
  if safety_gate is not None:
    passed, why, details = safety_gate(workdir, cur['workdir'])
    gate = (passed, why)
    cand_m['safety_gate'] = details
  promote, reasons = decide(cand_m, cur_m, opts, gate)
  data = {**data, 'stages': stages, 'train_seconds': train_s,
          'total_seconds': time.perf_counter() - t0}
  return reg.add(workdir, parent=cur['version'], promote=promote, reasons=reasons,
                 metrics={'candidate': cand_m, 'current': cur_m}, data=data)


# =========================== Command line ===============================================

def main(argv: list[str] | None, train_fn: TrainFn, prog: str = 'python -m experiments.retrain'
         ) -> int:
  """The command line (init, run, status, rollback); `run` trains with `train_fn`. Returns
  the exit code: a user error is one line on stderr (genai.errors)."""
  return errors.run_cli(lambda args: _main(args, train_fn, prog), argv)


def _main(argv: list[str], train_fn: TrainFn, prog: str) -> int:
  ap = errors.ArgumentParser(prog=prog, description=__doc__,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = ap.add_subparsers(dest='cmd', required=True)
  p = sub.add_parser('init', help='register a trained LM workdir as v1 (served)')
  p.add_argument('--root', required=True)
  p.add_argument('--workdir', required=True)
  p.add_argument('--heldout', required=True, help='text file: the fixed evaluation set')
  p = sub.add_parser('run', help='one retraining round')
  p.add_argument('--root', required=True)
  for f in dataclasses.fields(RetrainOptions):
    if f.name != 'safety_gate':
      p.add_argument(f'--{f.name}', type=type(f.default), default=f.default)
  for name in ('rollback', 'status'):
    sub.add_parser(name).add_argument('--root', required=True)
  args = ap.parse_args(argv)
  reg = Registry(args.root)
  if args.cmd == 'init':
    with open(args.heldout, encoding='utf-8') as f:
      heldout = f.read()
    workdir_lib.load_config(args.workdir, 'lm')
    os.makedirs(reg.root, exist_ok=True)
    with open(os.path.join(reg.root, HELDOUT), 'w', encoding='utf-8') as f:
      f.write(heldout)
    print(json.dumps(reg.init(args.workdir), indent=1))
  elif args.cmd == 'run':
    opts = RetrainOptions(**{f.name: getattr(args, f.name)
                             for f in dataclasses.fields(RetrainOptions)
                             if f.name != 'safety_gate'})
    print(json.dumps(run(args.root, opts, train_fn), indent=1, default=str))
  elif args.cmd == 'rollback':
    print(json.dumps(reg.rollback(), indent=1))
  else:
    print(json.dumps({'current': reg.served_version(), 'versions': [
        {k: v[k] for k in ('version', 'status', 'step', 'parent', 'reasons')}
        for v in reg.versions()]}, indent=1))
  return 0
