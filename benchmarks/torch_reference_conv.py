"""PyTorch eager references for the convolutional train steps: the diffusion UNet of
configs/diffusion/mnist.py and the DCGAN of configs/gan/mnist.py.

Same layers, shapes, parameter counts, losses, optimizers and batch sizes as genai's
(genai/models/unet.py with experiments/diffusion.py; genai/models/dcgan.py with
experiments/gan.py), written the way one writes them in PyTorch: NCHW tensors, nn.Conv2d /
nn.ConvTranspose2d / nn.GroupNorm / nn.BatchNorm2d, F.scaled_dot_product_attention, Adam
with `foreach=True`. `load_unet` / `load_gan` copy a flax parameter tree into a port
(tests/bench/test_torch_reference_conv.py checks the outputs agree), and `DiffusionStep` /
`GanStep` are one training step each, doing what the experiment's jitted step does:

- diffusion: t ~ U{0..T-1}, eps ~ N(0, I), x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps,
  MSE of the predicted eps; gradient-norm clip 1.0, Adam (b1 0.9, b2 0.999, eps 1e-8) at
  the config's learning-rate schedule (a table passed in); the EMA of the parameters.
- GAN: one discriminator update on [real; G(z)] (G in training mode, no gradient through
  it), the non-saturating loss; one generator update through D (gradients for G's
  parameters only, `backward(inputs=...)`, as jax.grad computes only those); Adam 2e-4,
  b1 0.5; the EMA of G's parameters.

Differences that do not change the work: BatchNorm's running variance is torch's unbiased
estimate (flax keeps the biased one; neither is used by a training step), and the D step's
generator pass leaves the running statistics unchanged (momentum set to 0 for that call),
as the JAX step discards them.

torch is an optional dependency (reference only): `pip install torch==2.13.0` (CPU build).
benchmarks/conv_step_speed.py times these steps beside genai's.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


# =========================== Shared pieces ==============================================

def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """XLA's SAME padding (low, high) of one spatial side: the extra pixel goes high."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
  """nn.Conv2d with XLA's SAME padding for `input_size` (asymmetric when it must be)."""

  def __init__(self, cin, cout, kernel, stride=1, *, input_size: int, bias=True):
    lo, hi = same_pads(input_size, kernel, stride)
    super().__init__(cin, cout, kernel, stride, padding=lo if lo == hi else 0, bias=bias)
    self.extra_pad = None if lo == hi else (lo, hi, lo, hi)

  def forward(self, x):
    if self.extra_pad is not None:
      x = F.pad(x, self.extra_pad)
    return super().forward(x)


def groups(channels: int, num_groups: int) -> int:
  """genai.models.unet._groups: the largest count <= num_groups dividing `channels`."""
  g = min(num_groups, channels)
  while channels % g:
    g -= 1
  return g


def param_count(module: nn.Module) -> int:
  return sum(p.numel() for p in module.parameters())


# =========================== The diffusion UNet ==========================================

def timestep_embedding(t, dim: int, max_period: float = 10000.0):
  half = dim // 2
  freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
  args = t.float()[:, None] * freqs[None]
  return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ConditionEmbedding(nn.Module):
  def __init__(self, features: int, frequency_dim: int = 256):
    super().__init__()
    self.frequency_dim = frequency_dim
    self.t_in = nn.Linear(frequency_dim, features)
    self.t_out = nn.Linear(features, features)

  def forward(self, t):
    return self.t_out(F.silu(self.t_in(timestep_embedding(t, self.frequency_dim))))


class ResBlock(nn.Module):
  """GroupNorm-SiLU-Conv, + Linear(c), GroupNorm-SiLU-Conv, + (1x1 conv) skip."""

  def __init__(self, cin: int, features: int, cond: int, num_groups: int, size: int):
    super().__init__()
    self.GroupNorm_0 = nn.GroupNorm(groups(cin, num_groups), cin, eps=1e-6)
    self.Conv_0 = SameConv2d(cin, features, 3, input_size=size)
    self.cond = nn.Linear(cond, features)
    self.GroupNorm_1 = nn.GroupNorm(groups(features, num_groups), features, eps=1e-6)
    self.conv_out = SameConv2d(features, features, 3, input_size=size)
    self.skip = nn.Conv2d(cin, features, 1) if cin != features else None

  def forward(self, x, c):
    h = self.Conv_0(F.silu(self.GroupNorm_0(x)))
    h = h + self.cond(F.silu(c))[:, :, None, None]
    h = self.conv_out(F.silu(self.GroupNorm_1(h)))
    return (x if self.skip is None else self.skip(x)) + h


