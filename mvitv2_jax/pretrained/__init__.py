"""The released checkpoints by name: a table, a verified download cache, converted params.

  from mvitv2_jax import pretrained
  params = pretrained.load_pretrained('mvitv2_s')         # {'patch_embed': ..., ...}
  model = pretrained.create_model('mvitv2_s')             # bound: model(images)
  pretrained.label_names('mvitv2_s')                      # the 1000 ImageNet names

`table.py` holds the rows (URL, accuracy, preprocessing, label set, sources),
`download.py` the cache ($MVITV2_CACHE, atomic and resumable downloads pinned to the
SHA-256 recorded on first download, $MVITV2_WEIGHTS_MIRROR), `loading.py` conversion
(once, cached) and models, `labels.py` class names. Importing it imports no TensorFlow.
"""

from mvitv2_jax.pretrained import labels
from mvitv2_jax.pretrained.download import (CACHE_ENV, MIRROR_ENV, DownloadError, cache_dir,
                                            source_url)
from mvitv2_jax.pretrained.loading import (PREFIX, UnknownCheckpointError, checkpoint_file,
                                           create_model, get, load_pretrained,
                                           model_config_overrides, names, resolve)
from mvitv2_jax.pretrained.table import CHECKPOINTS, Checkpoint, Preprocessing


def label_names(name: str) -> list[str]:
  """The class names of checkpoint `name`'s head ('class i' where none are shipped)."""
  row = get(name)
  return labels.names(row.label_set, row.num_classes)


__all__ = [
    'CACHE_ENV', 'CHECKPOINTS', 'Checkpoint', 'DownloadError', 'MIRROR_ENV', 'PREFIX',
    'Preprocessing', 'UnknownCheckpointError', 'cache_dir', 'checkpoint_file', 'create_model',
    'get', 'label_names', 'labels', 'load_pretrained', 'model_config_overrides', 'names',
    'resolve', 'source_url',
]
