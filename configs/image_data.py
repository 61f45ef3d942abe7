"""The `data` block shared by the image configs (VAE, GAN, diffusion)."""
import ml_collections

# Full MNIST in IDX format, for the benchmarks and `path=` config args.
SHARED_MNIST = '../shared/data/mnist'


def get_image_data_config(**overrides) -> ml_collections.ConfigDict:
  d = ml_collections.ConfigDict()
  d.source = 'embedded'      # 'embedded' (sklearn digits) | 'idx' | 'folder' | 'tfds'
  d.path = ''                # idx / folder: a folder
  d.tfds_name = ''           # tfds: e.g. 'mnist', 'fashion_mnist', 'cifar10', 'celeb_a'
  d.tfds_data_dir = ''
  d.train_split = 'train'
  d.eval_split = 'test'
  d.max_examples = 0         # 0 = all training images
  d.eval_examples = 0        # 0 = the whole eval split
  d.classes = ''             # '' = all; '0-4' or '0,2,4': only images of these labels
  d.image_size = 0           # 0 = keep; N = resize to N x N
  d.value_range = '[-1,1]'   # '[-1,1]' | '[0,1]'
  d.binarize = False         # dynamic binarisation (Bernoulli likelihoods; needs '[0,1]')
  d.random_flip = False
  # 'folder' only: a folder without train/test subfolders holds this fraction out for eval
  # (0 = evaluate on the training images); a scan refuses images smaller than
  # min_image_size or upscaled by more than max_upscale to image_size (0 = no limit), and
  # names every bad file at once, or skips them with a count when skip_bad_images.
  d.eval_fraction = 0.1
  d.min_image_size = 8
  d.max_upscale = 4.0
  d.skip_bad_images = False
  d.update(overrides)
  return d


def add_fid_eval_fields(eval_cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The eval.fid_* fields read by genai.evaluation.sample_evaluator.from_config: FID/KID
  on generated samples at every eval, logged as eval/fid, eval/kid, eval/kid_std (or
  *_domain). Off by default (fid_samples=0): Inception runs at ~3 images/s on a 2-core CPU."""
  eval_cfg.fid_samples = 0              # samples per eval; 0 = off, 10,000+ for paper numbers
  eval_cfg.fid_features = 'inception'   # 'inception' | 'domain:CLASSIFIER_WORKDIR'
  eval_cfg.fid_ref_count = 0            # reference images from data.eval_split (0 = all)
  eval_cfg.fid_batch_size = 250         # samples generated per call
  eval_cfg.inception_weights = ''       # '' = the cache of genai.evaluation.inception_weights
  eval_cfg.kid_subsets = 100
  eval_cfg.kid_subset_size = 1000
  return eval_cfg


# LoRA targets of the DiT: its attention and MLP dense layers (module paths 'block_0/qkv').
DIT_LORA_TARGETS = r'block_\d+/(qkv|attn_out|fc_in|fc_out)$'


def add_transfer_fields(c: ml_collections.ConfigDict, lora: bool = False
                        ) -> ml_collections.ConfigDict:
  """Transfer learning of the image families (genai/train/transfer.py): model.init_from
  ('' = random init, 'workdir:DIR' = start from another workdir of the same family),
  train.freeze (regex over parameter paths; matches get no updates) and, with `lora`, the
  LoRA block (rank 0 = off)."""
  c.model.init_from = ''
  c.train.freeze = ''
  if lora:
    # train: base parameters that still train under LoRA (the class table: new classes).
    c.lora = ml_collections.ConfigDict(dict(rank=0, alpha=16.0, dropout=0.0,
                                            targets=DIT_LORA_TARGETS,
                                            train='label/embedding$'))
  return c


def data_from_arg(d: ml_collections.ConfigDict, arg) -> ml_collections.ConfigDict:
  """Applies the common config args: `path=` (a folder of MNIST-format IDX files) or
  `tfds=` (a TFDS name). PNG/JPEG folders: --config.data.source=folder --config.data.path=."""
  if arg.get('path'):
    d.source, d.path = 'idx', arg.path
  if arg.get('tfds'):
    d.source, d.tfds_name = 'tfds', arg.tfds
  return d


def apply_image_runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Tiny mode shared by image configs: little data, a few real steps."""
  c.data.max_examples = 256
  c.data.eval_examples = 64
  c.train.batch_size = 8
  c.train.num_steps = 6
  c.train.steps_per_call = 2
  c.train.log_every = 2
  c.train.eval_every = 3
  c.train.checkpoint_every = 3
  return c
