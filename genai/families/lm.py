"""The LM family (a GPT-2 or Llama-shaped transformer): its state layout and workdir format.

experiments/lm.py trains it; everything here reads a trained workdir back, without the
experiment script: `load_workdir`, `sample`, `text_loss`, `export_hf`, and what serving
(`serving`) and export (`export_signatures`) need.

A workdir holds config.json, model_config.json (the TransformerConfig, so a model whose
architecture came from a pretrained source is rebuilt without it), the tokenizer's files
and checkpoints/ of the state
  {'params', ['lora'], ['teacher'], ['reference'], 'opt_state', 'step'}
laid out by `state_fns`: 'lora' the adapters of a LoRA run (then the optimizer's tree; the
base 'params' stay frozen), 'teacher' a distillation teacher's frozen params, 'reference'
DPO's frozen starting weights (under LoRA the base params are the reference).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from genai import paths
from genai import families
from genai.compress import pruning
from genai.compress import qat
from genai.data import sequences
from genai.data import tokenizers
from genai.models import lora as lora_lib
from genai.models.transformer import Transformer, TransformerConfig, init_cache
from genai.objectives import lm_objectives
from genai.objectives.lm import make_loss_fn
from genai.parallel import in_flight
from genai.parallel import sharding
from genai.pretrained import adapters as adapters_io
from genai.pretrained import hf
from genai.pretrained import sources
from genai.sample.decode import generate, sample_token
from genai.train import optimizers
from genai.train import workdir as workdir_lib

MODEL_CONFIG = 'model_config.json'


# =========================== The model and its sources =================================

def make_model(config: ml_collections.ConfigDict, vocab_size: int) -> Transformer:
  """The transformer of `config.model` over `vocab_size` tokens (max_len: data.block_size)."""
  model_cfg = {k: v for k, v in config.model.items() if k not in ('init_from', 'qat', 'qat_tile')}
  if model_cfg.get('max_len') is None:
    model_cfg['max_len'] = config.data.block_size
  if model_cfg['max_len'] < config.data.block_size:
    raise ValueError(f'model.max_len={model_cfg["max_len"]} < data.block_size='
                     f'{config.data.block_size}; raise model.max_len.')
  return Transformer(TransformerConfig.from_dict({**model_cfg, 'vocab_size': vocab_size}))


def _model_config_of(workdir: str) -> TransformerConfig:
  return TransformerConfig(**paths.read_json(paths.join(workdir, MODEL_CONFIG)))


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


def teacher_model_of(t_cfg: TransformerConfig) -> Transformer:
  """A distillation teacher: unscanned and without remat (it only runs forward)."""
  return Transformer(dataclasses.replace(t_cfg, scan_layers=False, remat='none'))


# =========================== What trains: state and its transforms =====================

def lora_config(config: ml_collections.ConfigDict) -> lora_lib.LoraConfig | None:
  lc = config.get('lora')
  if not lc or not lc.get('rank'):
    return None
  return lora_lib.LoraConfig(rank=int(lc.rank), alpha=float(lc.alpha),
                             dropout=float(lc.dropout), targets=str(lc.targets))


def prune_config(config: ml_collections.ConfigDict) -> pruning.PruneConfig | None:
  pc = config.get('prune')
  if not pc or pc.get('kind', 'none') == 'none':
    return None
  return pruning.PruneConfig(**pc.to_dict())


@dataclasses.dataclass(frozen=True)
class Training:
  """The transforms around the objective's loss, composed from the config in one place
  (`training`): the optimizer `tx` (with train.freeze and pruning as optax transforms),
  LoRA (the trainable tree is the adapters, state['lora'], over the frozen base) and QAT
  (the loss runs a fake-quantizing wrapper of the model)."""
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  objective: str
  lora: lora_lib.LoraConfig | None = None
  qat: str = ''
  qat_tile: int = 32

  @property
  def key(self) -> str:
    """The state entry the optimizer updates."""
    return 'params' if self.lora is None else 'lora'

  def wrap(self, model: Transformer) -> Any:
    """The model the loss runs: QAT fake-quantizes its weights, LoRA adds the adapters of
    `forward_params`' LoraParams (plain params run the model alone)."""
    if self.qat:
      model = qat.wrap(model, self.qat, self.qat_tile)
    return model if self.lora is None else lora_lib.wrap(model, self.lora)

  def forward_params(self, state: dict[str, Any], trained: Any) -> Any:
    """What the loss's model takes as params, given the trainable tree `trained`."""
    return trained if self.lora is None else lora_lib.LoraParams(state['params'], trained)

  def frozen(self, state: dict[str, Any]) -> dict[str, Any]:
    """The objective's frozen params: the teacher, or DPO's reference (under LoRA, the base)."""
    out = {k: state[k] for k in ('teacher', 'reference') if k in state}
    if self.objective == 'dpo' and 'reference' not in out:
      out['reference'] = state['params']
    return out


