"""Transfer learning of the image families (genai/train/transfer.py): exact loading against
numpy, class-count extension, the report's counts, freezing, LoRA on the DiT (only the
adapters get gradients), and one-line errors for a missing or foreign source."""
import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from conftest import REPO, load_config
from genai import errors
from genai.data import images as images_lib
from genai.families import classifier as classifier_family
from genai.families import gan as gan_family
from genai.models import dit
from genai.models import lora as lora_lib
from genai.models.conditioning import ConditionEmbedding
from genai.train import optimizers
from genai.train import supervised
from genai.train import transfer
from genai.train import workdir as workdir_lib
from genai.train.checkpoints import Checkpointer

_jit = functools.partial(jax.jit, compiler_options={'xla_backend_optimization_level': 0,
                                                    'xla_llvm_disable_expensive_passes': True})


def _rand(shape, seed):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# =========================== The merge against a numpy reference =======================

def test_merge_copies_extends_and_reinitialises_like_numpy():
  fresh = {'conv': {'kernel': _rand((3, 3, 1, 4), 0), 'bias': _rand((4,), 1)},
           'label': {'embedding': _rand((11, 6), 2)},      # 10 classes + the null row
           'head': {'kernel': _rand((6, 10), 3)},          # 10 classes, no extra
           'dense': {'kernel': _rand((72, 6), 4)},         # size-dependent
           'new': {'bias': _rand((5,), 5)}}                # not in the source
  source = {'conv/kernel': _rand((3, 3, 1, 4), 10), 'conv/bias': _rand((4,), 11),
            'label/embedding': _rand((6, 6), 12),           # 5 classes + null
            'head/kernel': _rand((6, 5), 13), 'dense/kernel': _rand((32, 6), 14),
            'gone/kernel': _rand((2, 2), 15)}
  plan = transfer.plan_tree(fresh, source, source_classes=5, target_classes=10)
  out = jax.tree.map(np.asarray, transfer.merge(plan, fresh, transfer.needed(plan, source)))

  # numpy reference
  np.testing.assert_array_equal(out['conv']['kernel'], source['conv/kernel'])
  np.testing.assert_array_equal(out['conv']['bias'], source['conv/bias'])
  emb = fresh['label']['embedding'].copy()
  emb[:5] = source['label/embedding'][:5]
  emb[10] = source['label/embedding'][5]               # null row -> null row
  np.testing.assert_array_equal(out['label']['embedding'], emb)
  head = fresh['head']['kernel'].copy()
  head[:, :5] = source['head/kernel']
  np.testing.assert_array_equal(out['head']['kernel'], head)
  np.testing.assert_array_equal(out['dense']['kernel'], fresh['dense']['kernel'])
  np.testing.assert_array_equal(out['new']['bias'], fresh['new']['bias'])

  rep = transfer.entry_report(plan)
  assert (rep['loaded'], rep['extended'], rep['re_initialised']) == (2, 2, 2)
  assert rep['parameters'] == 36 + 4 + 66 + 60 + 432 + 5
  assert rep['loaded_parameters'] == 36 + 4 + 6 * 6 + 6 * 5
  assert rep['re_initialised_paths'] == ['dense/kernel [32, 6]->[72, 6]', 'new/bias']
  assert rep['extended_paths'] == ['head/kernel (classes 5->10)',
                                   'label/embedding (classes 5->10)']


def test_fewer_classes_keep_the_first_rows_and_the_null_row():
  fresh = {'e': _rand((4, 2), 0)}                       # 3 classes + null
  source = {'e': _rand((11, 2), 1)}                     # 10 classes + null
  plan = transfer.plan_tree(fresh, source, source_classes=10, target_classes=3)
  out = np.asarray(transfer.merge(plan, fresh, source)['e'])
  np.testing.assert_array_equal(out, np.concatenate([source['e'][:3], source['e'][10:]]))


def test_class_tables_of_the_real_condition_embedding_are_extended():
  def init(n):
    m = ConditionEmbedding(8, num_classes=n)
    return _jit(lambda: m.init(jax.random.key(n), jnp.zeros((1,)),
                               jnp.zeros((1,), jnp.int32))['params'])()
  src, fresh = init(5), init(10)
  flat_src = transfer.flat(src)
  plan = transfer.plan_tree(fresh, flat_src, source_classes=5, target_classes=10)
  assert {p.path: p.action for p in plan}['label/embedding'] == 'extend'
  assert all(p.action == 'copy' for p in plan if p.path != 'label/embedding')
  out = transfer.flat(transfer.merge(plan, fresh, flat_src))
  table = np.asarray(out['label/embedding'])
  np.testing.assert_array_equal(table[:5], flat_src['label/embedding'][:5])
  np.testing.assert_array_equal(table[10], flat_src['label/embedding'][5])
  np.testing.assert_array_equal(table[5:10], np.asarray(fresh['label']['embedding'])[5:10])


