"""RandomResizedCrop's window: the one sampler of the image and the clip train transforms.

TF's stateless box sampler with torchvision's ranges: area a fraction of the image in
[min_scale, 1], aspect ratio (width / height) in [3/4, 4/3], 10 attempts, then the whole
image. Each transform crops and resizes the window its own way.
"""

import tensorflow as tf

ASPECT_RANGE = (3 / 4, 4 / 3)


def sample_window(image_shape: tf.Tensor, seed: tf.Tensor, *,
                  min_scale: float) -> tuple[tf.Tensor, tf.Tensor]:
  """A random crop window of an image (or of every frame of a clip).

  Args:
    image_shape: int32 [3], the image's [H, W, C].
    seed: int64 [2].
    min_scale: smallest crop area as a fraction of the image.

  Returns:
    (begin, size), int32 [3] each, as `tf.slice` takes them: [top, left, 0] and
    [height, width, -1].
  """
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      image_shape, tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]), seed,
      min_object_covered=0.0, aspect_ratio_range=ASPECT_RANGE,
      area_range=(min_scale, 1.0), max_attempts=10,
      use_image_if_no_bounding_boxes=True)
  return begin, size
