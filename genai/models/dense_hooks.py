"""Run code around or instead of a flax.linen model's dense layers, chosen by module path.

  with dense_hooks({'layer_0/attn/qkv': hook}):
    model.apply(...)   # hook(module, x, call) runs where layer_0/attn/qkv's __call__ ran

`call()` runs the layer as written. LoRA adds a branch to its output (genai/models/lora.py);
weight-only quantization replaces its matmul (genai/compress/quantize.py). The model code
is untouched, and the hooks act at trace time only: under jit and grad the arrays they
close over are ordinary arguments, so the computation stays pure.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Mapping

import flax.linen as nn
import jax

Hook = Callable[[nn.Module, jax.Array, Callable[[], jax.Array]], jax.Array]


@contextlib.contextmanager
def dense_hooks(hooks: Mapping[str, Hook]):
  """Within this block, `nn.Dense`/`nn.DenseGeneral` calls whose module path ('/'-joined,
  e.g. 'layer_3/mlp/fc_in') is a key of `hooks` go through that hook."""

  def interceptor(next_fun, args, kwargs, context):
    mod = context.module
    if context.method_name == '__call__' and isinstance(mod, (nn.Dense, nn.DenseGeneral)):
      hook = hooks.get('/'.join(mod.path))
      if hook is not None:
        return hook(mod, args[0], lambda: next_fun(*args, **kwargs))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    yield
