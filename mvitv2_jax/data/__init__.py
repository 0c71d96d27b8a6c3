"""Input data: TFDS access, the record stream, the image and video sources, augmentation,
mixup, the demo datasets, ImageNet's transform."""