def training(config: ml_collections.ConfigDict) -> Training:
  """The Training of `config`: its objective (lm_objectives.objective_of), optimizer, LoRA,
  pruning and QAT; a clear error for combinations that cannot work."""
  tx, schedule = optimizers.make_optimizer(config.optimizer, config.train.num_steps)
  if config.train.get('freeze'):
    tx = optimizers.freeze(tx, config.train.freeze)
  lcfg, pcfg = lora_config(config), prune_config(config)
  if pcfg is not None:
    if lcfg is not None:
      raise ValueError('prune.kind and lora.rank cannot be combined: LoRA freezes the weights '
                       'pruning would zero; merge the adapters first (--export_hf), then prune.')
    tx = optax.chain(tx, pruning.prune(pcfg))
  return Training(tx, schedule, lm_objectives.objective_of(config), lcfg,
                  config.model.get('qat') or '', config.model.get('qat_tile') or 32)


def _with_values(boxed: Any, values: Any) -> Any:
  """`boxed` (params with logical axis names) holding `values` instead."""
  is_box = lambda x: isinstance(x, nn.LogicallyPartitioned)
  return jax.tree.map(lambda b, v: b.replace_boxed(v) if is_box(b) else v, boxed, values,
                      is_leaf=is_box)


def state_fns(config: ml_collections.ConfigDict, model: Transformer,
              teacher_model: Transformer | None = None):
  """init_state(rng, pretrained=None, teacher=None) -> the state above, and its Training.
  Frozen entries (the base under LoRA, teacher, reference) have no optimizer state."""
  t = training(config)

  def init_state(rng, pretrained=None, teacher=None):
    tokens = jnp.zeros((1, config.data.block_size), jnp.int32)
    params = model.init(rng, tokens)['params']
    if pretrained is not None:
      params = _with_values(params, pretrained)
    state = {'params': params, 'step': jnp.zeros((), jnp.int32)}
    if teacher is not None:  # boxed like the teacher's own init, so it is sharded too
      state['teacher'] = _with_values(teacher_model.init(rng, tokens)['params'], teacher)
    if t.objective == 'dpo' and t.lora is None:  # DPO's frozen reference: the start
      state['reference'] = params
    if t.lora is not None:
      state['lora'] = lora_lib.init(params, t.lora, jax.random.fold_in(rng, 1))
    return {**state, 'opt_state': t.tx.init(state[t.key])}

  return init_state, t


def inference_params(config: ml_collections.ConfigDict, state: dict[str, Any]) -> Any:
  """The params to evaluate or sample with: LoRA adapters merged into the base."""
  lcfg = lora_config(config)
  if lcfg is None or 'lora' not in state:
    return state['params']
  return jax.jit(lambda p, a: lora_lib.merge(p, a, lcfg))(state['params'], state['lora'])


# =========================== Reading a workdir =========================================

