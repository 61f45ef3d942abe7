"""Defaults shared by the diffusion configs: a small UNet, cosine schedule, eps prediction.

Each config file imports this, overrides a few fields and applies `runlocal` last.
"""
import ml_collections

from configs import common
from configs import image_data


def get_base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = 'diffusion'
  c.seed = 0

  c.data = image_data.get_image_data_config(value_range='[-1,1]')

  c.model = ml_collections.ConfigDict()
  c.model.backbone = 'unet'           # 'unet' | 'dit'
  c.model.class_conditional = False   # True: condition on labels (classifier-free guidance)
  c.model.dropout = 0.1
  c.model.unet = ml_collections.ConfigDict()
  c.model.unet.features = 32          # channels of level 0
  c.model.unet.channel_mults = (1, 2)  # one level per entry; each but the last halves H, W
  c.model.unet.num_res_blocks = 1
  c.model.unet.attention_levels = (1,)  # levels with self-attention (the middle always has it)
  c.model.unet.num_heads = 4
  c.model.unet.num_groups = 8
  c.model.unet.cond_features = 0      # 0 = 4 * features
  c.model.unet.patch_size = 1         # >1: space-to-depth stem (convs at 1/p^2 the pixels)

  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.num_timesteps = 1000
  c.diffusion.schedule = 'cosine'     # 'linear' | 'cosine'
  c.diffusion.beta_start = 1e-4       # linear, given for T=1000 (rescaled by 1000/T)
  c.diffusion.beta_end = 0.02
  c.diffusion.cosine_s = 0.008
  c.diffusion.max_beta = 0.999
  c.diffusion.prediction = 'eps'      # 'eps' | 'v'
  c.diffusion.p_uncond = 0.1          # label dropout (class-conditional models only)

  c.ema = ml_collections.ConfigDict()
  c.ema.decay = 0.999
  c.ema.warmup = True                 # decay ramps as (1 + step) / (10 + step)

  c.sample = ml_collections.ConfigDict()  # used by eval grids and as --sample defaults
  c.sample.sampler = 'ddim'           # 'ddim' | 'ddpm' (always all T steps)
  c.sample.steps = 50                 # DDIM steps
  c.sample.eta = 0.0                  # DDIM noise: 0 deterministic, 1 = DDPM-like
  c.sample.guidance = 0.0             # classifier-free guidance scale w
  c.sample.clip = True                # clip predicted x0 to the data range

  c.optimizer = common.optimizer_config(name='adam', learning_rate=5e-4, grad_clip_norm=1.0,
                                        warmup_steps=200, end_learning_rate=5e-5)

  # Distillation (teacher = another diffusion workdir, '' = off): the student regresses
  # (1 - alpha) * the true eps/v target + alpha * the teacher's output on the same x_t.
  c.distill = ml_collections.ConfigDict(dict(teacher='', alpha=0.5))
  c.parallel = common.parallel_config()
  # 20 steps a call (a rolled scan): the per-call cost (XLA:CPU maps a fresh ~120 MB temp
  # buffer for a batch-64 UNet step) is spread over 20 steps, and 20 divides the configs'
  # log, eval and checkpoint intervals.
  c.train = common.train_config(num_steps=5000, steps_per_call=20)

  c.eval = ml_collections.ConfigDict()
  c.eval.num_examples = 1024          # held-out images for the eval loss (0 = all)
  c.eval.batch_size = 256
  c.eval.num_samples = 64             # images in the eval sample grid (0 = none)
  image_data.add_fid_eval_fields(c.eval)  # FID/KID of samples at eval time (off)
  image_data.add_transfer_fields(c, lora=True)  # model.init_from, train.freeze, lora
  return c


def apply_runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A tiny mode that runs a few real steps in seconds (tests, smoke runs)."""
  image_data.apply_image_runlocal(c)
  # One level (plus the middle attention): compile time dominates a 6-step run on CPU;
  # tests/models/test_unet.py covers multi-level shapes.
  c.model.unet.features = 8
  c.model.unet.channel_mults = (1,)
  c.model.unet.attention_levels = ()
  c.model.unet.num_heads = 2
  c.model.unet.num_groups = 4
  c.diffusion.num_timesteps = 20
  c.sample.steps = 4
  c.optimizer.warmup_steps = 2
  c.eval.num_examples = 16
  c.eval.batch_size = 8
  c.eval.num_samples = 4
  return c
