"""Defaults shared by the image_gpt configs: a small GPT over binarised 2x2 pixel patches.

Each config file imports this, sets its data block and applies `runlocal` last.
"""
import ml_collections

from configs import common
from configs import image_data


def get_base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = 'image_gpt'
  c.seed = 0

  # Dynamically binarised pixels in [0,1] (Bernoulli(value) afresh every batch; the eval set
  # once, with a fixed seed): the binarised-MNIST protocol of the VAE, so bits/dim compare.
  c.data = image_data.get_image_data_config(value_range='[0,1]', binarize=True)

  # genai/data/image_tokens.py: pixels quantised to `levels` grey levels, each patch x patch
  # block one token (vocabulary levels ** (patch * patch * channels)).
  c.tokens = ml_collections.ConfigDict()
  c.tokens.levels = 2               # 2 = binary; up to 256 (ImageGPT's raw pixels)
  c.tokens.patch = 2                # 28x28 MNIST -> 196 tokens of 16

  # The LM family's GPT (genai/models/transformer.py); every TransformerConfig field but
  # vocab_size and max_len (set from the tokens and the image size) may be given here.
  c.model = ml_collections.ConfigDict()
  c.model.class_conditional = True  # the class as a prefix token (needs labelled data)
  c.model.arch = 'gpt2'             # 'gpt2' (learned positions) | 'llama' (RoPE, SwiGLU)
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.d_model = 128
  c.model.d_ff = 0                  # 0 = the arch default (4 * d_model for gpt2)

  c.optimizer = common.optimizer_config(learning_rate=1e-3, warmup_steps=100,
                                        end_learning_rate=1e-5, grad_clip_norm=1.0)
  c.parallel = common.parallel_config()
  c.train = common.train_config(batch_size=64, num_steps=3000)

  # Ancestral sampling with the LM's KV-cache decoder (genai/sample/decode.py).
  c.sample = ml_collections.ConfigDict()
  c.sample.temperature = 1.0        # 1 = the model's distribution (what FID should see)
  c.sample.top_k = 0                # 0 = off
  c.sample.top_p = 1.0              # 1 = off

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 500           # eval images scored per jitted call (the last is padded)
  c.eval.num_examples = 0           # eval images scored (0 = the whole eval split)
  c.eval.num_samples = 64           # samples in the image grid at every eval (0 = none)
  image_data.add_fid_eval_fields(c.eval)  # FID/KID of samples at eval time (off)
  return c


def apply_runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A tiny mode that runs a few real steps in seconds (tests, smoke runs)."""
  image_data.apply_image_runlocal(c)
  c.model.num_layers = 1
  c.model.num_heads = 2
  c.model.d_model = 16
  c.optimizer.warmup_steps = 2
  c.eval.batch_size = 32
  c.eval.num_samples = 8
  return c