# =========================== Exact loading from a workdir ==============================

def _write_source(path, config, state, info_name='image_info.json', num_classes=0):
  workdir_lib.save_config(config, str(path))
  (path / info_name).write_text(json.dumps({'image_shape': [8, 8, 1], 'num_classes': num_classes,
                                            'value_range': '[-1,1]'}))
  ckpt = Checkpointer(str(path / 'checkpoints'), asynchronous=False)
  ckpt.save(7, jax.tree.map(np.asarray, state))
  ckpt.close()


def test_gan_from_a_workdir_of_another_image_size(tmp_path):
  """G's and D's convs, BatchNorm statistics and EMA are copied bit for bit; the dense layers
  whose size follows the image size are the fresh init; the report counts them."""
  config = load_config(REPO / 'configs/gan/digits.py')
  src_init, _, _ = gan_family.state_fns(config, gan_family.GanNets(config, (8, 8, 1)))
  source = _jit(src_init)(jax.random.key(1))
  _write_source(tmp_path / 'src', config, source)

  target_cfg = ml_collections.ConfigDict(config.to_dict())
  target_cfg.model.init_from = f'workdir:{tmp_path / "src"}'
  init, _, _ = gan_family.state_fns(target_cfg, gan_family.GanNets(target_cfg, (16, 16, 1)))
  lines = []
  start, args = transfer.init_from(target_cfg, 'gan', init, workdir=str(tmp_path / 'dst'),
                                   print_fn=lines.append)
  got = _jit(start)(jax.random.key(2), *args)
  fresh = _jit(init)(jax.random.key(2))
  for entry in ('g_params', 'd_params', 'ema_params', 'g_batch_stats'):
    src_flat, got_flat, fresh_flat = (transfer.flat(t[entry]) for t in (source, got, fresh))
    for path, leaf in got_flat.items():
      same_shape = path in src_flat and src_flat[path].shape == leaf.shape
      want = src_flat[path] if same_shape else fresh_flat[path]
      np.testing.assert_array_equal(np.asarray(leaf), np.asarray(want), err_msg=f'{entry}/{path}')
  report = json.loads((tmp_path / 'dst' / transfer.REPORT_FILE).read_text())
  g = report['entries']['g_params']
  assert g['re_initialised'] >= 1 and g['loaded'] >= 1 and g['extended'] == 0
  n_fresh = sum(np.size(x) for p, x in transfer.flat(fresh['g_params']).items()
                if p in g['re_initialised_paths'] or
                any(s.startswith(p + ' ') for s in g['re_initialised_paths']))
  assert g['loaded_parameters'] == g['parameters'] - n_fresh
  assert 'g_params:' in lines[0] and 're-initialised' in lines[0]


def test_classifier_extended_to_new_classes_and_frozen_convs(tmp_path):
  config = load_config(REPO / 'configs/classifier/digits.py')
  x = jnp.zeros((1, 8, 8, 1))
  tx = optax.sgd(0.1)
  src_model = classifier_family.make_classifier(config.model, 5)
  source = _jit(supervised.init_fn(src_model, x, tx))(jax.random.key(1))
  _write_source(tmp_path / 'src', config, source, 'classifier_info.json', num_classes=5)

  config.model.init_from = f'workdir:{tmp_path / "src"}'
  config.train.freeze = r'^Conv_'
  model = classifier_family.make_classifier(config.model, 10)
  tx = transfer.optimizer(config, tx)
  init = supervised.init_fn(model, x, tx)
  start, args = transfer.init_from(config, 'classifier', init, num_classes=10,
                                   print_fn=lambda _: None)
  state = _jit(start)(jax.random.key(2), *args)
  head, src_head = state['params']['Dense_1']['kernel'], source['params']['Dense_1']['kernel']
  fresh_head = _jit(init)(jax.random.key(2))['params']['Dense_1']['kernel']
  np.testing.assert_array_equal(head[:, :5], src_head)
  np.testing.assert_array_equal(head[:, 5:], fresh_head[:, 5:])
  # train.freeze: the convs get zero updates, the head moves.
  grads = jax.tree.map(jnp.ones_like, state['params'])
  updates, _ = tx.update(grads, state['opt_state'], state['params'])
  assert all(float(jnp.abs(v).max()) == 0.0 for k, v in transfer.flat(updates).items()
             if k.startswith('Conv_'))
  assert float(jnp.abs(updates['Dense_1']['kernel']).max()) > 0
  frozen = transfer.count_frozen(config, 'classifier', state)
  n_conv = sum(np.size(v) for k, v in transfer.flat(state['params']).items()
               if k.startswith('Conv_'))
  assert frozen['frozen'] == n_conv


