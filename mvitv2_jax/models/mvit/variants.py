"""The named MViT variants (image MViTv2, video MViTv2, MViTv1) as `MViTv2Config` fields."""

VARIANTS = {
    'mvitv2_t': dict(depths=(1, 2, 5, 2)),
    'mvitv2_s': dict(depths=(1, 2, 11, 2)),
    'mvitv2_b': dict(depths=(2, 3, 16, 3)),
    'mvitv2_l': dict(embed_dim=144, num_heads=2, depths=(2, 6, 36, 4), dim_mul_in_att=False),
    'mvitv2_b_cls': dict(depths=(2, 3, 16, 3), cls_token=True),
    'mvitv2_l_cls': dict(embed_dim=144, num_heads=2, depths=(2, 6, 36, 4), cls_token=True),
    'mvitv2_h_cls': dict(embed_dim=192, num_heads=3, depths=(4, 8, 60, 8), cls_token=True),
    # A small model for the demo data (64x64 images, 10 classes) and tests.
    'mvitv2_demo': dict(embed_dim=32, depths=(1, 1, 2, 1), image_size=64, num_classes=10),
}

# The PySlowFast MViT family (Kinetics-400 heads by default): a spatiotemporal stem and
# pooling over (T, H, W), class token, tables resized as the original does when applied.
_VIDEO = dict(num_frames=16, patch_kernel=(3, 7, 7), patch_stride=(2, 4, 4),
              patch_padding=(1, 3, 3), pool_kernel=(3, 3, 3), kv_stride=(1, 8, 8),
              q_stride=(1, 2, 2), cls_token=True, rel_pos_interpolate=True, num_classes=400,
              head_dropout_rate=0.5)
# MViTv1: absolute position embeddings, no rel-pos, no residual pooling, q pooled only at
# stage entries, the MLP widening at the end of each stage.
_MVITV1 = dict(rel_pos=False, residual_pooling=False, dim_mul_in_att=False,
               pool_q_every_block=False, cls_token=True, rel_pos_interpolate=True)
VARIANTS.update({
    'mvitv2_s_16x4': dict(_VIDEO, depths=(1, 2, 11, 2)),
    'mvitv2_b_32x3': dict(_VIDEO, depths=(2, 3, 16, 3), num_frames=32),
    'mvitv2_l_40x3': dict(_VIDEO, embed_dim=144, num_heads=2, depths=(2, 6, 36, 4),
                          num_frames=40, image_size=312),
    'mvit_b_16x4': dict(_VIDEO, **_MVITV1, depths=(1, 2, 11, 2), abs_pos='separable'),
    'mvit_b_16': dict(_MVITV1, depths=(1, 2, 11, 2), abs_pos='joint'),
})
