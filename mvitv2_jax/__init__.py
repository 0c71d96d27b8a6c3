"""MViTv2 (Li et al., CVPR 2022) in JAX/Flax: models, checkpoint conversion, training."""
