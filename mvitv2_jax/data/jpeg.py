"""JPEG bytes of a uint8 image, as the self-building demo datasets store images and frames."""

import io

import numpy as np
from PIL import Image

# Part of the demos' data: another quality gives other pixels, so other results.
QUALITY = 90


def encode(image: np.ndarray) -> bytes:
  """uint8 [H, W, 3] -> JPEG bytes at `QUALITY`."""
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='JPEG', quality=QUALITY)
  return buffer.getvalue()