class AttentionBlock(nn.Module):
  def __init__(self, c: int, num_heads: int, num_groups: int):
    super().__init__()
    self.num_heads = num_heads
    self.GroupNorm_0 = nn.GroupNorm(groups(c, num_groups), c, eps=1e-6)
    self.qkv = nn.Linear(c, 3 * c)
    self.out = nn.Linear(c, c)

  def forward(self, x):
    b, c, h, w = x.shape
    k = self.num_heads
    y = self.GroupNorm_0(x).flatten(2).transpose(1, 2)                  # [B, N, C]
    q, kk, v = self.qkv(y).view(b, h * w, 3, k, c // k).permute(2, 0, 3, 1, 4)
    o = F.scaled_dot_product_attention(q, kk, v)                          # [B, K, N, D]
    o = self.out(o.transpose(1, 2).reshape(b, h * w, c))
    return x + o.transpose(1, 2).reshape(b, c, h, w)


def space_to_depth(x, p: int):
  """NCHW [B, C, H, W] -> [B, p*p*C, H/p, W/p], channels ordered (row, col, C) like genai's."""
  b, c, h, w = x.shape
  x = x.view(b, c, h // p, p, w // p, p).permute(0, 3, 5, 1, 2, 4)
  return x.reshape(b, p * p * c, h // p, w // p)


def depth_to_space(x, p: int):
  b, cpp, h, w = x.shape
  c = cpp // (p * p)
  x = x.view(b, p, p, c, h, w).permute(0, 3, 4, 1, 5, 2)
  return x.reshape(b, c, h * p, w * p)


class UNet(nn.Module):
  """genai.models.unet.UNet (unconditional, no dropout) in NCHW; attribute names are the
  flax module names, so `load_unet` copies parameters by path."""

  def __init__(self, image_size: int = 28, channels: int = 1, features: int = 32,
               channel_mults=(1, 2), num_res_blocks: int = 1, attention_levels=(),
               num_heads: int = 4, num_groups: int = 8, cond_features: int = 0,
               patch_size: int = 1):
    super().__init__()
    self.p = p = patch_size
    self.channel_mults, self.num_res_blocks = tuple(channel_mults), num_res_blocks
    self.attention_levels = tuple(attention_levels)
    cond = cond_features or 4 * features
    self.cond_embed = ConditionEmbedding(cond)
    size = image_size // p
    self.conv_in = SameConv2d(channels * p * p, features, 3, input_size=size)
    skips, ch, sizes = [features], features, []
    levels = len(channel_mults)
    for i, mult in enumerate(channel_mults):
      for j in range(num_res_blocks):
        setattr(self, f'down{i}_res{j}', ResBlock(ch, features * mult, cond, num_groups, size))
        ch = features * mult
        if i in self.attention_levels:
          setattr(self, f'down{i}_attn{j}', AttentionBlock(ch, num_heads, num_groups))
        skips.append(ch)
      if i < levels - 1:
        setattr(self, f'down{i}_downsample', SameConv2d(ch, ch, 3, 2, input_size=size))
        sizes.append(size)
        size = -(-size // 2)
        skips.append(ch)
    self.mid_res0 = ResBlock(ch, ch, cond, num_groups, size)
    self.mid_attn = AttentionBlock(ch, num_heads, num_groups)
    self.mid_res1 = ResBlock(ch, ch, cond, num_groups, size)
    for i in reversed(range(levels)):
      for j in range(num_res_blocks + 1):
        f = features * channel_mults[i]
        setattr(self, f'up{i}_res{j}', ResBlock(ch + skips.pop(), f, cond, num_groups, size))
        ch = f
        if i in self.attention_levels:
          setattr(self, f'up{i}_attn{j}', AttentionBlock(ch, num_heads, num_groups))
      if i > 0:
        size = sizes.pop()
        setattr(self, f'up{i}_upsample', SameConv2d(ch, ch, 3, input_size=size))
    self.GroupNorm_0 = nn.GroupNorm(groups(ch, num_groups), ch, eps=1e-6)
    self.conv_out = SameConv2d(ch, channels * p * p, 3, input_size=size)

  def forward(self, x, t):
    p = self.p
    if p > 1:
      x = space_to_depth(x, p)
    c = self.cond_embed(t)
    h = self.conv_in(x)
    skips = [h]
    levels = len(self.channel_mults)
    for i in range(levels):
      for j in range(self.num_res_blocks):
        h = getattr(self, f'down{i}_res{j}')(h, c)
        if i in self.attention_levels:
          h = getattr(self, f'down{i}_attn{j}')(h)
        skips.append(h)
      if i < levels - 1:
        h = getattr(self, f'down{i}_downsample')(h)
        skips.append(h)
    h = self.mid_res1(self.mid_attn(self.mid_res0(h, c)), c)
    for i in reversed(range(levels)):
      for j in range(self.num_res_blocks + 1):
        h = getattr(self, f'up{i}_res{j}')(torch.cat([h, skips.pop()], dim=1), c)
        if i in self.attention_levels:
          h = getattr(self, f'up{i}_attn{j}')(h)
      if i > 0:
        size = skips[-1].shape[2:]
        h = F.interpolate(h, scale_factor=2, mode='nearest')[:, :, :size[0], :size[1]]
        h = getattr(self, f'up{i}_upsample')(h)
    out = self.conv_out(F.silu(self.GroupNorm_0(h)))
    return depth_to_space(out, p) if p > 1 else out


# =========================== DCGAN ======================================================

class Generator(nn.Module):
  """genai.models.dcgan.Generator with norm='batch': Linear -> BN-ReLU -> (4x4 stride-2
  transposed conv, BN, ReLU) x (n-1) -> a last transposed conv -> tanh."""

  def __init__(self, image_size: int = 28, channels: int = 1, width: int = 32,
               num_upsamples: int = 2, latent_dim: int = 64, bn_momentum: float = 0.9):
    super().__init__()
    n = num_upsamples
    self.s0, self.c0 = image_size // 2**n, width * 2**(n - 1)
    self.project = nn.Linear(latent_dim, self.s0 * self.s0 * self.c0, bias=False)
    self.bn_project = nn.BatchNorm2d(self.c0, momentum=1.0 - bn_momentum)
    c, self.ups = self.c0, []
    for i in range(n - 1):
      setattr(self, f'up{i}', nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False))
      setattr(self, f'bn_up{i}', nn.BatchNorm2d(c // 2, momentum=1.0 - bn_momentum))
      c //= 2
    setattr(self, f'up{n - 1}', nn.ConvTranspose2d(c, channels, 4, 2, 1))
    self.n = n

  def forward(self, z):
    h = self.project(z).view(z.shape[0], self.c0, self.s0, self.s0)
    h = F.relu(self.bn_project(h))
    for i in range(self.n - 1):
      h = F.relu(getattr(self, f'bn_up{i}')(getattr(self, f'up{i}')(h)))
    return torch.tanh(getattr(self, f'up{self.n - 1}')(h))


class Discriminator(nn.Module):
  """genai.models.dcgan.Discriminator (no spectral norm): 4x4 stride-2 convs with leaky
  ReLU 0.2, flatten, Linear(1)."""

  def __init__(self, image_size: int = 28, channels: int = 1, width: int = 32,
               num_downsamples: int = 2, leak: float = 0.2):
    super().__init__()
    self.n, self.leak = num_downsamples, leak
    c, size = channels, image_size
    for i in range(num_downsamples):
      setattr(self, f'down{i}', SameConv2d(c, width * 2**i, 4, 2, input_size=size))
      c, size = width * 2**i, -(-size // 2)
    self.logit = nn.Linear(c * size * size, 1)

  def forward(self, x):
    h = x
    for i in range(self.n):
      h = F.leaky_relu(getattr(self, f'down{i}')(h), self.leak)
    return self.logit(h.flatten(1))[:, 0]


# =========================== Copying flax parameters ====================================

def _t(a) -> torch.Tensor:
  return torch.from_numpy(np.array(a, dtype=np.float32))


def _load_module(module: nn.Module, tree: dict) -> None:
  if isinstance(module, nn.ConvTranspose2d):
    # lax.conv_transpose does not flip its kernel; torch's transposed conv does.
    module.weight.copy_(_t(np.asarray(tree['kernel'])[::-1, ::-1]).permute(2, 3, 0, 1))
  elif isinstance(module, nn.Conv2d):
    module.weight.copy_(_t(tree['kernel']).permute(3, 2, 0, 1))
  elif isinstance(module, nn.Linear):
    module.weight.copy_(_t(tree['kernel']).T)
  elif isinstance(module, (nn.GroupNorm, nn.BatchNorm2d)):
    module.weight.copy_(_t(tree['scale']))
  else:
    raise TypeError(f'no rule for {type(module).__name__}')
  if module.bias is not None:
    module.bias.copy_(_t(tree['bias']))


@torch.no_grad()
def load_params(model: nn.Module, params: dict) -> None:
  """Copies a flax parameter tree into a port whose submodule paths are the flax names;
  every parameter on either side must be used."""
  used = set()
  for name, module in model.named_modules():
    if not name or not any(True for _ in module.parameters(recurse=False)):
      continue
    tree = params
    for key in name.split('.'):
      tree = tree[key]
    _load_module(module, tree)
    used.add(tuple(name.split('.')))
  flax_modules = set()

  def walk(tree, path):
    if any(not isinstance(v, dict) for v in tree.values()):
      flax_modules.add(path)
    for k, v in tree.items():
      if isinstance(v, dict):
        walk(v, path + (k,))
  walk(dict(params), ())
  if flax_modules != used:
    raise ValueError(f'flax modules without a torch twin: {sorted(flax_modules - used)}; '
                     f'torch modules without flax params: {sorted(used - flax_modules)}')


def _hwc_rows_to_chw(kernel, size: int, channels: int, axis: int) -> np.ndarray:
  """Reorders a Dense kernel's flattened (H, W, C) axis into torch's (C, H, W) order."""
  k = np.asarray(kernel, np.float32)
  k = np.moveaxis(k, axis, 0)
  rest = k.shape[1:]
  k = k.reshape((size, size, channels) + rest).transpose((2, 0, 1) + tuple(
      range(3, 3 + len(rest)))).reshape((-1,) + rest)
  return np.moveaxis(k, 0, axis)


def load_unet(model: UNet, params: dict) -> None:
  load_params(model, params)


@torch.no_grad()
def load_gan(gen: Generator, disc: Discriminator, g_params: dict, d_params: dict,
             g_batch_stats: dict | None = None) -> None:
  """Copies genai's G and D params (and G's BatchNorm statistics) into the ports; the two
  Dense layers that meet a flatten get their (H, W, C) axis reordered to (C, H, W)."""
  g = {k: dict(v) for k, v in g_params.items()}
  g['project'] = {'kernel': _hwc_rows_to_chw(g['project']['kernel'], gen.s0, gen.c0, 1)}
  load_params(gen, g)
  d = {k: dict(v) for k, v in d_params.items()}
  c_last = disc.logit.in_features
  size = int(round(math.sqrt(c_last // getattr(disc, f'down{disc.n - 1}').out_channels)))
  d['logit'] = {'kernel': _hwc_rows_to_chw(d['logit']['kernel'], size, c_last // size**2, 0),
                'bias': d['logit']['bias']}
  load_params(disc, d)
  for name, stats in (g_batch_stats or {}).items():
    bn = getattr(gen, name)
    bn.running_mean.copy_(_t(stats['mean']))
    bn.running_var.copy_(_t(stats['var']))


# =========================== The train steps =============================================

def adam(params, lr: float, b1: float, b2: float, eps: float) -> torch.optim.Adam:
  return torch.optim.Adam(params, lr=lr, betas=(b1, b2), eps=eps, foreach=True)


class DiffusionStep:
  """One DDPM training step of `model` (see the module doc). `sqrt_abar`/`sqrt_1m_abar`:
  the schedule's [T] tables; `lrs`: the learning rate of each step (the config's warmup +
  cosine schedule, evaluated by the caller)."""

  def __init__(self, model: nn.Module, sqrt_abar, sqrt_1m_abar, lrs, *, b1=0.9, b2=0.999,
               eps=1e-8, grad_clip_norm=1.0, ema_decay=0.999, ema_warmup=True):
    self.model = model
    self.params = list(model.parameters())
    self.ema = [p.detach().clone() for p in self.params]
    self.sqrt_abar, self.sqrt_1m_abar = _t(sqrt_abar), _t(sqrt_1m_abar)
    self.lrs = np.asarray(lrs, np.float64)
    self.opt = adam(self.params, float(self.lrs[0]), b1, b2, eps)
    self.clip, self.decay, self.warmup = grad_clip_norm, ema_decay, ema_warmup
    self.step_count = 0

  def __call__(self, x0):
    b = x0.shape[0]
    t = torch.randint(0, self.sqrt_abar.shape[0], (b,))
    noise = torch.randn_like(x0)
    x_t = self.sqrt_abar[t].view(b, 1, 1, 1) * x0 + self.sqrt_1m_abar[t].view(b, 1, 1, 1) * noise
    loss = F.mse_loss(self.model(x_t, t.float()), noise)
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    if self.clip > 0:
      torch.nn.utils.clip_grad_norm_(self.params, self.clip, foreach=True)
    step = self.step_count
    self.opt.param_groups[0]['lr'] = float(self.lrs[min(step, len(self.lrs) - 1)])
    self.opt.step()
    decay = min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay
    with torch.no_grad():
      torch._foreach_lerp_(self.ema, self.params, 1.0 - decay)  # pylint: disable=protected-access
    self.step_count += 1
    return loss


class GanStep:
  """One DCGAN step (n_critic = 1, non-saturating loss): a D update, a G update, G's EMA."""

  def __init__(self, gen: Generator, disc: Discriminator, latent_dim: int, *, lr_g=2e-4,
               lr_d=2e-4, b1=0.5, b2=0.999, eps=1e-8, ema_decay=0.999, ema_warmup=True):
    self.gen, self.disc, self.latent_dim = gen, disc, latent_dim
    self.g_params, self.d_params = list(gen.parameters()), list(disc.parameters())
    self.opt_g = adam(self.g_params, lr_g, b1, b2, eps)
    self.opt_d = adam(self.d_params, lr_d, b1, b2, eps)
    self.ema = [p.detach().clone() for p in self.g_params]
    self.bns = [m for m in gen.modules() if isinstance(m, nn.BatchNorm2d)]
    self.decay, self.warmup = ema_decay, ema_warmup
    self.step_count = 0
    gen.train()
    disc.train()

  def _fake_no_stats(self, z):
    """G(z) in training mode without touching the running statistics (the JAX D step
    discards them)."""
    momenta = [bn.momentum for bn in self.bns]
    for bn in self.bns:
      bn.momentum = 0.0
    with torch.no_grad():
      fake = self.gen(z)
    for bn, m in zip(self.bns, momenta):
      bn.momentum = m
    return fake

  def __call__(self, real):
    b = real.shape[0]
    fake = self._fake_no_stats(torch.randn(b, self.latent_dim))
    logits = self.disc(torch.cat([real, fake]))
    d_loss = F.softplus(-logits[:b]).mean() + F.softplus(logits[b:]).mean()
    self.opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    self.opt_d.step()

    g_loss = F.softplus(-self.disc(self.gen(torch.randn(b, self.latent_dim)))).mean()
    self.opt_g.zero_grad(set_to_none=True)
    g_loss.backward(inputs=self.g_params)
    self.opt_g.step()
    step = self.step_count
    decay = min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay
    with torch.no_grad():
      torch._foreach_lerp_(self.ema, self.g_params, 1.0 - decay)  # pylint: disable=protected-access
    self.step_count += 1
    return d_loss, g_loss
