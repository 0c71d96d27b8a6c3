"""The named LIT and LITv2 variants as `LITConfig` fields (the official configs')."""

_S = dict(embed_dims=(96, 192, 384, 768), num_heads=(3, 6, 12, 24), depths=(2, 2, 6, 2))
_M = dict(_S, depths=(2, 2, 18, 2))
_B = dict(embed_dims=(128, 256, 512, 1024), num_heads=(4, 8, 16, 32), depths=(2, 2, 18, 2))

VARIANTS = {
    'lit_ti': dict(layout='pvt', embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8),
                   mlp_ratios=(8.0, 8.0, 4.0, 4.0), depths=(3, 4, 6, 3)),
    'lit_s': dict(_S),
    'lit_m': dict(_M),
    'lit_b': dict(_B),
    # configs/litv2-{small,medium,base}.yaml: ALPHA 0.9, LOCAL_WS [0, 0, 2, 1].
    'litv2_s': dict(_S, version=2),
    'litv2_m': dict(_M, version=2),
    'litv2_b': dict(_B, version=2),
    # A small model for the demo data (64x64 images, 10 classes) and tests.
    'litv2_demo': dict(version=2, embed_dims=(16, 32, 64, 128), num_heads=(1, 2, 4, 8),
                       depths=(1, 1, 2, 1), image_size=64, num_classes=10),
}
