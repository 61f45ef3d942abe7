"""A convolution whose gradients XLA:CPU runs on its fast kernel inside loops as well.

XLA:CPU runs a convolution on its Eigen (or YNNPACK) kernel only in the canonical form:
images [N, H, W, C], kernel [H, W, I, O], both stored in those layouts. Autodiff's
gradients of a convolution are convolutions in other forms (the input gradient takes the
kernel flipped as [H, W, O, I], the weight gradient takes the channels as batch). In
straight-line code XLA rewrites them into the canonical form with transposes; inside a
while loop (a rolled `lax.scan` of train steps) it leaves them as they are and runs them
as plain loops: a UNet train step took ~2,800 ms there against ~80 straight-line.

`conv_general_dilated` here is a drop-in for `lax.conv_general_dilated` (pass it to
`nn.Conv(conv_general_dilated=...)`). Its forward is the same call; on the CPU backend its
backward writes both gradients as forward convolutions in the canonical form, their
transposed operands materialised (`optimization_barrier` keeps XLA from folding the
transposes back into the convolution):
  dx = conv(dy, kernel flipped by autodiff of a conv with an [H, W, O, I] kernel)
  dW[a, b, i, o] = conv(x as [I, H, W, N], dy as an [Ho, Wo, N, O] kernel dilated by the
                        stride)[i, a, b, o]
The same sums as autodiff's (tests/models/test_conv_grads.py: equal gradients, and only
canonical convolutions in a rolled scan). Other backends, dilations, feature groups and
layouts take autodiff's gradients unchanged.

A custom VJP has no forward mode: `jax.jvp`, `jax.jacfwd` or `jax.hessian` through such a
convolution raise "can't apply forward-mode autodiff (jvp) to a custom_vjp function". Trace
that code inside `with conv_grads.plain_autodiff():`, which gives every convolution traced
in it lax's own rules:

  with conv_grads.plain_autodiff():
    y, dy = jax.jvp(lambda x: model.apply(variables, x, t), (x,), (v,))
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ('NHWC', 'HWIO', 'NHWC')
_PLAIN = contextvars.ContextVar('genai_conv_grads_plain', default=False)


@contextlib.contextmanager
def plain_autodiff() -> Iterator[None]:
  """Convolutions (and genai/models/group_norm.py) traced inside take plain autodiff
  rules, forward mode included."""
  token = _PLAIN.set(True)
  try:
    yield
  finally:
    _PLAIN.reset(token)


def plain_autodiff_enabled() -> bool:
  """Whether code traced now is inside `plain_autodiff()`."""
  return _PLAIN.get()


def _is_nhwc(dimension_numbers, ndim: int) -> bool:
  if ndim != 4:
    return False
  if dimension_numbers is None:  # lax's default is NCHW / OIHW
    return False
  return lax.conv_dimension_numbers((1,) * 4, (1,) * 4, dimension_numbers) == \
      lax.conv_dimension_numbers((1,) * 4, (1,) * 4, _NHWC)


def conv_general_dilated(lhs, rhs, window_strides: Sequence[int], padding: Any,
                         lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
                         feature_group_count: int = 1, batch_group_count: int = 1,
                         precision=None, preferred_element_type=None):
  """`lax.conv_general_dilated`, with CPU-canonical gradients where they apply."""
  plain = functools.partial(
      lax.conv_general_dilated, window_strides=window_strides, padding=padding,
      lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision,
      preferred_element_type=preferred_element_type)
  undilated = all(d == 1 for d in (lhs_dilation or ())) and all(
      d == 1 for d in (rhs_dilation or ()))
  if (_PLAIN.get() or jax.default_backend() != 'cpu' or not undilated
      or feature_group_count != 1 or batch_group_count != 1
      or not _is_nhwc(dimension_numbers, lhs.ndim)):
    return plain(lhs, rhs)
  strides = tuple(int(s) for s in window_strides)
  pads = (lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
          if isinstance(padding, str) else tuple(tuple(p) for p in padding))
  return _conv(lhs, rhs, strides, pads, precision, preferred_element_type)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv(x, w, strides, pads, precision, preferred):
  return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_NHWC,
                                  precision=precision, preferred_element_type=preferred)


def _conv_fwd(x, w, strides, pads, precision, preferred):
  return _conv(x, w, strides, pads, precision, preferred), (x, w)


def _conv_bwd(strides, pads, precision, preferred, res, dy):
  x, w = res
  dy = dy.astype(x.dtype)
  # Input gradient: autodiff of the same convolution with the kernel stored [H, W, O, I]
  # flips it into [H, W, I, O] form for the transposed convolution.
  w_hwoi = lax.optimization_barrier(jnp.swapaxes(w, 2, 3))
  _, vjp_x = jax.vjp(lambda x_: lax.conv_general_dilated(
      x_, w_hwoi, strides, pads, dimension_numbers=('NHWC', 'HWOI', 'NHWC'),
      precision=precision), x)
  dx, = vjp_x(dy)
  # Weight gradient: the channels of x as the batch, its images as the features, dy as the
  # kernel (dilated by the stride); the high padding makes the output the kernel's size.
  x_c = lax.optimization_barrier(jnp.transpose(x, (3, 1, 2, 0)))    # [I, H, W, N]
  dy_k = lax.optimization_barrier(jnp.transpose(dy, (1, 2, 0, 3)))  # [Ho, Wo, N, O]
  high = [k + s * (o - 1) - n - lo for k, s, o, n, (lo, _) in
          zip(w.shape[:2], strides, dy.shape[1:3], x.shape[1:3], pads)]
  dw_c = lax.conv_general_dilated(x_c, dy_k, (1, 1), [(p[0], h) for p, h in zip(pads, high)],
                                  rhs_dilation=strides, dimension_numbers=_NHWC,
                                  precision=precision)                # [I, kh, kw, O]
  return dx.astype(x.dtype), jnp.transpose(dw_c, (1, 2, 0, 3)).astype(w.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)
