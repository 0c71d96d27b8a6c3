"""The analytic FLOP count of MViT against the published one."""

import pytest

from mvitv2_jax import models


def test_model_flops_match_paper():
  # fvcore counts MViTv2-S at 224 as 7.0 GMACs (timm 7.00, official README 7.0).
  flops = sum(models.flops_per_example(models.create_model('mvitv2_s'), 224).values())
  assert flops / 2e9 == pytest.approx(7.0, abs=0.05)


def test_attention_matmuls_are_a_small_part():
  parts = models.flops_per_example(models.create_model('mvitv2_s'), 224)
  # q.k and attn.v: a few percent of MViTv2-S, most of it at stage 1's 3136 queries.
  assert 0.02 < parts['attention'] / sum(parts.values()) < 0.3
