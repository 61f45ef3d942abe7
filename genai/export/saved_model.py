"""Writing JAX functions and their params as one TF SavedModel, with orbax.export.

Each exported function is `fn(params, inputs: dict[str, Array]) -> dict[str, Array]` with
fixed input shapes. `save` binds them all to one set of params, stored once as tf.Variables
(the SavedModel's variables/ folder, not constants inlined in the graph), and names each
serving signature after its function; the signature's inputs and outputs are named by the
dict keys. The functions go through jax2tf with its defaults (native serialization: one
XlaCallModule op per signature holding the StableHLO, lowered for `platforms`), and each is
a `tf.function(jit_compile=True)`, so TF runs it with XLA exactly as JAX would.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from orbax import export as oex
import tensorflow as tf

from genai import families

Inputs = families.Inputs
Signature = families.Signature  # one exported function and its input shapes


def tensor_specs(inputs: Inputs) -> dict[str, tf.TensorSpec]:
  return {k: tf.TensorSpec(v.shape, tf.as_dtype(np.dtype(v.dtype)), name=k)
          for k, v in inputs.items()}


def save(params: Any, signatures: dict[str, Signature], path: str, *,
         default: str, platforms: Sequence[str] = ('cpu',)) -> None:
  """Writes `signatures` (plus `default` again as 'serving_default') as a SavedModel."""
  if default not in signatures:
    raise ValueError(f'default signature {default!r} is not one of {sorted(signatures)}.')
  params = jax.device_get(params)
  kwargs = {'native_serialization_platforms': tuple(platforms)}
  module = oex.JaxModule(params, {k: s.fn for k, s in signatures.items()}, trainable=False,
                         jax2tf_kwargs={k: kwargs for k in signatures})
  configs = [oex.ServingConfig(['serving_default', k] if k == default else k,
                               input_signature=[tensor_specs(s.inputs)], method_key=k)
             for k, s in signatures.items()]
  oex.ExportManager(module, configs).save(path)