def test_gan_freeze_patterns_see_the_network_prefix():
  params = {'Conv_0': {'kernel': jnp.ones((2, 2))}, 'Dense_0': {'kernel': jnp.ones((2, 2))}}
  tx_g = optimizers.freeze(optax.sgd(1.0), '^generator/Conv', 'generator/')
  tx_d = optimizers.freeze(optax.sgd(1.0), '^generator/Conv', 'discriminator/')
  ones = jax.tree.map(jnp.ones_like, params)
  ug, _ = tx_g.update(ones, tx_g.init(params), params)
  ud, _ = tx_d.update(ones, tx_d.init(params), params)
  assert float(ug['Conv_0']['kernel'].sum()) == 0 and float(ug['Dense_0']['kernel'].sum()) != 0
  assert float(ud['Conv_0']['kernel'].sum()) != 0
  with pytest.raises(ValueError, match='every parameter of the generator'):
    optimizers.freeze(optax.sgd(1.0), 'generator', 'generator/').init(params)


# =========================== LoRA on the DiT ===========================================

def _lora_config(rank=2):
  c = ml_collections.ConfigDict()
  c.train = ml_collections.ConfigDict(dict(freeze=''))
  c.lora = ml_collections.ConfigDict(dict(rank=rank, alpha=4.0, dropout=0.0,
                                          targets=r'block_\d+/(qkv|attn_out|fc_in|fc_out)$'))
  return c


class _TwoDense(nn.Module):
  """A stand-in backbone: a class table and two dense layers under 'block_0'."""

  @nn.compact
  def __call__(self, x, y):
    h = x + nn.Embed(4, 3, name='label')(y)
    h = nn.tanh(_Block(name='block_0')(h))
    return nn.Dense(2, name='final')(h)


class _Block(nn.Module):
  @nn.compact
  def __call__(self, h):
    return nn.Dense(3, name='qkv')(h)


def test_lora_backbone_trains_adapters_and_lora_train_only():
  """The mechanism on a tiny stand-in (the DiT itself: the slow test below): zero gradients
  on the base except `lora.train`, and the output equal to the merged weights'."""
  config = _lora_config()
  config.lora.targets = r'block_0/qkv$'
  config.lora.train = 'label/embedding$'
  model = transfer.lora_model(config, _TwoDense())
  x, y = jnp.ones((2, 3)), jnp.array([0, 3])
  tx = transfer.optimizer(config, optax.sgd(1.0))

  @_jit
  def run():
    params = model.init(jax.random.key(0), x, y)['params']
    params['lora'] = jax.tree.map(lambda v: v + 0.3, params['lora'])
    loss = lambda p: jnp.sum(model.apply({'params': p}, x, y) ** 2)
    value, grads = jax.value_and_grad(loss)(params)
    merged = lora_lib.merge(params['base'], params['lora'], transfer.lora_config(config))
    updates, _ = tx.update(grads, tx.init(params), params)
    return value, grads, jnp.sum(_TwoDense().apply({'params': merged}, x, y) ** 2), updates

  value, grads, merged_value, updates = run()
  flat_g = transfer.flat(grads['base'])
  assert float(jnp.abs(flat_g['label/embedding']).max()) > 0
  assert all(float(jnp.abs(g).max()) == 0 for k, g in flat_g.items() if k != 'label/embedding')
  assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads['lora']))
  np.testing.assert_allclose(value, merged_value, rtol=1e-6)
  assert float(jnp.abs(updates['base']['label']['embedding']).max()) > 0
  assert float(jnp.abs(updates['base']['block_0']['qkv']['kernel']).max()) == 0


