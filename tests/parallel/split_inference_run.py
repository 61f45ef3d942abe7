"""Run by tests/parallel/test_cpu_devices.py in a subprocess with N host devices: Inception
features, diffusion sampling chains and an LM's validation loss over 40 batches (random
weights), batches split over the devices (genai/parallel/sharding.local_split; the loss
with one all-reduce a batch, fetched in windows: genai/parallel/in_flight.py). Writes
them to an npz to compare against N=1.

  python tests/parallel/split_inference_run.py DEVICES OUT.npz
"""
import os
import sys

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           f' --xla_force_host_platform_device_count={sys.argv[1]}')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

from genai.evaluation import inception  # noqa: E402  pylint: disable=g-import-not-at-top
from genai.families import diffusion  # noqa: E402  pylint: disable=g-import-not-at-top
from genai.families import lm  # noqa: E402  pylint: disable=g-import-not-at-top
from genai.models.transformer import Transformer, TransformerConfig  # noqa: E402  pylint: disable=g-import-not-at-top
from genai.models.unet import UNet  # noqa: E402  pylint: disable=g-import-not-at-top
from genai.objectives import diffusion as dfn  # noqa: E402  pylint: disable=g-import-not-at-top
from genai.parallel import sharding  # noqa: E402  pylint: disable=g-import-not-at-top
from configs.diffusion import mnist as diffusion_config  # noqa: E402  pylint: disable=g-import-not-at-top

assert jax.device_count() == int(sys.argv[1])
out = {'split': np.int32(sharding.local_split(4) is not None)}
net = inception.InceptionV3(logits=False)
params = net.init(jax.random.key(0), jnp.zeros((1, 299, 299, 3)))['params']
images = np.asarray(jax.random.uniform(jax.random.key(1), (6, 28, 28, 1)) * 255, np.uint8)
out['pool'] = inception.InceptionFeatures(params, batch_size=4)(images, (0, 255))['pool']

unet = UNet(out_channels=1, features=8, channel_mults=(1,), attention_levels=(), num_groups=4)
uparams = unet.init(jax.random.key(2), jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,)))['params']
sampler = diffusion.ImageSampler(unet, dfn.make_schedule(diffusion_config.get_config().diffusion),
                                 image_shape=(8, 8, 1), num_classes=0, prediction='v',
                                 value_range='[-1,1]')
out['samples'] = sampler(uparams, jax.random.key(3), 6, sampler='ddim', steps=4, eta=1.0,
                         batch_size=4)

gpt = Transformer(TransformerConfig(vocab_size=11, d_model=16, num_layers=1, num_heads=2,
                                    max_len=8))
gparams = gpt.init(jax.random.key(4), jnp.zeros((1, 8), jnp.int32))['params']
tokens = np.asarray(jax.random.randint(jax.random.key(5), (40, 4, 9), 0, 11), np.int32)
batches = [{'inputs': t[:, :-1], 'targets': t[:, 1:]} for t in tokens]
out['lm_loss'] = np.float64(lm.mean_loss(lm.eval_step_fn(gpt), gparams, batches))
np.savez(sys.argv[2], **out)
