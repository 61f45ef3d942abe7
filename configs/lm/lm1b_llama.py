"""One Billion Word benchmark (TFDS `lm1b`) with a Llama-shaped model and a sentencepiece
tokenizer, the whole split streamed from shards prepared once (docs/data_at_scale.md):
  python -m genai.data.prepare --out data/lm1b --tfds lm1b --tfds_split train \
      --tokenizer sentencepiece --vocab_size 8192
  python -m genai.data.prepare --out data/lm1b --tfds lm1b --tfds_split test \
      --split validation --tokenizer sentencepiece
  python -m experiments.lm --config configs/lm/lm1b_llama.py:prepared=data/lm1b --workdir runs/lm1b
Without `prepared=DIR` it reads TFDS `lm1b` by name into memory (`tfds build lm1b` first),
capped at `max_examples` (200k) because the whole split would not fit that way.
"""
from configs import common
from configs.lm import base


def get_config(arg=None):
  args = common.parse_arg(arg, runlocal=False, max_examples=200_000, prepared='')
  c = base.get_base_config()
  c.data.source = 'tfds'
  c.data.tfds_name = 'lm1b'
  c.data.max_examples = args.max_examples
  c.data.stride = 0                   # 0 -> block_size: packed blocks
  c.data.val_fraction = 0.01
  if args.prepared:  # every example, streamed; the tokenizer is the prepared folder's
    c.data.source, c.data.path = 'prepared', args.prepared
  c.tokenizer.name = 'sentencepiece'
  c.tokenizer.vocab_size = 8192
  c.model.arch = 'llama'
  c.model.num_layers = 6
  c.model.d_model = 384
  c.model.num_heads = 6
  c.model.num_kv_heads = 2
  c.model.dropout = 0.1
  c.data.block_size = 256
  c.train.batch_size = 32
  c.train.num_steps = 20_000
  c.optimizer.learning_rate = 6e-4
  c.optimizer.end_learning_rate = 6e-5
  c.optimizer.warmup_steps = 1000
  c.train.eval_every = 2000
  c.train.checkpoint_every = 2000
  c.eval.sample_prompt = 'The '
  return base.apply_runlocal(c) if args.runlocal else c
