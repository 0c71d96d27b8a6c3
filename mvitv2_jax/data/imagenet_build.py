"""TFDS's `imagenet2012` builder with every image decoded once while building.

The same dataset as `tfds.builder('imagenet2012')` (name, version, features, files), but
an image that does not decode as training decodes it is left out, named in a warning and
in `build_report.txt` beside the dataset, and the build stops when more than
`max_bad_fraction` of a split is bad. Used by `python -m mvitv2_jax.data.prepare
imagenet2012`.
"""

import os

from tensorflow_datasets.datasets.imagenet2012 import imagenet2012_dataset_builder

from mvitv2_jax.data import build_report
from mvitv2_jax.data import frames_check

_ARCHIVES = {'train': 'ILSVRC2012_img_train.tar', 'validation': 'ILSVRC2012_img_val.tar',
             'test': 'ILSVRC2012_img_test.tar'}


class CheckedImagenet2012(imagenet2012_dataset_builder.Builder, skip_registration=True):
  """`imagenet2012`, building only the images that decode."""

  name = 'imagenet2012'  # Its data: what tfds.builder('imagenet2012') reads.

  def __init__(self, *, max_bad_fraction: float = build_report.DEFAULT_MAX_BAD_FRACTION,
               **kwargs):
    """As TFDS's builder, plus the share of bad images per split that stops the build."""
    self._max_bad_fraction = max_bad_fraction
    self.build_report = None
    super().__init__(**kwargs)

  def report_path(self) -> str:
    """Where the build report goes: beside the dataset's version folders."""
    return os.path.join(os.fspath(self.data_dir_root), self.name, build_report.REPORT_NAME)

  def _split_generators(self, dl_manager):
    self.build_report = build_report.BuildReport(self.report_path(), self._max_bad_fraction)
    return super()._split_generators(dl_manager)

  def _generate_examples(self, archive, validation_labels=None, labels_exist=True):
    split = 'test' if not labels_exist else 'validation' if validation_labels else 'train'
    examples = super()._generate_examples(archive, validation_labels, labels_exist)
    for key, example in examples:
      image = example['image']
      data = image if isinstance(image, bytes) else image.read()
      try:
        frames_check.image_shape(data)
      except frames_check.BadItem as e:
        folder = example.get('label') if split == 'train' else None
        self.build_report.skip(split, f'{_ARCHIVES[split]}:{key}', str(e),
                          folder=f'{_ARCHIVES[split]}:{folder or split}')
        continue
      self.build_report.keep(split)
      yield key, {**example, 'image': data}
    self.build_report.finish_split(split)