def _restore(config, workdir: str, model: Transformer, step: int | None = None):
  """The newest (or `step`) state of an LM workdir, including a distillation teacher's
  frozen params (its architecture read from the source's config, not its weights)."""
  spec = (config.get('distill') or {}).get('teacher') or ''
  if not spec:
    init_state, _ = state_fns(config, model)
    return workdir_lib.restore_state(workdir, init_state, step)[0]
  teacher_model = teacher_model_of(_model_config_of(spec[len('workdir:'):])
                                   if spec.startswith('workdir:') else sources.config_of(spec))
  t_abstract = jax.eval_shape(lambda: nn.unbox(teacher_model.init(
      jax.random.key(0), jnp.zeros((1, 1), jnp.int32))['params']))
  init_state, _ = state_fns(config, model, teacher_model)
  return workdir_lib.restore_state(workdir, init_state, step, (None, t_abstract))[0]


def load_workdir(workdir: str, step: int | None = None):
  """(config, model, params, tokenizer) of a trained LM workdir (newest or `step`'s
  checkpoint; LoRA adapters merged)."""
  config = workdir_lib.load_config(workdir, 'lm')
  tokenizer = tokenizers.load_tokenizer(workdir)
  if (paths.path(workdir) / MODEL_CONFIG).exists():
    model = Transformer(_model_config_of(workdir))
  else:  # workdirs written before model_config.json existed
    model = make_model(config, tokenizer.vocab_size)
  state = _restore(config, workdir, model, step)
  return config, model, inference_params(config, state), tokenizer


def sample(workdir: str, prompt: str, *, num_tokens: int, num_samples: int = 1,
           temperature: float = 0.8, top_k: int = 0, top_p: float = 1.0, seed: int = 0
           ) -> list[str]:
  """`num_samples` continuations of `prompt` (prompt included) from the newest checkpoint."""
  _, model, params, tokenizer = load_workdir(workdir)
  ids = tokenizer.encode(prompt)
  if len(ids) == 0:
    raise ValueError('--prompt is empty after tokenisation; give at least one character.')
  prompt_BP = np.repeat(ids[None], num_samples, axis=0)
  out = generate(model, params, prompt_BP, num_tokens=num_tokens, rng=jax.random.key(seed),
                 temperature=temperature, top_k=top_k, top_p=top_p)
  return [tokenizer.decode(row) for row in out]


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
    adapters_io.save(state['lora'], lcfg, paths.join(out_dir, 'adapter.safetensors'))


def serving(workdir: str, step: int | None, max_batch: int) -> families.TextServing:
  """The model, params (LoRA merged) and tokenizer of `step`'s checkpoint (None: newest)."""
  del max_batch  # text batches are the server's
  _, model, params, tokenizer = load_workdir(workdir, step)
  return families.TextServing(model, params, tokenizer)


# =========================== Scores ====================================================

def eval_step_fn(model: Any):
  """jitted (params, batch) -> (nll sum, counted tokens) of the deterministic forward."""
  loss_fn = make_loss_fn(model)

  @jax.jit
  def eval_step(params, batch):
    _, aux = loss_fn(params, batch, None, deterministic=True)
    return aux['nll_sum'], aux['num_tokens']

  return eval_step


def mean_loss(eval_step, params: Any, batches) -> float:
  """Mean next-token loss (nats per counted token) of `params` over `batches`, with an
  `eval_step_fn` (made once: it compiles once)."""
  # Batches split over a split CPU host's devices (every core works, one all-reduce each);
  # results fetched once per window of calls, not per batch (genai/parallel/in_flight.py).
  sums = in_flight.fetch_windowed(
      lambda batch: eval_step(params, sharding.split_local_batch(batch)), batches)
  return sum(float(s) for s, _ in sums) / sum(float(c) for _, c in sums)


def text_loss(model: Transformer, params, tokenizer, text: str, *, block_size: int,
              batch_size: int = 16) -> float:
  """Mean next-token loss (nats) over every non-overlapping window of `text`: a fixed
  held-out score for comparing two models with the same tokenizer."""
  tokens = tokenizer.encode(text)
  if len(tokens) < block_size + 1:
    raise ValueError(f'the held-out text has {len(tokens)} tokens; it needs at least '
                     f'block_size + 1 = {block_size + 1}.')
  return mean_loss(eval_step_fn(model), params, sequences.eval_batches(
      tokens, block_size=block_size, batch_size=batch_size, max_batches=0))