@pytest.mark.slow  # ~5 s of CPU (compiling the DiT's forward and backward)
def test_lora_on_the_dit_trains_only_the_adapters():
  config = _lora_config()
  base = dit.DiT(patch_size=2, d_model=16, num_layers=1, num_heads=2, mlp_ratio=2.0,
                 num_classes=3)
  model = transfer.lora_model(config, base)
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
  t, y = jnp.array([3.0, 7.0]), jnp.array([0, 2])
  params = _jit(lambda: model.init(jax.random.key(1), x, t, y)['params'])()
  assert sorted(params['lora']) == ['block_0/attn_out', 'block_0/fc_in', 'block_0/fc_out',
                                    'block_0/qkv']
  # adaLN-Zero: the DiT's output layer starts at zero, so give it weights to see gradients.
  params['base'] = jax.tree.map(lambda v: v + 0.1 * jax.random.normal(jax.random.key(5), v.shape),
                                params['base'])
  params['lora'] = jax.tree.map(lambda v: v + 0.1, params['lora'])

  def loss(p):
    return jnp.mean(model.apply({'params': p}, x, t, y) ** 2)

  @_jit
  def run(p):
    # The adapters against their closed form: the base with W + (alpha / r) A B folded in.
    merged = lora_lib.merge(p['base'], p['lora'], transfer.lora_config(config))
    return jax.value_and_grad(loss)(p), jnp.mean(base.apply({'params': merged}, x, t, y) ** 2)

  (value, grads), merged_value = run(params)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads['base']))
  assert all(float(jnp.abs(g).max()) > 0.0 for g in jax.tree.leaves(grads['lora']))
  np.testing.assert_allclose(value, merged_value, rtol=1e-5)
  # The optimizer: zero updates and no state for the base.
  tx = transfer.optimizer(config, optax.adam(1e-2))
  updates, _ = tx.update(grads, tx.init(params), params)
  assert all(float(jnp.abs(u).max()) == 0.0 for u in jax.tree.leaves(updates['base']))
  frozen = transfer.count_frozen(config, 'diffusion', {'params': params})
  assert frozen['trainable'] == sum(np.size(v) for v in jax.tree.leaves(params['lora']))


# =========================== Errors and data.classes ===================================

def _user_error_line(exc) -> str:
  assert errors.is_user_error(exc), repr(exc)
  return str(exc)


def test_missing_or_foreign_sources_are_one_line_errors(tmp_path):
  config = load_config(REPO / 'configs/vae/digits.py')
  init = lambda rng: {'params': {'w': jnp.zeros((2,))}}
  for spec, match in [(f'workdir:{tmp_path / "nope"}', 'has no config.json'),
                      ('hf:some/model', "give another workdir of the same family")]:
    config.model.init_from = spec
    with pytest.raises((errors.UserError, FileNotFoundError)) as e:
      transfer.init_from(config, 'vae', init)
    assert match in _user_error_line(e.value) and '\n' not in str(e.value)
  workdir_lib.save_config(ml_collections.ConfigDict({'experiment': 'gan'}), str(tmp_path / 'g'))
  config.model.init_from = f'workdir:{tmp_path / "g"}'
  with pytest.raises(errors.UserError, match='trained by experiments.gan, not experiments.vae'):
    transfer.init_from(config, 'vae', init)
  workdir_lib.save_config(ml_collections.ConfigDict({'experiment': 'vae'}), str(tmp_path / 'v'))
  config.model.init_from = f'workdir:{tmp_path / "v"}'
  with pytest.raises(FileNotFoundError, match='no checkpoint'):
    transfer.init_from(config, 'vae', init)


def test_data_classes_selects_labels():
  assert images_lib.parse_classes('0-2,7') == (0, 1, 2, 7)
  assert images_lib.parse_classes('') == ()
  x, y = np.arange(6)[:, None], np.array([0, 1, 2, 0, 1, 2])
  xs, ys = images_lib.select_classes(x, y, (1, 2), 'train')
  np.testing.assert_array_equal(ys, [1, 2, 1, 2])
  np.testing.assert_array_equal(xs[:, 0], [1, 2, 4, 5])
  with pytest.raises(errors.UserError, match='not a list of classes'):
    images_lib.parse_classes('a-b')
  with pytest.raises(errors.UserError, match='keeps no image'):
    images_lib.select_classes(x, y, (9,), 'test')
