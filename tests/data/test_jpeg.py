"""Tests for mvitv2_jax.data.jpeg."""

import io

import numpy as np
from PIL import Image

from mvitv2_jax.data import jpeg


def test_encode_gives_a_jpeg_close_to_the_image():
  ramp = np.linspace(0, 255, 48, dtype=np.float32)
  image = np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :], 128.0), -1)
  image = image.astype(np.uint8)  # Smooth: JPEG keeps it within a few levels.
  encoded = jpeg.encode(image)
  with Image.open(io.BytesIO(encoded)) as decoded:
    assert decoded.format == 'JPEG' and decoded.size == (48, 48)
    diff = np.abs(np.asarray(decoded, np.int32) - image)
  assert diff.mean() < 2 and diff.max() < 16