def read_bleu_file(path: str) -> list[dict[str, str]]:
  """The {"prompt", "reference"} rows of a JSONL file (eval.bleu_file)."""
  if not paths.path(path).exists():
    raise FileNotFoundError(f'eval.bleu_file={path!r} does not exist; give a JSONL file with '
                            'one {"prompt": ..., "reference": ...} object per line.')
  rows = []
  with paths.path(path).open() as f:
    for n, line in enumerate(f, 1):
      if line.strip():
        row = json.loads(line)
        if not {'prompt', 'reference'} <= set(row):
          raise ValueError(f'{path}:{n} needs "prompt" and "reference" keys, got {sorted(row)}.')
        rows.append(row)
  return rows


def greedy_continuations(model, params, tokenizer, rows, *, rng) -> list[str]:
  """Greedy continuation of each row's prompt, as long as its reference (to score with
  BLEU against the references)."""
  hyps = []
  for row in rows:
    prompt = tokenizer.encode(row['prompt'])[None]
    n = max(len(tokenizer.encode(row['reference'])), 1)
    out = generate(model, params, prompt, num_tokens=n, rng=rng, temperature=0.0)
    hyps.append(tokenizer.decode(out[0, prompt.shape[1]:]))
  return hyps


# =========================== Export signatures =========================================
# Shapes: B batch (fixed at export), P prompt length (fixed; shorter prompts are right-padded
# and their true lengths passed), N tokens generated, S cache length, L layers, K KV heads,
# D head dim, V vocabulary.
#
# 'decode_step' (also the one TFLite converts): one token per row against a KV cache that
# the caller keeps, as a serving loop or an on-device app would:
#   tokens [B, 1] int32, positions [B, 1] int32 (the slot each token is written to),
#   cache_k, cache_v [L, B, K, S, D] float32 (genai.models.transformer.init_cache's layout)
#   -> logits [B, V] float32, cache_k, cache_v (updated).
#   Start from zero caches and feed the prompt one token at a time (or prefill with the
#   whole-generation signature's model in JAX); position p attends to cache slots 0..p.
#
# 'generate' (also 'serving_default'): prefill and the whole sampling loop in one call,
# mirroring genai.sample.decode._decode_chunk (one lax.scan; the cache never leaves the call):
#   prompt [B, P] int32 (row b's tokens in [:, :prompt_lengths[b]], the rest any id),
#   prompt_lengths [B] int32 in [1, P], temperature [] float32 (0 = greedy),
#   top_p [] float32 (1 = off), seed [] int32
#   -> tokens [B, N] int32 (the N new tokens of each row, without the prompt).
#   P + N must be <= max_len (no chunked continuation as `generate` does past the context).
#   Right padding needs no attention mask: row b decodes its i-th new token at position
#   prompt_lengths[b] + i, overwriting the pad's cache slot before any query can see it
#   (keys at positions beyond the query's are masked causally).
# Sampling draws from jax.random.key(seed) (threefry), so a SavedModel run reproduces JAX's
# samples for the same seed; greedy tokens equal `genai.sample.decode.generate`'s.

def decode_step_fn(model: Transformer):
  """The 'decode_step' function: (params, inputs) -> {'logits', 'cache_k', 'cache_v'}."""
  def fn(params, inputs):
    # The signature keeps every layer in one tensor; the model takes one per layer.
    cache = {n: inputs[f'cache_{n}'] if model.config.scan_layers else tuple(inputs[f'cache_{n}'])
             for n in ('k', 'v')}
    logits_B1V, cache = model.apply({'params': params}, inputs['tokens'],
                                    positions_BT=inputs['positions'], cache=cache)
    return {'logits': logits_B1V[:, 0], 'cache_k': jnp.stack(cache['k']),
            'cache_v': jnp.stack(cache['v'])}
  return fn


