"""The autoregressive image transformer family (ImageGPT over quantised pixel tokens).

experiments/image_gpt.py trains it; this module rebuilds it from a workdir and samples.
The network is the language family's GPT (genai/models/transformer.py) over the tokens of
genai/data/image_tokens.py; a class-conditional model reads its class as one prefix token
(ids num_image_tokens + label), an unconditional one a single start token (id
num_image_tokens). Sampling is genai.sample.decode.generate, the LM's KV-cache decoder,
restricted to the image ids (num_choices), so sampled tokens always decode to an image.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from genai import families
from genai.data import image_tokens
from genai.models.transformer import Transformer, TransformerConfig
from genai.objectives import image_gpt as objectives
from genai.sample import decode
from genai.train import supervised
from genai.train import workdir as workdir_lib
from genai.train.optimizers import make_optimizer

# config.model fields that are not TransformerConfig's.
_OWN_FIELDS = ('class_conditional',)


@dataclasses.dataclass(frozen=True)
class ImageGpt:
  """A transformer over image tokens and what maps images, labels and tokens onto each other."""
  model: Transformer
  image_shape: tuple[int, int, int]
  levels: int
  patch: int
  num_classes: int          # 0: unconditional
  value_range: str

  @property
  def num_image_tokens(self) -> int:
    return image_tokens.vocab_size(self.levels, self.patch, self.image_shape[2])

  @property
  def seq_len(self) -> int:
    return image_tokens.num_tokens(self.image_shape, self.patch)

  @property
  def num_dims(self) -> int:
    return int(np.prod(self.image_shape))

  def tokens(self, images) -> jax.Array:
    return image_tokens.to_tokens(images, levels=self.levels, patch=self.patch,
                                  value_range=self.value_range)

  def images(self, tokens) -> jax.Array:
    return image_tokens.from_tokens(tokens, levels=self.levels, patch=self.patch,
                                    image_shape=self.image_shape, value_range=self.value_range)

  def prefix(self, labels, n: int) -> jax.Array:
    """The prefix token of each row: num_image_tokens + label, or the one start token."""
    if not self.num_classes:
      if labels is not None:
        raise ValueError('labels given to an unconditional image_gpt model; train with '
                         'model.class_conditional=True to sample a class.')
      return jnp.full((n,), self.num_image_tokens, jnp.int32)
    if labels is None:
      raise ValueError(f'this image_gpt model is class-conditional ({self.num_classes} '
                       'classes); pass a label per image.')
    return self.num_image_tokens + jnp.asarray(labels, jnp.int32)

  def sample(self, params, rng: jax.Array, labels=None, *, num_images: int | None = None,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """Float images [N, H, W, C] drawn token by token with the KV-cache decoder (N = the
    number of labels, or `num_images` for an unconditional model)."""
    n = len(labels) if labels is not None else num_images
    prompt = np.asarray(self.prefix(labels, n))[:, None]
    out = decode.generate(self.model, params, prompt, num_tokens=self.seq_len, rng=rng,
                          temperature=temperature, top_k=top_k, top_p=top_p,
                          num_choices=self.num_image_tokens)
    return np.asarray(self.images(out[:, 1:]))


sample_labels = families.sample_labels  # re-exported: experiments.image_gpt.sample_labels


def make_model(config: ml_collections.ConfigDict, image_shape, num_classes: int,
               value_range: str) -> ImageGpt:
  """The ImageGpt of a config (config.tokens, config.model) on images of `image_shape`."""
  tc = config.tokens
  levels, patch = int(tc.levels), int(tc.patch)
  image_tokens.check(levels, patch, image_shape)
  fields = {k: v for k, v in config.model.to_dict().items() if k not in _OWN_FIELDS}
  if not fields.get('d_ff'):
    fields.pop('d_ff', None)  # 0: the arch default
  vocab = image_tokens.vocab_size(levels, patch, image_shape[2]) + max(int(num_classes), 1)
  # One position more than the inputs use: decode.generate checks prompt + new <= max_len.
  max_len = image_tokens.num_tokens(image_shape, patch) + 1
  cfg = TransformerConfig.from_dict({**fields, 'vocab_size': vocab, 'max_len': max_len})
  return ImageGpt(Transformer(cfg), tuple(int(d) for d in image_shape), levels, patch,
                  int(num_classes), value_range)


def state_fns(config: ml_collections.ConfigDict, net: ImageGpt):
  """init_state(rng) -> {'params', 'opt_state', 'step'}, and (optimizer, lr schedule)."""
  tx, schedule = make_optimizer(config.optimizer, config.train.num_steps)
  example = jnp.zeros((1, net.seq_len), jnp.int32)
  return supervised.init_fn(net.model, example, tx), (tx, schedule)


def load_workdir(workdir: str, step: int | None = None):
  """(config, ImageGpt, params) of a trained image_gpt workdir (newest checkpoint)."""
  config = workdir_lib.load_config(workdir, 'image_gpt')
  info = workdir_lib.load_image_info(workdir, 'image_gpt')
  net = make_model(config, info['image_shape'], info['num_classes'], info['value_range'])
  init_state, _ = state_fns(config, net)
  state, _ = workdir_lib.restore_state(workdir, init_state, step)
  return config, net, state['params']


def sample(workdir: str, num_images: int, seed: int = 0, label: int = -1,
           temperature: float | None = None, batch_size: int = 256
           ) -> tuple[np.ndarray, np.ndarray | None, str]:
  """(float images [N, H, W, C], labels or None, value range) from the newest checkpoint,
  `batch_size` images per decoding call; the temperature defaults to config.sample's."""
  if num_images < 1:
    raise ValueError(f'--num_images={num_images} must be >= 1.')
  config, net, params = load_workdir(workdir)
  labels = sample_labels(num_images, net.num_classes, label)
  sc = config.sample
  temperature = sc.temperature if temperature is None else temperature
  out = []
  for i, start in enumerate(range(0, num_images, batch_size)):
    n = min(batch_size, num_images - start)
    out.append(net.sample(params, jax.random.fold_in(jax.random.key(seed), i),
                          None if labels is None else labels[start:start + n], num_images=n,
                          temperature=temperature, top_k=sc.top_k, top_p=sc.top_p))
  return np.concatenate(out), labels, net.value_range


def serving(workdir: str, step: int | None, max_batch: int) -> families.ImageServing:
  """Ancestral sampling at config.sample's temperature / top-k / top-p; every request decodes
  `max_batch` rows (one compiled shape). `guidance` and `steps` do not apply."""
  config, net, params = load_workdir(workdir, step)
  sc = config.sample

  def sample_fn(n, seed, label, guidance, steps):
    del guidance, steps
    labels = sample_labels(max_batch, net.num_classes, label)
    if labels is not None and label < 0:
      labels = np.pad(labels[:n], (0, max_batch - n), mode='edge')
    x = net.sample(params, jax.random.key(seed), labels, num_images=max_batch,
                   temperature=sc.temperature, top_k=sc.top_k, top_p=sc.top_p)
    return x[:n]

  return families.ImageServing(net.image_shape, net.num_classes, net.value_range, sample_fn)


def bits_per_dim(nll_nats: Any, net: ImageGpt) -> Any:
  """Nats per image -> bits per pixel dimension of the quantised image."""
  return objectives.nats_to_bits_per_dim(nll_nats, net.num_dims)
