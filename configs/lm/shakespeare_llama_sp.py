"""A Llama-shaped LM (RoPE, RMSNorm, SwiGLU, grouped-query attention) with a
sentencepiece BPE tokenizer trained on the corpus and saved in the workdir.
  python -m experiments.lm --workdir runs/llama_sp \
    --config configs/lm/shakespeare_llama_sp.py:path=../shared/data/tinyshakespeare/input.txt
"""
from configs import common
from configs.lm import base


def get_config(arg=None):
  args = common.parse_arg(arg, runlocal=False, path='')
  c = base.get_base_config()
  if args.path:
    c.data.source, c.data.path = 'files', args.path
  else:
    c.data.source, c.data.tfds_name = 'tfds', 'tiny_shakespeare'
  c.tokenizer.name = 'sentencepiece'
  c.tokenizer.vocab_size = 1024
  c.model.arch = 'llama'
  c.model.num_layers = 4
  c.model.d_model = 192
  c.model.num_heads = 6
  c.model.num_kv_heads = 2
  c.model.dropout = 0.1
  c.data.block_size = 128
  c.train.batch_size = 16
  c.eval.sample_prompt = 'ROMEO:'
  return base.apply_runlocal(c) if args.runlocal else c
