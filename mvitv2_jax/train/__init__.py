"""The trainer: train state and steps, optimizer, sharding, checkpoints, metrics, the loop."""

from mvitv2_jax.train.trainer import train_and_evaluate

__all__ = ['train_and_evaluate']
