"""Video checkpoints: PySlowFast files, their errors, resizing, and inflation from images."""

import jax
import numpy as np
import pytest

from mvitv2_jax import checkpoint
from mvitv2_jax import convert
from mvitv2_jax import models
from tests.helpers import golden

TINY_V2 = ('mvitv2_s_16x4', dict(embed_dim=8, depths=(1, 1, 2, 1), image_size=32,
                                 num_frames=4, kv_stride=(1, 4, 4), num_classes=10))
TINY_V1 = ('mvit_b_16x4', dict(TINY_V2[1], pool_q_every_block=True))


def _pyth(variant):
  return str(golden.VIDEO_DIR / f'{variant}.pyth')


def test_a_v2_file_into_a_v1_model_names_what_differs():
  name, overrides = TINY_V1
  with pytest.raises(convert.ConversionError) as error:
    convert.load_params(_pyth('tiny_v2'), name, **overrides)
  missing, unexpected, mismatched = str(error.value).split('; ')[1:4]
  assert missing.startswith('missing (7):')
  for key in ('pos_embed_class', 'pos_embed_spatial', 'pos_embed_temporal', 'blocks.0.proj.weight'):
    assert key in missing
  assert unexpected.startswith('unexpected (19): blocks.0.attn.rel_pos_h, blocks.0.attn.rel_pos_w, '
                               'blocks.0.attn.rel_pos_t')
  assert 'blocks.0.mlp.fc2.weight (32, 8) vs (32, 16)' in mismatched  # The MLP widens in v1.
  assert 'num_frames=4' in str(error.value)


@pytest.mark.slow
def test_a_wrong_variant_names_the_one_it_looks_like():
  state_dict = golden.recipe_state_dict('v2_s16x4_k400')
  with pytest.raises(convert.ConversionError, match='looks like mvitv2_s_16x4'):
    convert.convert_state_dict(state_dict, models.create_model('mvitv2_b_32x3'))


def test_other_frame_count_and_size_resize_tables_and_embeddings():
  name, overrides = TINY_V1
  overrides = dict(overrides, num_frames=8, image_size=48)
  params = convert.load_params(_pyth('tiny_v1'), name, **overrides)
  source = checkpoint.read_state_dict(_pyth('tiny_v1'))
  assert source['pos_embed_spatial'].shape == (1, 64, 8)  # 8x8 tokens at 32 px.
  assert params['pos_embed_spatial'].shape == (1, 144, 8)  # 12x12 at 48 px.
  assert params['pos_embed_temporal'].shape == (1, 4, 8)  # 8 frames, temporal stride 2.
  np.testing.assert_array_equal(params['pos_embed_class'], source['pos_embed_class'])
  # Constant along an axis stays constant: linear interpolation of a resized grid.
  spatial = source['pos_embed_spatial'][0].reshape(8, 8, 8)
  resized = params['pos_embed_spatial'][0].reshape(12, 12, 8)
  np.testing.assert_allclose(resized[0, 0], spatial[0, 0], rtol=1e-6)
  model = models.create_model(name, **overrides)
  clips = np.zeros((1, 8, 48, 48, 3), np.float32)
  assert np.isfinite(jax.jit(model.apply)({'params': params}, clips)).all()

  name, overrides = TINY_V2
  params = convert.load_params(_pyth('tiny_v2'), name, **dict(overrides, num_frames=8))
  assert params['blocks_0']['attn']['rel_pos_t'].shape == (7, 8)  # 2 * 4 - 1.


def test_video_params_export_to_the_pyslowfast_layout():
  name, overrides = TINY_V2
  params = convert.load_params(_pyth('tiny_v2'), name, **overrides)
  exported = convert.params_to_state_dict(params, name)
  for key, value in checkpoint.read_state_dict(_pyth('tiny_v2')).items():
    np.testing.assert_array_equal(exported[key], value, err_msg=key)


@pytest.mark.parametrize('cls_token', [False, True])
def test_inflated_image_model_computes_the_image_model_on_still_clips(cls_token):
  # The image model's strides (kv 4, patch 4 spatially), any temporal kernel: on a clip of
  # identical frames every frame is the image, and attention over copies of each key is
  # attention over the keys. The class token has no copies, so with one it takes one
  # token frame (2 frames, temporal patch stride 2).
  image_overrides = golden.TINY_CLS if cls_token else golden.TINY
  image_file = 'tiny_cls.pyth' if cls_token else 'tiny.pyth'
  image_model = models.create_model('mvitv2_t', **image_overrides)
  image_params = convert.load_params(str(golden.DIR / image_file), 'mvitv2_t', **image_overrides)
  frames = 2 if cls_token else 4
  video_overrides = dict(image_overrides, num_frames=frames, kv_stride=(1, 4, 4),
                         cls_token=cls_token, head_dropout_rate=0.0, rel_pos_interpolate=False)
  video_params = convert.load_params(str(golden.DIR / image_file), 'mvitv2_s_16x4',
                                     inflate=True, **video_overrides)
  assert video_params['patch_embed']['kernel'].shape == (3, 7, 7, 3, 8)
  assert not video_params['patch_embed']['kernel'][0].any()
  assert not video_params['blocks_0']['attn']['rel_pos_t'].any()
  images = golden.load('tiny_cls' if cls_token else 'tiny')['input_nhwc']
  clips = np.repeat(images[:, None], frames, axis=1)
  video_model = models.create_model('mvitv2_s_16x4', **video_overrides)
  want = jax.jit(lambda p, x: image_model.apply({'params': p}, x))(image_params, images)
  got = jax.jit(lambda p, x: video_model.apply({'params': p}, x))(video_params, clips)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_inflation_with_a_new_head_and_class_token():
  # A no-cls image checkpoint into a cls video model with a Kinetics head.
  name, overrides = TINY_V2
  params = convert.load_params(str(golden.DIR / 'tiny.pyth'), name, inflate=True,
                               drop_head=True, **dict(overrides, num_classes=400,
                                                      kv_stride=(1, 4, 4)))
  assert params['head']['kernel'].shape == (64, 400) and params['cls_token'].shape == (1, 1, 8)
  with pytest.raises(convert.ConversionError, match='video models'):
    convert.load_params(str(golden.DIR / 'tiny.pyth'), 'mvitv2_t', inflate=True, **golden.TINY)
