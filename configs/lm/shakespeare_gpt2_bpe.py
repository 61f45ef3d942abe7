"""GPT-2 shape with the GPT-2 BPE tokenizer (tiktoken ranks from a local file).
  python -m experiments.lm --workdir runs/bpe --config configs/lm/shakespeare_gpt2_bpe.py:\
path=../shared/data/tinyshakespeare/input.txt,ranks=../shared/data/gpt2_bpe/gpt2.tiktoken
"""
from configs import common
from configs.lm import base


def get_config(arg=None):
  args = common.parse_arg(arg, runlocal=False, path='', ranks='gpt2.tiktoken')
  c = base.get_base_config()
  if args.path:
    c.data.source, c.data.path = 'files', args.path
  else:
    c.data.source, c.data.tfds_name = 'tfds', 'tiny_shakespeare'
  c.tokenizer.name = 'gpt2_bpe'
  c.tokenizer.bpe_ranks_path = args.ranks
  c.model.num_layers = 4
  c.model.d_model = 128
  c.model.dropout = 0.1
  c.data.block_size = 64
  c.eval.sample_prompt = 'ROMEO:'
  return base.apply_runlocal(c) if args.runlocal else c
