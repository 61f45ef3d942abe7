"""Language modelling with a GPT-2 or Llama-shaped transformer on the shared loop.

Train (re-running the same command resumes from the newest checkpoint):
  python -m experiments.lm --config configs/lm/pydoc_char.py --workdir runs/pydoc
Sample from a trained workdir:
  python -m experiments.lm --workdir runs/pydoc --sample --prompt "The " --num_tokens 200

A step: `config.objective` picks one loss `loss_fn(params, frozen, batch, rng)`
(genai/objectives/lm_objectives.py); LoRA, pruning, freezing and QAT are transforms around
it, composed in genai.families.lm.Training, which also reads workdirs back.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from absl import app
from absl import flags
import jax
import ml_collections
import optax

from genai import errors
from genai import paths
from genai.data import packed_windows
from genai.data import preferences
from genai.data import sequences
from genai.data import sft
from genai.data import text_sources
from genai.data import token_shards
from genai.data import tokenizers
from genai.evaluation import text_metrics
from genai.families import lm as family
# Reading a workdir, under the names the CLI, benchmarks and notebooks use:
from genai.families.lm import export_hf, load_workdir, make_model, sample, text_loss  # noqa: F401
from genai.models.transformer import Transformer
from genai.objectives import dpo
from genai.objectives import lm_objectives
from genai.parallel import mesh as mesh_lib
from genai.safety import mitigation
from genai.sample.decode import generate
from genai.train import cli
from genai.train import gradients
from genai.train import loop
from genai.train import workdir as workdir_lib


# =========================== The models and the data of a run ==========================

@dataclasses.dataclass
class Models:
  model: Transformer
  tokenizer: Any
  pretrained: Any = None        # params of model.init_from
  teacher_model: Transformer | None = None  # distill.teacher, and its params
  teacher_params: Any = None


def resolve_model(config: ml_collections.ConfigDict, workdir: str, text: str,
                  tokenizer: Any = None) -> Models:
  """The run's models; the tokenizer and the model config are saved in `workdir`.

  With `model.init_from` the architecture and the tokenizer come from the pretrained source
  (only dropout/dtype/remat/scan_layers/max_len of `config.model` apply). With
  `distill.teacher` the tokenizer comes from the teacher and the student is `config.model`
  over the teacher's vocabulary. Otherwise `config.model` and `config.tokenizer` (trained on
  `text` where it needs training).
  """
  init_from = config.model.get('init_from') or ''
  teacher_spec = (config.get('distill') or {}).get('teacher') or ''
  m = Models(None, None)
  if teacher_spec:
    t_cfg, m.teacher_params, m.tokenizer = family.load_source(teacher_spec)
    m.teacher_model = family.teacher_model_of(t_cfg)
  if init_from:
    cfg, m.pretrained, tokenizer = family.load_source(init_from, config)
    if m.teacher_model and tokenizer.vocab_size != m.tokenizer.vocab_size:
      raise ValueError(f'model.init_from={init_from!r} and distill.teacher={teacher_spec!r} '
                       'use different tokenizers; distillation needs the same vocabulary.')
    m.tokenizer = tokenizer
  elif m.teacher_model:
    cfg = make_model(config, m.teacher_model.config.vocab_size).config
  else:
    m.tokenizer = tokenizer or tokenizers.make_tokenizer(config.tokenizer, text, workdir)
    cfg = make_model(config, m.tokenizer.vocab_size).config
  if cfg.max_len < config.data.block_size:
    raise ValueError(f'The model\'s max_len={cfg.max_len} < data.block_size='
                     f'{config.data.block_size}; lower data.block_size.')
  t_vocab = m.teacher_model.config.vocab_size if m.teacher_model else cfg.vocab_size
  if t_vocab != cfg.vocab_size:
    raise ValueError(f'The student embeds {cfg.vocab_size} tokens, the teacher {t_vocab}; '
                     'distillation needs the same vocabulary.')
  if jax.process_index() == 0:
    if init_from or teacher_spec or tokenizer is not None:
      m.tokenizer.save(workdir)
    paths.write_json(paths.join(workdir, family.MODEL_CONFIG), dataclasses.asdict(cfg), indent=1)
  m.model = Transformer(cfg)
  return m


@dataclasses.dataclass
class Data:
  train_iter: Any               # this process's training batches
  val: list                     # validation batches ([] = none)
  prompt: str                   # the default prompt of eval samples
  chars_per_token: float = 1.0  # of the validation text (bits per char)


def _load_data(config: ml_collections.ConfigDict, workdir: str) -> tuple[Models, Data]:
  block, source, path = config.data.block_size, config.data.source, config.data.path
  local_batch = mesh_lib.local_batch_size(config.train.batch_size)
  mitigation.check_source(config.data)
  if source in ('sft_jsonl', 'dpo_jsonl'):  # rows: prompt/response, or preference pairs
    if source == 'dpo_jsonl' and not config.model.get('init_from'):
      raise ValueError("data.source='dpo_jsonl' needs model.init_from (the policy to improve "
                       "and the frozen reference), e.g. 'workdir:runs/shakespeare'.")
    pairs = source == 'dpo_jsonl'
    rows = (preferences.read_jsonl if pairs else sft.read_jsonl)(path)
    models = resolve_model(config, workdir, '\n'.join(json.dumps(r, ensure_ascii=False)
                                                      for r in rows))
    encode = preferences.encode_pairs if pairs else sft.encode_examples
    train_ex, val_ex = sft.split(encode(rows, models.tokenizer, block, path),
                                 config.data.val_fraction)
    prompt = (rows[-1]['prompt'] if pairs else
              sft.prompt_and_response(rows[-1], models.tokenizer, path)[0])
    return models, Data(
        sft.make_train_iterator(train_ex, batch_size=local_batch, seed=config.seed),
        sft.eval_batches(val_ex, config.eval.batch_size) if len(val_ex['inputs']) else [],
        prompt)
  if source == 'prepared':  # python -m genai.data.prepare's shards, streamed (data_at_scale.md)
    models = resolve_model(config, workdir, '', token_shards.load_prepared_tokenizer(path))
    train_iter, val, info = packed_windows.prepared_lm_data(
        path, tokenizer=models.tokenizer, block_size=block, batch_size=local_batch,
        seed=config.seed, val_split=config.data.get('val_split') or None,
        eval_batch_size=config.eval.batch_size, eval_max_batches=config.eval.num_batches,
        num_workers=config.data.get('num_workers', 0), prefetch=config.data.get('prefetch', 0))
    return models, Data(train_iter, val, info.prompt, info.chars_per_token)
  text = text_sources.load_text(config.data)
  parts = mitigation.mitigate_corpus(text, config.data, workdir)  # (train, val) or None
  text = ''.join(parts) if parts else text
  models = resolve_model(config, workdir, text)
  tok = models.tokenizer
  tokens = tok.encode(text)
  if len(tokens) < block + 1:
    raise errors.DataError(
        f'the corpus ({text_sources.describe(config.data)}) is {len(tokens)} tokens '
        f'({len(text)} characters), shorter than one window of data.block_size + 1 = '
        f'{block + 1} tokens', 'use more text or a smaller data.block_size')
  train_tokens, val_tokens = sequences.split_train_val(
      tokens, config.data.val_fraction, block_size=block,
      n_train=len(tok.encode(parts[0])) if parts else None)
  train_iter = sequences.make_train_iterator(
      train_tokens, block_size=block, batch_size=local_batch,
      stride=config.data.get('stride') or block, seed=config.seed)
  if not len(val_tokens):
    return models, Data(train_iter, [], tok.decode(tokens[:1]))
  val = sequences.eval_batches(val_tokens, block_size=block, batch_size=config.eval.batch_size,
                               max_batches=config.eval.num_batches)
  return models, Data(train_iter, val, tok.decode(val_tokens[:1]),
                      len(tok.decode(val_tokens)) / len(val_tokens))


# =========================== The task for the shared loop ==============================

def make_train_step(loss_fn: lm_objectives.LossFn, training: family.Training,
                    grad_accum_steps: int = 1):
  """(state, batch, rng) -> (state, metrics): one step of `training.tx` on the objective's
  `loss_fn(params, frozen, batch, rng)`, differentiated w.r.t. the trainable tree
  `state[training.key]` (the params, or LoRA's adapters over the frozen base)."""
  key = training.key

  def train_step(state, batch, rng):
    frozen = training.frozen(state)
    fn = lambda trained, b, r: loss_fn(training.forward_params(state, trained), frozen, b, r)
    (loss, aux), grads = gradients.value_and_grad(fn, state[key], batch, rng, grad_accum_steps)
    updates, opt_state = training.tx.update(grads, state['opt_state'], state[key])
    metrics = {'loss': loss, 'grad_norm': optax.tree.norm(grads),
               'lr': training.schedule(state['step']), **aux}
    return {**state, key: optax.apply_updates(state[key], updates), 'opt_state': opt_state,
            'step': state['step'] + 1}, metrics

  return train_step


def build_task(config: ml_collections.ConfigDict, workdir: str) -> loop.Task:
  tc, ec, block = config.train, config.eval, config.data.block_size
  lm_objectives.objective_of(config)  # a contradicting objective fails before data loads
  models, data = _load_data(config, workdir)
  model = models.model
  init_state, training = family.state_fns(config, model, models.teacher_model)
  train_model = training.wrap(model)  # validation sees QAT's fake-quantized weights too
  loss_fn = lm_objectives.make_loss_fn(config, train_model, models.teacher_model)
  train_step = make_train_step(loss_fn, training, int(tc.get('grad_accum_steps', 1)))
  eval_step = family.eval_step_fn(train_model)
  bleu_rows = family.read_bleu_file(ec.bleu_file) if ec.get('bleu_file') else []
  prompt = ec.get('sample_prompt') or data.prompt

  def evaluate(state, step):
    params = family.inference_params(config, state)
    results: dict[str, Any] = {}
    if data.val and training.objective == 'dpo':
      results.update(dpo.evaluate(train_model, params, training.frozen(state)['reference'],
                                  data.val, float(config.dpo.beta)))
    elif data.val:
      loss = family.mean_loss(eval_step, params, data.val)
      results.update({'val/loss': loss, 'val/perplexity': text_metrics.perplexity(loss),
                      'val/bits_per_token': text_metrics.bits_per_token(loss),
                      'val/bits_per_char': text_metrics.bits_per_char(loss, data.chars_per_token)})
    rng = jax.random.fold_in(jax.random.key(config.seed + 1), step)
    if bleu_rows:
      hyps = family.greedy_continuations(model, params, models.tokenizer, bleu_rows, rng=rng)
      results['val/bleu'] = text_metrics.bleu(hyps, [r['reference'] for r in bleu_rows])
    if ec.sample_tokens:
      out = generate(model, params, models.tokenizer.encode(prompt)[None],
                     num_tokens=ec.sample_tokens, rng=rng, temperature=ec.temperature,
                     top_k=ec.top_k)
      results['sample'] = models.tokenizer.decode(out[0])
    return results

  return loop.Task(init_state=init_state, train_step=train_step, train_iter=data.train_iter,
                   evaluate=evaluate, tokens_per_step=tc.batch_size * block,
                   examples_per_step=tc.batch_size,
                   flops_per_step=model.config.flops_per_token(block) * tc.batch_size * block,
                   init_args=(models.pretrained, models.teacher_params),
                   unroll_steps=False)  # no convolutions: a rolled scan compiles 4x faster


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Any:
  return workdir_lib.run(config, workdir, build_task)


# =========================== Command line ==============================================

def define_flags() -> None:
  cli.define_flags()
  flags.DEFINE_string('export_hf', None, 'Write --workdir as an HF checkpoint (LoRA merged) '
                      'into this directory, instead of training.')
  flags.DEFINE_string('prompt', '\n', 'Prompt for --sample.')
  flags.DEFINE_integer('num_tokens', 200, 'Tokens to generate.')
  flags.DEFINE_integer('num_samples', 1, 'Independent samples.')
  flags.DEFINE_float('temperature', 0.8, '0 = greedy.')
  flags.DEFINE_integer('top_k', 0, '0 = off.')
  flags.DEFINE_float('top_p', 1.0, '1 = off.')
  flags.DEFINE_integer('seed', 0, 'Sampling seed.')
  flags.DEFINE_string('moderation', '', "Moderate --sample outputs (genai.safety.moderation): "
                      "'default' (PII redaction) or a JSON config of rules/classifier.")


def _sample_from_flags(f) -> None:
  moderator = None
  if f.moderation:
    from genai.safety import moderation  # pylint: disable=import-outside-toplevel
    moderator = (moderation.Moderator() if f.moderation == 'default'
                 else moderation.Moderator.from_config(f.moderation))
  for i, text in enumerate(sample(f.workdir, f.prompt, num_tokens=f.num_tokens,
                                  num_samples=f.num_samples, temperature=f.temperature,
                                  top_k=f.top_k, top_p=f.top_p, seed=f.seed)):
    note = ''
    if moderator is not None:
      result = moderator(text)
      text = '[withheld by moderation]' if result.blocked else result.text
      note = f' (moderation: {", ".join(result.flags)})' if result.flags else ''
    print(f'=== sample {i}{note} ===\n{text}')


if __name__ == '__main__':
  define_flags()
  run = cli.main(train_and_evaluate, _sample_from_flags, 'configs/lm/pydoc_char.py')

  def main(argv):
    f = flags.FLAGS
    if f.export_hf:
      if not f.workdir:
        raise app.UsageError('--export_hf needs --workdir.')
      export_hf(f.workdir, f.export_hf)
      print(f'Wrote {f.export_hf} (config.json, model.safetensors'
            f'{", tokenizer" if paths.path(f.export_hf).joinpath("tokenizer.json").exists() else ""}).')
      return
    run(argv)

  cli.run(main)
