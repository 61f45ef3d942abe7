"""Language modelling with a GPT-2 or Llama-shaped transformer on the shared loop.

Train (re-running the same command resumes from the newest checkpoint):
  python -m experiments.lm --config configs/lm/pydoc_char.py --workdir runs/pydoc
Sample from a trained workdir:
  python -m experiments.lm --workdir runs/pydoc --sample --prompt "The " --num_tokens 200
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from genai.data import sequences
from genai.data import preferences
from genai.data import sft
from genai.data import text_sources
from genai.compress import pruning
from genai.compress import qat
from genai.data import tokenizers
from genai.evaluation import text_metrics
from genai.models import lora as lora_lib
from genai.models.transformer import Transformer, TransformerConfig
from genai.objectives import dpo
from genai.objectives.distill import kd_loss
from genai.objectives.lm import make_loss_fn
from genai.pretrained import hf
from genai.pretrained import sources
from genai.sample.decode import generate
from genai.parallel import mesh as mesh_lib
from genai.train import gradients
from genai.train import cli
from genai.train import loop
from genai.train import workdir as workdir_lib
from genai.train import optimizers
from genai.train.optimizers import make_optimizer


# =========================== Building blocks ===========================================

def make_model(config: ml_collections.ConfigDict, vocab_size: int) -> Transformer:
  model_cfg = {k: v for k, v in config.model.items() if k not in ('init_from', 'qat', 'qat_tile')}
  if model_cfg.get('max_len') is None:
    model_cfg['max_len'] = config.data.block_size
  if model_cfg['max_len'] < config.data.block_size:
    raise ValueError(f'model.max_len={model_cfg["max_len"]} < data.block_size='
                     f'{config.data.block_size}; raise model.max_len.')
  return Transformer(TransformerConfig.from_dict({**model_cfg, 'vocab_size': vocab_size}))


MODEL_CONFIG = 'model_config.json'


def load_source(spec: str, config: ml_collections.ConfigDict | None = None):
  """(TransformerConfig, float32 params, tokenizer) of a pretrained source: 'workdir:DIR'
  (another genai LM run) or anything `genai.pretrained.sources.load` reads. `config`'s
  shape-free model fields (dropout, dtype, remat, scan_layers, max_len) are applied."""
  overrides = {k: config.model.get(k) for k in sources.SHAPE_FREE_FIELDS
               if config is not None and config.model.get(k) is not None}
  if spec.startswith('workdir:'):
    _, src_model, params, tokenizer = load_workdir(spec[len('workdir:'):])
    cfg, params = sources.apply_overrides(
        src_model.config, jax.tree.map(np.asarray, params), overrides)
    return cfg, params, tokenizer
  cfg, params, tokenizer = sources.load(spec, **overrides)
  if tokenizer is None:
    raise ValueError(f'{spec!r} has no tokenizer (no tokenizer.json beside the weights); add '
                     'the checkpoint\'s tokenizer.json.')
  return cfg, params, tokenizer


def resolve_model(config: ml_collections.ConfigDict, workdir: str, text: str | None):
  """(model, tokenizer, pretrained params or None, (teacher model, params) or None) for a
  run; the tokenizer and the model config are saved in `workdir`.

  With `model.init_from` the architecture and the tokenizer come from the pretrained source
  (only dropout/dtype/remat/scan_layers/max_len of `config.model` apply). With
  `distill.teacher` the tokenizer comes from the teacher and the student is `config.model`
  over the teacher's vocabulary. Otherwise `config.model` and `config.tokenizer` (trained on
  `text` where it needs training).
  """
  init_from = config.model.get('init_from') or ''
  teacher_spec = (config.get('distill') or {}).get('teacher') or ''
  params, teacher = None, None
  if teacher_spec:
    t_cfg, t_params, tokenizer = load_source(teacher_spec)
    teacher = (Transformer(dataclasses.replace(t_cfg, scan_layers=False, remat='none')), t_params)
  if init_from:
    cfg, params, tokenizer_init = load_source(init_from, config)
    if teacher and tokenizer_init.vocab_size != tokenizer.vocab_size:
      raise ValueError(f'model.init_from={init_from!r} and distill.teacher={teacher_spec!r} '
                       'use different tokenizers; distillation needs the same vocabulary.')
    tokenizer = tokenizer_init
  elif teacher:
    cfg = make_model(config, teacher[0].config.vocab_size).config
  else:
    tokenizer = tokenizers.make_tokenizer(config.tokenizer, text, workdir)
    cfg = make_model(config, tokenizer.vocab_size).config
  if cfg.max_len < config.data.block_size:
    raise ValueError(f'The model\'s max_len={cfg.max_len} < data.block_size='
                     f'{config.data.block_size}; lower data.block_size.')
  if teacher and teacher[0].config.vocab_size != cfg.vocab_size:
    raise ValueError(f'The student embeds {cfg.vocab_size} tokens, the teacher '
                     f'{teacher[0].config.vocab_size}; distillation needs the same vocabulary.')
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    if init_from or teacher:
      tokenizer.save(workdir)
    with open(os.path.join(workdir, MODEL_CONFIG), 'w') as f:
      json.dump(dataclasses.asdict(cfg), f, indent=1)
  return Transformer(cfg), tokenizer, params, teacher


def lora_config(config: ml_collections.ConfigDict) -> lora_lib.LoraConfig | None:
  lc = config.get('lora')
  if not lc or not lc.get('rank'):
    return None
  return lora_lib.LoraConfig(rank=int(lc.rank), alpha=float(lc.alpha),
                             dropout=float(lc.dropout), targets=str(lc.targets))


def _eval_fn(model: Transformer):
  loss_fn = make_loss_fn(model)

  @jax.jit
  def eval_step(params, batch):
    _, aux = loss_fn(params, batch, None, deterministic=True)
    return aux['nll_sum'], aux['num_tokens']

  return eval_step


def text_loss(model: Transformer, params, tokenizer, text: str, *, block_size: int,
              batch_size: int = 16) -> float:
  """Mean next-token loss (nats) over every non-overlapping window of `text`: a fixed
  held-out score for comparing two models with the same tokenizer."""
  tokens = tokenizer.encode(text)
  if len(tokens) < block_size + 1:
    raise ValueError(f'the held-out text has {len(tokens)} tokens; it needs at least '
                     f'block_size + 1 = {block_size + 1}.')
  eval_step = _eval_fn(model)
  sums = jax.device_get([eval_step(params, b) for b in sequences.eval_batches(
      tokens, block_size=block_size, batch_size=batch_size, max_batches=0)])
  return sum(float(n) for n, _ in sums) / sum(float(c) for _, c in sums)


def _read_bleu_file(path: str) -> list[dict[str, str]]:
  if not os.path.exists(path):
    raise FileNotFoundError(f'eval.bleu_file={path!r} does not exist; give a JSONL file with '
                            'one {"prompt": ..., "reference": ...} object per line.')
  rows = []
  with open(path) as f:
    for n, line in enumerate(f, 1):
      if line.strip():
        row = json.loads(line)
        if not {'prompt', 'reference'} <= set(row):
          raise ValueError(f'{path}:{n} needs "prompt" and "reference" keys, got {sorted(row)}.')
        rows.append(row)
  return rows


def bleu_of_continuations(model, params, tokenizer, rows, *, rng) -> float:
  """Greedy continuation of each prompt, as long as its reference, scored with BLEU."""
  hyps = []
  for row in rows:
    prompt = tokenizer.encode(row['prompt'])[None]
    n = max(len(tokenizer.encode(row['reference'])), 1)
    out = generate(model, params, prompt, num_tokens=n, rng=rng, temperature=0.0)
    hyps.append(tokenizer.decode(out[0, prompt.shape[1]:]))
  return text_metrics.bleu(hyps, [r['reference'] for r in rows])


# =========================== The task for the shared loop ==============================

def _with_values(boxed: Any, values: Any) -> Any:
  """`boxed` (params with logical axis names) holding `values` instead."""
  is_box = lambda x: isinstance(x, nn.LogicallyPartitioned)
  return jax.tree.map(lambda b, v: b.replace_boxed(v) if is_box(b) else v, boxed, values,
                      is_leaf=is_box)


def state_fns(config: ml_collections.ConfigDict, model: Transformer,
              teacher_model: Transformer | None = None):
  """init_state(rng, pretrained=None, teacher=None) -> {'params', ['lora'], ['teacher'],
  'opt_state', 'step'}, and (optimizer, lr schedule). With LoRA the optimizer sees only the
  adapters; a distillation teacher is frozen (no optimizer state)."""
  tx, schedule = make_optimizer(config.optimizer, config.train.num_steps)
  if config.train.get('freeze'):
    tx = optimizers.freeze(tx, config.train.freeze)
  lcfg = lora_config(config)
  pcfg = prune_config(config)
  if pcfg is not None:
    if lcfg is not None:
      raise ValueError('prune.kind and lora.rank cannot be combined: LoRA freezes the weights '
                       'pruning would zero; merge the adapters first (--export_hf), then prune.')
    tx = optax.chain(tx, pruning.prune(pcfg))

  def init_state(rng, pretrained=None, teacher=None):
    tokens = jnp.zeros((1, config.data.block_size), jnp.int32)
    params = model.init(rng, tokens)['params']
    if pretrained is not None:
      params = _with_values(params, pretrained)
    state = {'params': params, 'step': jnp.zeros((), jnp.int32)}
    if teacher is not None:  # boxed like the teacher's own init, so it is sharded too
      state['teacher'] = _with_values(teacher_model.init(rng, tokens)['params'], teacher)
    if is_dpo(config) and lcfg is None:  # DPO's frozen reference: the starting weights
      state['reference'] = params
    if lcfg is None:
      return {**state, 'opt_state': tx.init(params)}
    adapters = lora_lib.init(params, lcfg, jax.random.fold_in(rng, 1))
    return {**state, 'lora': adapters, 'opt_state': tx.init(adapters)}

  return init_state, (tx, schedule)


def is_dpo(config: ml_collections.ConfigDict) -> bool:
  return config.data.source == 'dpo_jsonl'


def make_dpo_logps(model: Transformer):
  """(params, batch, rng) -> sequence log-probs [B, 2] of the chosen and rejected responses
  (batch arrays [B, 2, T]), both through one forward pass of 2B rows."""
  def logps(params, batch, rng=None):
    b, two, t = batch['inputs'].shape
    flat = lambda x: x.reshape(b * two, t)
    rngs = None if rng is None else {'dropout': rng}
    logits, _ = model.apply({'params': params}, flat(batch['inputs']),
                            deterministic=rng is None, rngs=rngs)
    return dpo.sequence_logprobs(logits, flat(batch['targets']),
                                 flat(batch['mask'])).reshape(b, two)
  return logps


def prune_config(config: ml_collections.ConfigDict) -> pruning.PruneConfig | None:
  pc = config.get('prune')
  if not pc or pc.get('kind', 'none') == 'none':
    return None
  return pruning.PruneConfig(**pc.to_dict())


def make_train_step(model: Transformer, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, grad_accum_steps: int = 1,
                    lora_cfg: lora_lib.LoraConfig | None = None,
                    teacher_model: Transformer | None = None, distill_cfg: Any = None,
                    dpo_beta: float | None = None, dpo_sft_weight: float = 0.0):
  """(state, batch, rng) -> (state, metrics): one optimizer step on the LM loss, of the
  params or, with `lora_cfg`, of the adapters only (the base stays frozen). With a
  `teacher_model`, the loss is the KD loss against its logits on the same batch, computed
  in the same jitted step from `state['teacher']`. With `dpo_beta`, the DPO loss on
  preference pairs against the frozen reference (`state['reference']`, or under LoRA the
  base params without adapters), whose log-probs are computed first, outside the adapters;
  `dpo_sft_weight` adds that times the chosen responses' NLL per token (RPO, Pang et al.
  2024), which keeps DPO from lowering the likelihood of everything."""
  key = 'params' if lora_cfg is None else 'lora'
  logps = make_dpo_logps(model)

  def train_step(state, batch, rng):
    if dpo_beta is not None:
      ref = state['reference'] if lora_cfg is None else state['params']
      batch = {**batch, 'ref_logps': jax.lax.stop_gradient(logps(ref, batch))}

      def loss_fn(params, batch, rng):
        pol = logps(params, batch, rng)
        loss, aux = dpo.dpo_loss(pol[:, 0], pol[:, 1], batch['ref_logps'][:, 0],
                                 batch['ref_logps'][:, 1], dpo_beta)
        if dpo_sft_weight:  # + NLL per token of the chosen responses (keeps them likely)
          nll = -jnp.sum(pol[:, 0]) / jnp.maximum(jnp.sum(batch['mask'][:, 0]), 1.0)
          loss, aux = loss + dpo_sft_weight * nll, {**aux, 'chosen_nll': nll}
        return loss, aux
    elif teacher_model is None:
      loss_fn = make_loss_fn(model)
    else:
      def loss_fn(params, batch, rng):
        rngs = None if rng is None else {'dropout': rng}
        student, _ = model.apply({'params': params}, batch['inputs'],
                                 deterministic=rng is None, rngs=rngs)
        teacher, _ = teacher_model.apply({'params': state['teacher']}, batch['inputs'])
        return kd_loss(student, teacher, batch['targets'], mask=batch.get('mask'),
                       temperature=float(distill_cfg.temperature), alpha=float(distill_cfg.alpha))
    if lora_cfg is None:
      fn = loss_fn
    else:
      def fn(adapters, batch, rng):
        with lora_lib.adapters(adapters, lora_cfg, rng, deterministic=rng is None):
          return loss_fn(state['params'], batch, rng)
    (loss, aux), grads = gradients.value_and_grad(fn, state[key], batch, rng, grad_accum_steps)
    updates, opt_state = tx.update(grads, state['opt_state'], state[key])
    metrics = {'loss': loss, 'grad_norm': optax.tree.norm(grads),
               'lr': schedule(state['step'])}
    if teacher_model is not None:
      metrics.update({'kd_kl': aux['kl'], 'kd_ce': aux['ce']})
    if dpo_beta is not None:
      metrics.update({f'dpo_{k}': v for k, v in aux.items()})
    return {**state, key: optax.apply_updates(state[key], updates), 'opt_state': opt_state,
            'step': state['step'] + 1}, metrics

  return train_step


def inference_params(config: ml_collections.ConfigDict, state: dict[str, Any]) -> Any:
  """The params to evaluate or sample with: LoRA adapters merged into the base."""
  lcfg = lora_config(config)
  if lcfg is None or 'lora' not in state:
    return state['params']
  return jax.jit(lambda p, a: lora_lib.merge(p, a, lcfg))(state['params'], state['lora'])


def _load_data(config, workdir):
  """(model, tokenizer, pretrained, teacher, train_iter, val batches, chars/token, prompt)."""
  tc, ec = config.train, config.eval
  block = config.data.block_size
  local_batch = mesh_lib.local_batch_size(tc.batch_size)
  if is_dpo(config):
    if not config.model.get('init_from'):
      raise ValueError("data.source='dpo_jsonl' needs model.init_from (the policy to improve "
                       "and the frozen reference), e.g. 'workdir:runs/shakespeare'.")
    rows = preferences.read_jsonl(config.data.path)
    model, tokenizer, pretrained, teacher = resolve_model(config, workdir, None)
    train_ex, val_ex = sft.split(preferences.encode_pairs(rows, tokenizer, block,
                                                          config.data.path),
                                 config.data.val_fraction)
    train_iter = sft.make_train_iterator(train_ex, batch_size=local_batch, seed=config.seed)
    val = sft.eval_batches(val_ex, ec.batch_size) if len(val_ex['inputs']) else []
    return model, tokenizer, pretrained, teacher, train_iter, val, 1.0, rows[-1]['prompt']
  if config.data.source == 'sft_jsonl':
    rows = sft.read_jsonl(config.data.path)
    text = '\n'.join(json.dumps(r, ensure_ascii=False) for r in rows)
    model, tokenizer, pretrained, teacher = resolve_model(config, workdir, text)
    train_ex, val_ex = sft.split(sft.encode_examples(rows, tokenizer, block, config.data.path),
                                 config.data.val_fraction)
    train_iter = sft.make_train_iterator(train_ex, batch_size=local_batch, seed=config.seed)
    val = sft.eval_batches(val_ex, ec.batch_size) if len(val_ex['inputs']) else []
    prompt = sft.prompt_and_response(rows[-1], tokenizer, config.data.path)[0]
    return model, tokenizer, pretrained, teacher, train_iter, val, 1.0, prompt
  text = text_sources.load_text(config.data)
  model, tokenizer, pretrained, teacher = resolve_model(config, workdir, text)
  tokens = tokenizer.encode(text)
  train_tokens, val_tokens = sequences.split_train_val(
      tokens, config.data.val_fraction, block_size=block)
  train_iter = sequences.make_train_iterator(
      train_tokens, block_size=block, batch_size=local_batch,
      stride=config.data.get('stride') or block, seed=config.seed)
  val = (sequences.eval_batches(val_tokens, block_size=block, batch_size=ec.batch_size,
                                max_batches=ec.num_batches) if len(val_tokens) else [])
  chars_per_token = (len(tokenizer.decode(val_tokens)) / len(val_tokens)) if len(val_tokens) else 1.0
  prompt = tokenizer.decode(val_tokens[:1] if len(val_tokens) else tokens[:1])
  return model, tokenizer, pretrained, teacher, train_iter, val, chars_per_token, prompt


def build_task(config: ml_collections.ConfigDict, workdir: str) -> loop.Task:
  tc = config.train
  block = config.data.block_size
  (model, tokenizer, pretrained, teacher, train_iter, val_batches, chars_per_token,
   prompt) = _load_data(config, workdir)
  teacher_model = teacher[0] if teacher else None
  init_state, (tx, schedule) = state_fns(config, model, teacher_model)
  # Quantization-aware training: the loss (and validation) see fake-quantized weights.
  qat_kind = config.model.get('qat') or ''
  train_model = qat.wrap(model, qat_kind, config.model.get('qat_tile') or 32) if qat_kind else model
  dpo_beta = float(config.dpo.beta) if is_dpo(config) else None
  train_step = make_train_step(train_model, tx, schedule, int(tc.get('grad_accum_steps', 1)),
                               lora_config(config), teacher_model, config.get('distill'),
                               dpo_beta, float(config.dpo.get('sft_weight', 0.0)) if dpo_beta
                               is not None else 0.0)

  ec = config.eval
  eval_step = _eval_fn(train_model)
  bleu_rows = _read_bleu_file(ec.bleu_file) if ec.get('bleu_file') else []
  prompt = ec.get('sample_prompt') or prompt

  def evaluate(state, step):
    params = inference_params(config, state)
    results: dict[str, Any] = {}
    if val_batches and dpo_beta is not None:
      results.update(_dpo_eval(train_model, config, state, params, val_batches, dpo_beta))
    elif val_batches:
      # Dispatch every batch, then one transfer: no host round-trip per batch.
      sums = jax.device_get([eval_step(params, batch) for batch in val_batches])
      loss = sum(float(s) for s, _ in sums) / sum(float(c) for _, c in sums)
      results.update({'val/loss': loss, 'val/perplexity': text_metrics.perplexity(loss),
                      'val/bits_per_token': text_metrics.bits_per_token(loss),
                      'val/bits_per_char': text_metrics.bits_per_char(loss, chars_per_token)})
    rng = jax.random.fold_in(jax.random.key(config.seed + 1), step)
    if bleu_rows:
      results['val/bleu'] = bleu_of_continuations(model, params, tokenizer, bleu_rows, rng=rng)
    if ec.sample_tokens:
      out = generate(model, params, tokenizer.encode(prompt)[None], num_tokens=ec.sample_tokens,
                     rng=rng, temperature=ec.temperature, top_k=ec.top_k)
      results['sample'] = tokenizer.decode(out[0])
    return results

  return loop.Task(init_state=init_state, train_step=train_step, train_iter=train_iter,
                   evaluate=evaluate, tokens_per_step=tc.batch_size * block,
                   examples_per_step=tc.batch_size,
                   flops_per_step=model.config.flops_per_token(block) * tc.batch_size * block,
                   init_args=(pretrained, teacher[1] if teacher else None))


def _dpo_eval(model, config, state, params, val_batches, beta) -> dict[str, float]:
  """Validation DPO loss and preference accuracy (chosen more likely than rejected, as
  implicit rewards), against the same reference as training."""
  logps = jax.jit(make_dpo_logps(model))
  ref = state['reference'] if 'reference' in state else state['params']
  pol = np.concatenate([np.asarray(logps(params, b)) for b in val_batches])
  refl = np.concatenate([np.asarray(logps(ref, b)) for b in val_batches])
  loss, aux = dpo.dpo_loss(pol[:, 0], pol[:, 1], refl[:, 0], refl[:, 1], beta)
  return {'val/dpo_loss': float(loss), 'val/reward_accuracy': float(aux['reward_accuracy']),
          'val/reward_margin': float(aux['reward_margin']),
          'val/logp_chosen_minus_rejected': float(np.mean(pol[:, 0] - pol[:, 1]))}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Any:
  return workdir_lib.run(config, workdir, build_task)


# =========================== Sampling from a workdir ===================================

def load_workdir(workdir: str, step: int | None = None):
  """(config, model, params, tokenizer) of a trained LM workdir (newest checkpoint)."""
  config = workdir_lib.load_config(workdir, 'lm')
  tokenizer = tokenizers.load_tokenizer(workdir)
  if os.path.exists(os.path.join(workdir, MODEL_CONFIG)):
    model = Transformer(_model_config_of(workdir))
  else:  # workdirs written before model_config.json existed
    model = make_model(config, tokenizer.vocab_size)
  state = _restore(config, workdir, model, step)
  return config, model, inference_params(config, state), tokenizer


def _model_config_of(workdir: str) -> TransformerConfig:
  with open(os.path.join(workdir, MODEL_CONFIG)) as f:
    return TransformerConfig(**json.load(f))


def _restore(config, workdir: str, model: Transformer, step: int | None = None):
  """The newest (or `step`) state of an LM workdir, including a distillation teacher's
  frozen params (its architecture read from the source's config, not its weights)."""
  spec = (config.get('distill') or {}).get('teacher') or ''
  if not spec:
    init_state, _ = state_fns(config, model)
    return workdir_lib.restore_state(workdir, init_state, step)[0]
  t_cfg = (_model_config_of(spec[len('workdir:'):]) if spec.startswith('workdir:')
           else sources.config_of(spec))
  teacher_model = Transformer(dataclasses.replace(t_cfg, scan_layers=False, remat='none'))
  t_abstract = jax.eval_shape(lambda: nn.unbox(teacher_model.init(
      jax.random.key(0), jnp.zeros((1, 1), jnp.int32))['params']))
  init_state, _ = state_fns(config, model, teacher_model)
  return workdir_lib.restore_state(workdir, init_state, step, (None, t_abstract))[0]


def export_hf(workdir: str, out_dir: str) -> None:
  """The workdir's newest checkpoint (LoRA merged) as an HF checkpoint directory, with the
  tokenizer's files when it has an HF form, and the adapters alone in adapter.safetensors."""
  config, model, params, tokenizer = load_workdir(workdir)
  hf.export_hf(model.config, params, out_dir)
  if hasattr(tokenizer, 'save_hf'):
    tokenizer.save_hf(out_dir)
  lcfg = lora_config(config)
  if lcfg is not None:
    state = _restore(config, workdir, model)
    lora_lib.save(state['lora'], lcfg, os.path.join(out_dir, 'adapter.safetensors'))


def sample(workdir: str, prompt: str, *, num_tokens: int, num_samples: int = 1,
           temperature: float = 0.8, top_k: int = 0, top_p: float = 1.0, seed: int = 0
           ) -> list[str]:
  _, model, params, tokenizer = load_workdir(workdir)
  ids = tokenizer.encode(prompt)
  if len(ids) == 0:
    raise ValueError('--prompt is empty after tokenisation; give at least one character.')
  prompt_BP = np.repeat(ids[None], num_samples, axis=0)
  out = generate(model, params, prompt_BP, num_tokens=num_tokens, rng=jax.random.key(seed),
                 temperature=temperature, top_k=top_k, top_p=top_p)
  return [tokenizer.decode(row) for row in out]


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
            f'{", tokenizer" if os.path.exists(os.path.join(f.export_hf, "tokenizer.json")) else ""}).')
      return
    run(argv)

  app.run(main, flags_parser=cli.parse_flags)
