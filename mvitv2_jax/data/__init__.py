"""Input data: the TFDS pipeline, augmentation, mixup, the demo dataset, ImageNet's transform."""