def generate_fn(model: Transformer, num_tokens: int, top_k: int = 0):
  """The 'generate' function: (params, inputs) -> {'tokens': [B, num_tokens] int32}."""
  def fn(params, inputs):
    prompt_BP = inputs['prompt']
    lengths_B = jnp.clip(inputs['prompt_lengths'], 1, prompt_BP.shape[1])  # out of range: clipped
    temperature, top_p = inputs['temperature'], inputs['top_p']
    rng = jax.random.key(inputs['seed'])
    b, p = prompt_BP.shape
    cache = init_cache(model.config, b, p + num_tokens, dtype=jnp.dtype(model.config.dtype))
    positions_BP = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
    logits_BPV, cache = model.apply({'params': params}, prompt_BP, positions_BT=positions_BP,
                                    cache=cache)
    last_BV = jnp.take_along_axis(logits_BPV, (lengths_B - 1)[:, None, None], axis=1)[:, 0]
    first_B = sample_token(last_BV, jax.random.fold_in(rng, 0), temperature, top_k, top_p)

    def step(carry, i):
      token_B, cache = carry
      pos_B1 = (lengths_B + i)[:, None]
      logits_B1V, cache = model.apply({'params': params}, token_B[:, None], positions_BT=pos_B1,
                                      cache=cache)
      nxt_B = sample_token(logits_B1V[:, 0], jax.random.fold_in(rng, i + 1), temperature,
                           top_k, top_p)
      return (nxt_B, cache), nxt_B

    _, rest_NB = jax.lax.scan(step, (first_B, cache), jnp.arange(num_tokens - 1))
    return {'tokens': jnp.concatenate([first_B[:, None], rest_NB.T], axis=1)}
  return fn


def signatures(model: Transformer, *, batch_size: int = 1, prompt_len: int = 32,
               num_tokens: int = 64, cache_len: int | None = None, top_k: int = 0
               ) -> dict[str, families.Signature]:
  """{'decode_step', 'generate'} with the shapes above; raises on shapes the model can't take."""
  cfg = model.config
  cache_len = cache_len or cfg.max_len
  for name, value in (('batch_size', batch_size), ('prompt_len', prompt_len),
                      ('num_tokens', num_tokens), ('cache_len', cache_len)):
    if value < 1:
      raise ValueError(f'--{name}={value} must be >= 1.')
  if cache_len > cfg.max_len:
    raise ValueError(f'--cache_len={cache_len} exceeds the model context max_len={cfg.max_len}.')
  if prompt_len + num_tokens > cfg.max_len:
    raise ValueError(f'--prompt_len={prompt_len} + --num_tokens={num_tokens} exceeds the model '
                     f'context max_len={cfg.max_len}; lower one of them.')
  if not 0 <= top_k <= cfg.vocab_size:
    raise ValueError(f'--top_k={top_k} must be in [0, {cfg.vocab_size}] (0 = off).')
  b, f32, i32 = batch_size, jnp.float32, jnp.int32
  cache = jax.ShapeDtypeStruct((cfg.num_layers, b, cfg.num_kv_heads, cache_len, cfg.head_dim), f32)
  spec = jax.ShapeDtypeStruct
  return {
      'decode_step': families.Signature(decode_step_fn(model), {
          'tokens': spec((b, 1), i32), 'positions': spec((b, 1), i32),
          'cache_k': cache, 'cache_v': cache}),
      'generate': families.Signature(generate_fn(model, num_tokens, top_k), {
          'prompt': spec((b, prompt_len), i32), 'prompt_lengths': spec((b,), i32),
          'temperature': spec((), f32), 'top_p': spec((), f32), 'seed': spec((), i32)},
          tflite=False),
  }


def export_signatures(workdir: str, *, batch_size: int = 1, prompt_len: int = 32,
                      num_tokens: int = 64, cache_len: int | None = None, top_k: int = 0,
                      steps: int | None = None
                      ) -> tuple[Any, dict[str, families.Signature], str]:
  """(params, {'decode_step', 'generate'}, 'generate') of the newest checkpoint (LoRA
  merged); `steps` (a diffusion option) does not apply."""
  del steps
  _, model, params, _ = load_workdir(workdir)
  return params, signatures(model, batch_size=batch_size, prompt_len=prompt_len,
                            num_tokens=num_tokens, cache_len=cache_len, top_k=top_k), 'generate'
