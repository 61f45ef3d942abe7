"""Moderation text classifiers (genai/safety/text_classifier.py): defaults shared by the
configs. Each config calls `get_base_config()`, overrides a few fields and applies
`apply_runlocal` last.
  python -m experiments.text_classifier --config configs/text_classifier/moderation.py \
    --workdir runs/moderation_clf
"""
import ml_collections

from configs import common


def get_base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = 'text_classifier'
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.path = ''                   # JSONL of {"text", "label": 0|1}; '' = the shipped toy set
  c.data.eval_fraction = 0.2         # held out, stratified by label
  c.data.split_seed = 0
  c.data.max_len = 128               # bytes per text (longer texts: windows when scoring)

  c.model = ml_collections.ConfigDict()
  c.model.ngrams = (1, 2, 3, 4, 5)   # character n-gram lengths
  c.model.num_buckets = 1 << 14      # hashed n-gram embeddings
  c.model.embed_dim = 32
  c.model.hidden_dim = 32

  c.optimizer = common.optimizer_config(learning_rate=3e-3, weight_decay=1e-4,
                                        warmup_steps=20, end_learning_rate=1e-4)
  c.parallel = common.parallel_config()
  c.train = common.train_config(batch_size=32, num_steps=300, log_every=100, eval_every=300,
                                checkpoint_every=300, max_to_keep=1)

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 64             # the held-out split is scored at every eval
  return c


def apply_runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Tiny mode: a few real steps of a tiny model."""
  c.data.max_len = 64
  c.model.num_buckets = 512
  c.model.embed_dim = 8
  c.model.hidden_dim = 8
  c.optimizer.warmup_steps = 2
  c.train.batch_size = 8
  c.train.num_steps = 6
  c.train.steps_per_call = 2
  c.train.log_every = 2
  c.train.eval_every = 3
  c.train.checkpoint_every = 3
  c.eval.batch_size = 16
  return c
