"""Defaults shared by the GAN configs: a small DCGAN with the non-saturating loss.

Each config file imports this, sets the data and sizes, and applies `runlocal` last.
Ablations are command-line overrides, e.g. SN-GAN with hinge loss:
  --config.loss=hinge --config.model.spectral_norm=True
or WGAN-GP: --config.loss=wgan --config.gp.kind=wgan_gp --config.gp.weight=10
  --config.train.n_critic=5 --config.model.g_norm=none
"""
import ml_collections

from configs import common
from configs import image_data


def get_base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = 'gan'
  c.seed = 0

  c.data = image_data.get_image_data_config()  # value_range '[-1,1]': G ends in tanh

  c.model = ml_collections.ConfigDict()
  c.model.latent_dim = 64
  c.model.num_upsamples = 2       # image side must be divisible by 2**num_upsamples
  c.model.g_width = 64            # G channels: g_width * 2**(n-1) halving to g_width
  c.model.g_norm = 'batch'        # 'batch' (DCGAN) | 'none'
  c.model.g_bn_momentum = 0.9     # running statistics (used when eval.use_ema=False)
  c.model.d_width = 64            # D channels: d_width, 2*d_width, ... (num_upsamples convs)
  c.model.spectral_norm = False   # SpectralNorm on every D layer (SN-GAN)

  c.loss = 'ns'                   # 'ns' | 'hinge' | 'wgan'
  c.gp = ml_collections.ConfigDict()
  c.gp.kind = 'none'              # 'none' | 'wgan_gp' (interpolates) | 'r1' (real data)
  c.gp.weight = 0.0               # wgan_gp: 10; r1: gamma / 2

  # DCGAN: Adam 2e-4, beta1 0.5, constant; each network has its own optimizer.
  c.optimizer_g = common.optimizer_config(name='adam', learning_rate=2e-4, b1=0.5,
                                          schedule='constant')
  c.optimizer_d = common.optimizer_config(name='adam', learning_rate=2e-4, b1=0.5,
                                          schedule='constant')

  c.ema = ml_collections.ConfigDict()
  c.ema.decay = 0.999             # EMA of generator params, used for every sample
  c.ema.warmup = True             # decay ramps as (1 + step) / (10 + step)

  # batch_size is per D step (the loader draws n_critic * batch_size); num_steps counts G
  # updates; n_critic D updates (each on fresh real data) per G update.
  c.parallel = common.parallel_config()
  # per_device: pmap semantics on many devices (per-device BatchNorm statistics and noise,
  # gradients averaged with genai.parallel.per_device.pmean); False = SyncBN over the
  # global batch.
  c.train = common.train_config(n_critic=1, num_steps=5000, steps_per_call=4, per_device=False)

  c.eval = ml_collections.ConfigDict()
  c.eval.num_samples = 64         # grid of EMA samples from fixed noise at every eval
  c.eval.use_ema = True
  c.eval.standing_stats = 1024    # latents used to recompute G's BatchNorm statistics
                                  # for the EMA params (see experiments/gan.py)
  c.eval.num_real = 256           # test images scored by D at every eval (0 = skip)
  image_data.add_fid_eval_fields(c.eval)  # FID/KID of samples at eval time (off)
  image_data.add_transfer_fields(c)       # model.init_from, train.freeze
  return c


def apply_runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A tiny mode that runs a few real steps in seconds (tests, smoke runs)."""
  image_data.apply_image_runlocal(c)
  c.model.latent_dim = 8
  c.model.g_width = 8
  c.model.d_width = 8
  c.eval.num_samples = 16
  c.eval.standing_stats = 64
  c.eval.num_real = 16
  return c
