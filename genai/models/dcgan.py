"""DCGAN generator and discriminator (Radford et al. 2015), sized for any square image
whose side is divisible by 2**num_upsamples (8x8 digits: 2 -> 4 -> 8; 28x28 MNIST:
7 -> 14 -> 28; 32x32 CIFAR: 8 -> 16 -> 32).

Generator: z [B, latent] -> Dense to [s0, s0, width * 2**(n-1)] -> (n-1) stride-2
4x4 transposed convs halving the channels, each with BatchNorm + ReLU -> a last stride-2
transposed conv to the image channels -> tanh, so samples lie in [-1, 1] (train on
data.value_range='[-1,1]'). The transposed convs are `ConvTranspose2x`: exactly flax's
`nn.ConvTranspose(f, (4, 4), strides=(2, 2), padding='SAME')` (same kernel layout, tested
equal), computed as four 2x2 sub-pixel phases in one VALID 2x2 convolution instead of
XLA's input-dilated convolution, which multiplies the inserted zeros (forward + backward of
64x7x7x64 -> 32 channels: 12.2 vs 45.1 ms, one core of a 2-core AMD EPYC, jaxlib 0.10.2). `norm='batch'` is DCGAN's BatchNorm (running statistics in the
'batch_stats' collection); `norm='none'` drops it.

Discriminator: n stride-2 convs (4x4, leaky ReLU 0.2, channels width, 2*width, ...) ->
flatten -> Dense(1) logit. No normalisation layer, so examples are independent: gradient
penalties (which differentiate D(x) per example) are exact. `spectral_norm=True` wraps every
conv and dense layer in flax's SpectralNorm; its power-iteration vectors live in the
'spectral' collection, which the train step carries and checkpoints with the state.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

SPECTRAL = 'spectral'  # Collection of SpectralNorm's power-iteration vectors u and sigma.


def base_size(image_size: int, num_upsamples: int) -> int:
  """Side of the generator's first feature map; the image side must be divisible."""
  if num_upsamples < 1:
    raise ValueError(f'model.num_upsamples={num_upsamples} must be >= 1.')
  if image_size % 2**num_upsamples:
    raise ValueError(
        f'image side {image_size} is not divisible by 2**model.num_upsamples='
        f'{2**num_upsamples}; change model.num_upsamples or set data.image_size to a '
        'multiple of it (e.g. 28 with num_upsamples=2, 32 with 3).')
  return image_size // 2**num_upsamples


def _conv2x2_valid(x_BHWC, kernel_22CF):
  """VALID 2x2 convolution. With jaxlib 0.10.2, XLA:CPU's convolution beats the im2col +
  matmul form this used to be: a DCGAN train step (configs/gan/mnist.py) 41.5 vs 48.2 ms,
  a 500-latent generator forward 32 vs 126 ms, one core of a 2-core AMD EPYC."""
  return jax.lax.conv_general_dilated(x_BHWC, kernel_22CF, (1, 1), 'VALID',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


class ConvTranspose2x(nn.Module):
  """nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding='SAME'), exactly.

  With SAME padding, output pixel (2i + py, 2j + px) sees inputs rows {i - 1 + py, i + py}
  and columns {j - 1 + px, j + px} through kernel taps K[py::2, px::2]. So one VALID 2x2 conv
  of the 1-padded input with the four phase kernels stacked on the output axis gives every
  phase; interleaving them yields the [2H, 2W] output. Parameters 'kernel' [4, 4, C, F] and
  'bias' [F] have nn.ConvTranspose's layout (checkpoints and SpectralNorm see a plain conv).
  """
  features: int
  use_bias: bool = True

  @nn.compact
  def __call__(self, x_BHWC):
    b, h, w, c = x_BHWC.shape
    f = self.features
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (4, 4, c, f))
    # [ty, py, tx, px, C, F] -> [ty, tx, C, (py, px, F)]: tap t of phase p is K[2t + p].
    phases = kernel.reshape(2, 2, 2, 2, c, f).transpose(0, 2, 4, 1, 3, 5).reshape(2, 2, c, 4 * f)
    y = _conv2x2_valid(jnp.pad(x_BHWC, ((0, 0), (1, 1), (1, 1), (0, 0))), phases)
    y = y.reshape(b, h + 1, w + 1, 2, 2, f)
    rows = [jnp.stack([y[:, py:py + h, px:px + w, py, px] for px in (0, 1)], axis=3)
            for py in (0, 1)]                        # each [B, H, W, 2 (px), F]
    out = jnp.stack(rows, axis=2).reshape(b, 2 * h, 2 * w, f)  # [B, H, py, W, px, F]
    if self.use_bias:
      out = out + self.param('bias', nn.initializers.zeros, (f,))
    return out


class Generator(nn.Module):
  """z [B, latent_dim] -> images [B, image_size, image_size, channels] in [-1, 1]."""
  image_size: int
  channels: int = 1
  width: int = 64
  num_upsamples: int = 2
  norm: str = 'batch'          # 'batch' | 'none'
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, z_BZ, *, train: bool):
    if self.norm not in ('batch', 'none'):
      raise ValueError(f"model.g_norm={self.norm!r}; use 'batch' or 'none'.")
    s0 = base_size(self.image_size, self.num_upsamples)
    n = self.num_upsamples

    def norm_act(h, name):
      if self.norm == 'batch':
        h = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                         name=name)(h)
      return nn.relu(h)

    c = self.width * 2**(n - 1)
    h = nn.Dense(s0 * s0 * c, use_bias=self.norm == 'none', name='project')(z_BZ)
    h = norm_act(h.reshape(z_BZ.shape[0], s0, s0, c), 'bn_project')
    for i in range(n - 1):
      c //= 2
      h = ConvTranspose2x(c, use_bias=self.norm == 'none', name=f'up{i}')(h)
      h = norm_act(h, f'bn_up{i}')
    h = ConvTranspose2x(self.channels, name=f'up{n - 1}')(h)
    return jnp.tanh(h)


class Discriminator(nn.Module):
  """images [B, H, W, C] -> logits [B] (higher = more real)."""
  width: int = 64
  num_downsamples: int = 2
  spectral_norm: bool = False
  leak: float = 0.2

  @nn.compact
  def __call__(self, x_BHWC, *, update_stats: bool = False):
    def layer(module):
      if self.spectral_norm:
        return lambda h: nn.SpectralNorm(module, collection_name=SPECTRAL)(
            h, update_stats=update_stats)
      return module

    h = x_BHWC
    for i in range(self.num_downsamples):
      h = layer(nn.Conv(self.width * 2**i, (4, 4), strides=(2, 2), padding='SAME',
                        name=f'down{i}'))(h)
      h = nn.leaky_relu(h, self.leak)
    h = h.reshape(h.shape[0], -1)
    return layer(nn.Dense(1, name='logit'))(h)[:, 0]
