"""Defaults shared by the LM configs: a small GPT-2-shaped char model.

Each config file imports this, overrides a few fields and applies `runlocal` last.
"""
import ml_collections

from configs import common


def _optional(kind):
  """A None default that `--config.x=value` can still override with a `kind` value."""
  return ml_collections.FieldReference(None, field_type=kind)


def get_base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = 'lm'
  c.seed = 0
  # The loss (genai/objectives/lm_objectives.py): 'next_token' | 'sft' | 'dpo' | 'distill';
  # '' = from the data and teacher: data.source 'dpo_jsonl' -> 'dpo', a distill.teacher ->
  # 'distill', 'sft_jsonl' -> 'sft', else 'next_token'. One that contradicts them is an error.
  c.objective = ''

  c.data = ml_collections.ConfigDict()
  c.data.source = 'embedded'          # 'embedded' | 'files' | 'tfds' | 'sft_jsonl' (data.path:
                                      # {"prompt","response"} or {"messages"} rows; loss on
                                      # responses only) | 'dpo_jsonl' ({"prompt","chosen",
                                      # "rejected"} rows; DPO, needs model.init_from)
                                      # | 'prepared' (data.path: a folder written by python
                                      # -m genai.data.prepare, streamed: docs/data_at_scale.md)
  c.data.path = ''                    # file, glob or comma list, for source='files'
  c.data.val_split = 'validation'     # source='prepared': the split validated on ('' = none)
  c.data.num_workers = 0              # source='prepared': grain worker processes
  c.data.prefetch = 0                 # source='prepared': batches prefetched per worker
  c.data.tfds_name = ''
  c.data.tfds_split = 'train'
  c.data.tfds_text_key = 'text'
  c.data.tfds_data_dir = ''
  c.data.max_examples = 0             # 0 = all examples of a TFDS split
  c.data.val_fraction = 0.1
  c.data.block_size = 64
  c.data.stride = 1                   # 1 = every window (random offsets); block_size = packed
  # Bias mitigation of the training text, once before tokenization (embedded/files/tfds; the
  # held-out tail stays as it is): genai/safety/mitigation.py, docs/safety.md. Off by default.
  c.data.mitigation = ml_collections.ConfigDict(dict(
      split='paragraphs',             # documents: 'paragraphs' | 'lines' | 'file'
      dedup=False, dedup_threshold=0.8,  # drop near duplicates (char 5-gram Jaccard >= this)
      rebalance='', rebalance_strategy='balanced', rebalance_max_weight=0.0,  # by 'gender' ...
      cda='', cda_mode='augment', cda_probability=0.5,  # swap list 'gender' or a TSV file
      groups='', seed=0))             # identity groups JSON ('' = the audit's defaults)

  c.tokenizer = ml_collections.ConfigDict()
  c.tokenizer.name = 'char'           # 'char' | 'sentencepiece' | 'gpt2_bpe' | 'hf'
  c.tokenizer.vocab_size = 1024       # sentencepiece only
  c.tokenizer.sp_model_type = 'bpe'
  c.tokenizer.sp_character_coverage = 0.9995  # sentencepiece: share of characters covered
  c.tokenizer.bpe_ranks_path = ''     # gpt2_bpe: path to gpt2.tiktoken
  c.tokenizer.hf_tokenizer_path = ''  # hf: an HF tokenizer.json or a .gguf model file

  c.model = ml_collections.ConfigDict()
  c.model.init_from = ''              # '' | 'hf:DIR' | 'gguf:FILE' | 'smollm2' | 'workdir:DIR':
                                      # start from pretrained weights; the architecture and
                                      # tokenizer then come from there, and only dropout,
                                      # dtype, remat, scan_layers, max_len of this block apply
  c.model.arch = 'gpt2'               # 'gpt2' | 'llama'
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.d_model = 128
  c.model.num_kv_heads = _optional(int)  # None = num_heads; fewer = grouped-query attention
  c.model.d_ff = _optional(int)          # None = 4*d_model (gelu) or ~8/3*d_model (swiglu)
  c.model.mlp = _optional(str)          # None = the arch default (gpt2: gelu, llama: swiglu);
                                         # 'gelu_erf' = exact GELU (nanoGPT, torch nn.GELU)
  c.model.use_bias = _optional(bool)     # None = the arch default (gpt2: True, llama: False)
  c.model.max_len = _optional(int)       # None = data.block_size; the longest sequence the
                                         # model takes (gpt2: rows of the position table)
  c.model.dropout = 0.0
  c.model.dtype = 'float32'            # compute dtype ('bfloat16' on GPU/TPU); params stay float32
  c.model.remat = 'none'               # 'none' | 'full' | 'dots' | 'dots_no_batch'
  c.model.scan_layers = False          # nn.scan over layers (compile time independent of depth)
  c.model.qat = ''                     # '' | 'int8' | 'int4': quantization-aware training (qwix)
  c.model.qat_tile = 32                # int4 QAT: input rows per scale

  c.optimizer = common.optimizer_config(
      b2=0.99, weight_decay=0.1, grad_clip_norm=1.0, warmup_steps=100, end_learning_rate=1e-4)

  c.parallel = common.parallel_config()
  # freeze: regex over parameter paths ('layer_0/attn/qkv/kernel'); matches get no updates.
  c.train = common.train_config(batch_size=12, num_steps=2000, grad_accum_steps=1,
                                steps_per_call=8, eval_every=500, checkpoint_every=500,
                                freeze='')

  # LoRA (rank 0 = off): adapters on the dense layers whose module path matches `targets`;
  # the base model is frozen, and --export_hf merges the adapters into it.
  c.lora = ml_collections.ConfigDict(dict(rank=0, alpha=16.0, dropout=0.0,
                                          targets=r'attn/(qkv|out)$'))

  # Pruning during training (genai/compress/pruning.py), kind 'none' = off: 'magnitude'
  # (global or per-layer threshold, sparsity reached on a cubic schedule from begin_step to
  # end_step; None = one shot at begin_step, then recovery) or 'nm' (n of every m inputs).
  c.prune = ml_collections.ConfigDict(dict(
      kind='none', sparsity=0.5, scope='global', n=2, m=4, begin_step=0,
      end_step=_optional(int), every=100, power=3.0, targets=r'kernel$'))

  # Distillation: teacher = 'workdir:DIR' | 'hf:DIR' | 'gguf:FILE' | 'smollm2' ('' = off).
  # The student is config.model over the teacher's tokenizer; loss = alpha * T^2 * KL +
  # (1 - alpha) * cross-entropy, with the teacher's logits computed in the same step.
  c.distill = ml_collections.ConfigDict(dict(teacher='', temperature=2.0, alpha=0.5))
  # DPO (data.source='dpo_jsonl'): beta scales the implicit reward log pi - log pi_ref;
  # sft_weight adds that times the chosen responses' NLL per token (0 = plain DPO).
  c.dpo = ml_collections.ConfigDict(dict(beta=0.1, sft_weight=0.0))

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 64
  c.eval.num_batches = 20             # 0 = the whole validation split
  c.eval.bleu_file = ''               # JSONL of {"prompt", "reference"} for BLEU
  c.eval.sample_prompt = ''           # '' = the first token of the validation split
  c.eval.sample_tokens = 200
  c.eval.temperature = 0.8
  c.eval.top_k = 0
  return c


def apply_runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A tiny mode that runs a few real steps in seconds (tests, smoke runs)."""
  c.model.num_layers = 1
  c.model.d_model = 32
  c.model.num_heads = 2
  if c.model.get('num_kv_heads'):
    c.model.num_kv_heads = 1
  c.data.block_size = 16
  c.data.val_fraction = max(c.data.val_fraction, 0.1)
  c.train.batch_size = 4
  c.train.num_steps = 6
  c.train.steps_per_call = 2
  c.train.log_every = 2
  c.train.eval_every = 3
  c.train.checkpoint_every = 3
  c.optimizer.warmup_steps = 2
  c.eval.batch_size = 4
  c.eval.num_batches = 2
  c.eval.sample_tokens = 8
  if c.tokenizer.name == 'sentencepiece':
    c.tokenizer.vocab_size = 300
  return c
