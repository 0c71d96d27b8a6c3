"""Image and video classification: mixup, soft-target cross-entropy, top-1 / top-5.

A config with a `video` section reads clips (`mvitv2_jax.data.video`), else images
(`mvitv2_jax.data.images`). Batches are `image` float [B, *input shape] (a test video
[B, views, T, H, W, 3]) and `label` int32 [B], plus `mask` bool [B] in evaluation.
"""

import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from mvitv2_jax import config_fields as fields
from mvitv2_jax import models
from mvitv2_jax.data import mixup
from mvitv2_jax.tasks import base

Config = ml_collections.ConfigDict

_CHECKS = {
    'num_classes': fields.int_at_least(1),
    'image_size': fields.int_at_least(1),
    'drop_path_rate': fields.real_in(0, 1, high_open=True),
    'eval_crop_pct': fields.real_in(0, 1, low_open=True),
    'aug': fields.section,
    'aug.min_crop_scale': fields.real_in(0, 1, low_open=True),
    'aug.flip': fields.boolean,
    'aug.randaugment_num_ops': fields.int_at_least(0),
    'aug.randaugment_magnitude': fields.real_in(0, 10),
    'aug.randaugment_magnitude_std': fields.real_at_least(0),
    'aug.random_erase_prob': fields.real_in(0, 1),
    'aug.mixup_alpha': fields.real_at_least(0),
    'aug.cutmix_alpha': fields.real_at_least(0),
    'aug.mixup_prob': fields.real_in(0, 1),
    'aug.cutmix_switch_prob': fields.real_in(0, 1),
    'aug.label_smoothing': fields.real_in(0, 1, high_open=True),
}
# The `video` section, which only video configs have (configs/video/kinetics.py).
_VIDEO_CHECKS = {
    'video': fields.section,
    'video.video_key': fields.name,
    'video.label_key': fields.name,
    'video.sampling': fields.one_of(('stride', 'segments')),
    'video.sampling_rate': fields.int_at_least(1),
    'video.num_sample': fields.int_at_least(1),
    'video.eval_clips': fields.int_at_least(1),
    'video.eval_crops': fields.one_of((1, 3)),
}


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Per-example soft-target cross-entropy: logits [B, C], targets [B, C] -> float32 [B]."""
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """`[B]` float32: 1 where `labels` is among the `k` highest logits."""
  # Rank = number of classes ranked above the label (no sort); ties go to the
  # lower class index, as with argmax, so constant logits are not all correct.
  label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
  classes = jnp.arange(logits.shape[-1])
  above = (logits > label_logit) | (
      (logits == label_logit) & (classes < labels[:, None]))
  rank = jnp.sum(above, axis=-1)
  return (rank < k).astype(jnp.float32)


def eval_sums(logits: jax.Array, labels: jax.Array,
              mask: jax.Array) -> dict[str, jax.Array]:
  """Sums over unmasked examples of loss, top-1 and top-5, plus their count.

  Args:
    logits: `[B, C]`.
    labels: `[B]` int.
    mask: `[B]` bool; False for padding, which counts zero.

  Returns:
    Scalars `loss`, `top1`, `top5`, `count` (sums, not means).
  """
  mask = mask.astype(jnp.float32)
  targets = jax.nn.one_hot(labels, logits.shape[-1])
  return {
      'loss': jnp.sum(cross_entropy(logits, targets) * mask),
      'top1': jnp.sum(topk_correct(logits, labels, 1) * mask),
      'top5': jnp.sum(topk_correct(logits, labels, 5) * mask),
      'count': jnp.sum(mask),
  }


class _MeanEvaluator(base.SumEvaluator):
  """Sums of the eval step, as means per example."""

  def result(self) -> dict[str, float]:
    sums = super().result()
    count = sums['count']
    return {'loss': sums['loss'] / count, 'top1': sums['top1'] / count,
            'top5': sums['top5'] / count, 'count': count}


class Classification(base.Task):
  """Classification of images or videos by any classifier family."""

  name = 'classification'
  best_metric = 'top1'

  def config_checks(self, config: Config) -> dict[str, fields.Check]:
    return {**_CHECKS, **_VIDEO_CHECKS} if 'video' in config else dict(_CHECKS)

  def check_config(self, config: Config) -> str | None:
    cfg = models.variant_config(config.model, **self._model_options(config))
    multiple, why = models.family_of(config.model).image_size_rule(cfg)
    if config.image_size % multiple == 0:
      return None
    lower = max(config.image_size // multiple * multiple, multiple)
    return (f'config.image_size = {config.image_size}: {config.model} needs a multiple of '
            f'{multiple} ({why}), e.g. {lower} or {lower + multiple}')

  @staticmethod
  def _model_options(config: Config) -> dict[str, Any]:
    return dict(num_classes=config.num_classes, image_size=config.image_size,
                drop_path_rate=config.drop_path_rate, dtype=config.dtype,
                **config.model_overrides.to_dict())

  def create_model(self, config: Config) -> nn.Module:
    return models.create_model(config.model, **self._model_options(config))

  def data_source(self, config: Config) -> base.DataSource:
    # The sources need TensorFlow, the steps do not (tools/device_check.py runs without it).
    from mvitv2_jax.data import images, video  # pylint: disable=g-import-not-at-top
    return video if 'video' in config else images

  def batch_spec(self, config: Config, model: nn.Module, batch_size: int, *,
                 train: bool) -> dict[str, jax.ShapeDtypeStruct]:
    example = models.input_shape(model)
    if not train and 'video' in config:
      from mvitv2_jax.data import video  # pylint: disable=g-import-not-at-top
      example = (video.num_views(config), *example)
    spec = {'image': jax.ShapeDtypeStruct((batch_size, *example), jnp.float32),
            'label': jax.ShapeDtypeStruct((batch_size,), jnp.int32)}
    if not train:
      spec['mask'] = jax.ShapeDtypeStruct((batch_size,), jnp.bool_)
    return spec

  def init_inputs(self, model: nn.Module) -> tuple[Any, ...]:
    return (jnp.zeros((1, *models.input_shape(model))),)

  def prepare_batch(self, rng: jax.Array, batch: base.Batch, config: Config) -> base.Batch:
    """Mixup / CutMix over the whole global batch, with smoothed soft targets."""
    a = config.aug
    images, targets = mixup.mix_batch(
        rng, batch['image'], batch['label'], config.num_classes,
        mixup_alpha=a.mixup_alpha, cutmix_alpha=a.cutmix_alpha, mixup_prob=a.mixup_prob,
        cutmix_switch_prob=a.cutmix_switch_prob, label_smoothing=a.label_smoothing)
    return {'image': images, 'targets': targets, 'label': batch['label']}

  def loss(self, model, variables, batch, rng, config):
    # Every collection besides the params (BatchNorm's statistics) moves with the batch.
    mutable = [name for name in variables if name != 'params']
    logits, collections = model.apply(variables, batch['image'], train=True,
                                      rngs={'dropout': rng}, mutable=mutable)
    loss = jnp.mean(cross_entropy(logits, batch['targets']))
    return loss, {'accuracy': jnp.mean(topk_correct(logits, batch['label'], 1))}, collections

  def eval_outputs(self, model, variables, batch, config):
    """Sums of loss, top-1, top-5 and count over the unmasked examples.

    An example with views (`[B, V, ...]`, e.g. the test clips and crops of a video) is
    scored by its softmax averaged over them.
    """
    images = batch['image']
    apply = lambda x: model.apply(variables, x, train=False)
    if images.ndim == len(models.input_shape(model)) + 1:
      logits = apply(images)
    else:
      # One view of every example at a time: memory as for a batch without views.
      probs = jax.lax.map(lambda x: jax.nn.softmax(apply(x)), jnp.swapaxes(images, 0, 1))
      # Log-probabilities are logits whose softmax is the averaged softmax.
      logits = jnp.log(jnp.maximum(jnp.mean(probs, axis=0), jnp.finfo(jnp.float32).tiny))
    return eval_sums(logits, batch['label'], batch['mask'])

  def evaluator(self, config: Config) -> base.Evaluator:
    return _MeanEvaluator()

  def divergence_bound(self, config: Config) -> float:
    """Ten times the loss of a uniform guess."""
    return 10 * max(math.log(config.num_classes), 1.0)

  def format_train(self, means: Mapping[str, float]) -> str:
    return f'acc {means["accuracy"]:.3f}'

  def format_eval(self, results: Mapping[str, float]) -> str:
    unreadable = results.get('unreadable', 0)
    return (f'loss {results["loss"]:.4f}  top-1 {results["top1"]:.4f}  top-5 '
            f'{results["top5"]:.4f} ({results["count"]:.0f} images'
            + (f', {unreadable:.0f} unreadable left out)' if unreadable else ')'))
