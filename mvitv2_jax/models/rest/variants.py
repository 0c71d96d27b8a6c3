"""The named ResT and ResTv2 variants as `ResTConfig` fields (the official constructors')."""

_V1 = dict(version=1, embed_dims=(64, 128, 256, 512), num_heads=(1, 2, 4, 8),
           sr_ratios=(8, 4, 2, 1), apply_transform=True)
_V1_WIDE = dict(_V1, embed_dims=(96, 192, 384, 768))

VARIANTS = {
    'rest_lite': dict(_V1, depths=(2, 2, 2, 2)),
    'rest_small': dict(_V1, depths=(2, 2, 6, 2)),
    'rest_base': dict(_V1_WIDE, depths=(2, 2, 6, 2)),
    'rest_large': dict(_V1_WIDE, depths=(2, 2, 18, 2)),
    'restv2_tiny': dict(version=2, depths=(1, 2, 6, 2)),
    'restv2_small': dict(version=2, depths=(1, 2, 12, 2)),
    'restv2_base': dict(version=2, depths=(1, 3, 16, 3)),
    'restv2_large': dict(version=2, embed_dims=(128, 256, 512, 1024), num_heads=(2, 4, 8, 16),
                         depths=(2, 3, 16, 2)),
    # A small model for the demo data (64x64 images, 10 classes) and tests.
    'restv2_demo': dict(version=2, embed_dims=(16, 32, 64, 128), depths=(1, 1, 2, 1),
                        image_size=64, num_classes=10),
}
