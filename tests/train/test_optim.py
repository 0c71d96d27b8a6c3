"""Schedule, weight-decay mask and AdamW update against the official recipe."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mvitv2_jax import models
from mvitv2_jax.train import optim
from tests.helpers import training


def _config(**overrides):
  return training.tiny_config(
      batch_size=512, **{'optim.base_lr': 2.5e-4, 'optim.warmup_start_lr': 1e-8,
                         'optim.min_lr': 1e-6, 'optim.warmup_epochs': 70.0,
                         **overrides})


def test_schedule_warmup_peak_cosine_every_step():
  sched = optim.create_schedule(_config(), steps_per_epoch=10, total_steps=3000)
  assert float(sched(0)) == pytest.approx(2e-8)
  # Fractional epochs: half-way through the warmup at step 350.
  assert float(sched(350)) == pytest.approx((2e-8 + 5e-4) / 2, rel=1e-5)
  assert float(sched(700)) == pytest.approx(5e-4, rel=1e-6)
  mid = 700 + (3000 - 700) / 2
  assert float(sched(mid)) == pytest.approx((5e-4 + 2e-6) / 2, rel=1e-5)
  assert float(sched(3000)) == pytest.approx(2e-6, rel=1e-5)
  lrs = np.array([float(sched(s)) for s in range(700, 3000, 7)])
  assert np.all(np.diff(lrs) < 0)


def _params():
  return {
      'patch_embed': {'kernel': jnp.ones((7, 7, 3, 8)), 'bias': jnp.ones(8)},
      'blocks_0': {'norm1': {'scale': jnp.ones(8), 'bias': jnp.ones(8)},
                   'attn': {'rel_pos_h': jnp.ones((5, 4)), 'rel_pos_w': jnp.ones((5, 4)),
                            'rel_pos_t': jnp.ones((3, 4))}},
      'cls_token': jnp.ones((1, 1, 8)),
      'pos_embed_spatial': jnp.ones((1, 4, 8)), 'pos_embed_temporal': jnp.ones((1, 2, 8)),
      'pos_embed_class': jnp.ones((1, 1, 8)), 'pos_embed': jnp.ones((1, 5, 8)),
  }


MVIT = models.family_of('mvitv2_s')


@pytest.mark.parametrize('exclude', [False, True])
def test_decay_mask(exclude):
  mask = optim.decay_mask(_params(), MVIT, no_decay_rel_pos_cls=exclude)
  assert mask['patch_embed'] == {'kernel': True, 'bias': False}
  assert mask['blocks_0']['norm1'] == {'scale': False, 'bias': False}
  # Every position table and token: MViTv2's rel-pos (video: rel_pos_t) and MViTv1's
  # absolute embeddings.
  for name in ('rel_pos_h', 'rel_pos_w', 'rel_pos_t'):
    assert mask['blocks_0']['attn'][name] is (not exclude)
  for name in ('cls_token', 'pos_embed_spatial', 'pos_embed_temporal', 'pos_embed_class',
               'pos_embed'):
    assert mask[name] is (not exclude), name


def test_decay_mask_of_scanned_runs_matches_the_blocks():
  # Stacked params carry a leading axis per scanned run: the mask looks past it.
  stacked = {'blocks_2_3': jax.tree.map(lambda x: jnp.stack([x, x]), _params()['blocks_0'])}
  mask = optim.decay_mask(stacked, MVIT)
  assert mask['blocks_2_3'] == optim.decay_mask(_params(), MVIT)['blocks_0']


def test_adamw_matches_torch_formula():
  config = _config(**{'optim.grad_clip_norm': 0.0})
  lr, wd = 1e-3, config.optim.weight_decay
  tx = optim.create_optimizer(config, lambda _: lr)
  params = {'w': jnp.full((2, 2), 2.0), 'b': jnp.full((2,), 2.0)}
  grads = {'w': jnp.full((2, 2), 0.5), 'b': jnp.full((2,), 0.5)}
  updates, _ = tx.update(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  # torch.optim.AdamW, first step: p * (1 - lr * wd) - lr * m_hat / (sqrt(v_hat) + eps).
  adam = 0.5 / (0.5 + config.optim.eps)
  np.testing.assert_allclose(new['w'], 2.0 * (1 - lr * wd) - lr * adam, rtol=1e-6)
  np.testing.assert_allclose(new['b'], 2.0 - lr * adam, rtol=1e-6)


def test_global_norm_clipping():
  # A large eps makes Adam's step depend on the gradient's size: g / (|g| + 1).
  config = _config(**{'optim.weight_decay': 0.0, 'optim.eps': 1.0})
  tx = optim.create_optimizer(config, lambda _: 1.0)
  params = {'w': jnp.zeros(4)}
  state = tx.init(params)
  # Clipped to global norm 1, a gradient of norm 200 steps like one of norm 1.
  big, _ = tx.update({'w': jnp.full(4, 100.0)}, state, params)
  unit, _ = tx.update({'w': jnp.full(4, 0.5)}, state, params)
  np.testing.assert_allclose(big['w'], unit['w'], rtol=1e-6)


def test_sgd_is_torch_nesterov_with_l2_on_decayed_params():
  config = _config(**{'optim.name': 'sgd', 'optim.weight_decay': 0.1,
                      'optim.grad_clip_norm': 0.0})
  tx = optim.create_optimizer(config, lambda _: 0.5)
  params = {'kernel': jnp.full((2, 2), 2.0), 'bias': jnp.full((2,), 2.0)}
  grads = {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones((2,))}
  state = tx.init(params)
  updates, state = tx.update(grads, state, params)
  # torch.optim.SGD(nesterov=True), first step: d = g + wd p; buf = d; step d + m buf.
  np.testing.assert_allclose(updates['kernel'], -0.5 * (1 + 0.2) * 1.9, rtol=1e-6)
  np.testing.assert_allclose(updates['bias'], -0.5 * 1.0 * 1.9, rtol=1e-6)  # 1-D: no decay.
  updates, _ = tx.update(grads, state, params)
  # Second step: buf = m buf + d; step d + m buf.
  d = 1 + 0.2
  np.testing.assert_allclose(updates['kernel'], -0.5 * (d + 0.9 * (0.9 * d + d)), rtol=1e-6)


def test_unknown_optimizer_is_refused():
  with pytest.raises(ValueError, match="optim.name must be 'adamw' or 'sgd'"):
    optim.create_optimizer(_config(**{'optim.name': 'lamb'}), lambda _: 0.1)


LIT = models.family_of('lit_s')


def test_lit_offset_conv_weights_train_at_a_hundredth():
  # The official param groups: conv_offset's weight at 0.01x; its bias is 1-D (no-decay
  # group, full rate), as is everything else.
  shapes = jax.eval_shape(models.create_model('litv2_s', depths=(1, 1, 1, 1)).init,
                          jax.random.key(0), jnp.zeros((1, 64, 64, 3)))['params']
  flat = {'/'.join(k.key for k in path): m for path, m in
          jax.tree_util.tree_leaves_with_path(optim.lr_multipliers(shapes, LIT))}
  slow = sorted(name for name, m in flat.items() if m != 1.0)
  assert slow == [f'layers_{i}/downsample/dconv/conv_offset/kernel' for i in range(3)]
  assert {flat[name] for name in slow} == {0.01}
  assert flat['layers_0/downsample/dconv/conv_offset/bias'] == 1.0
  assert optim.lr_multipliers(_params(), MVIT) == jax.tree.map(lambda _: 1.0, _params())


def test_multiplied_group_steps_at_its_own_rate():
  config = _config(model='lit_s', **{'optim.grad_clip_norm': 0.0})
  conv = {'kernel': jnp.full((2, 2, 4, 8), 2.0)}
  params = {'dconv': {'conv_offset': conv, 'kernel': conv['kernel']}}
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
  tx = optim.create_optimizer(config, lambda _: 1e-3)  # Default groups: m * schedule.
  updates, _ = tx.update(grads, tx.init(params), params)
  # AdamW's whole step (decay included) is the group's rate times the same direction.
  np.testing.assert_allclose(updates['dconv']['conv_offset']['kernel'],
                             0.01 * updates['dconv']['kernel'], rtol=1e-6)
  # With a group schedule, that schedule drives the group.
  tx = optim.create_optimizer(config, lambda _: 1e-3, lambda m: (lambda _: 0.0))
  updates, _ = tx.update(grads, tx.init(params), params)
  assert not np.any(updates['dconv']['conv_offset']['kernel'])
  assert np.all(updates['dconv']['kernel'] < 0)


def test_group_schedule_multiplies_only_the_peak():
  # timm's schedulers: each group warms up from the same start to its own peak and
  # decays to the same end.
  base = optim.create_schedule(_config(), steps_per_epoch=10, total_steps=3000)
  group = optim.create_schedule(_config(), steps_per_epoch=10, total_steps=3000,
                                peak_multiplier=0.01)
  assert float(group(0)) == pytest.approx(float(base(0)))
  assert float(group(700)) == pytest.approx(0.01 * float(base(700)), rel=1e-6)
  assert float(group(3000)) == pytest.approx(float(base(3000)), rel=1e-5)
