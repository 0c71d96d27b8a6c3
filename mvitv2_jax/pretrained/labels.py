"""Class names of a checkpoint's label set, from files a dependency ships, else 'class i'."""

from mvitv2_jax.pretrained import table


def names(label_set: str, num_classes: int) -> list[str]:
  """The `num_classes` names of `label_set` in label order.

  Args:
    label_set: a key of `table.LABEL_SETS`, or anything else (e.g. '' for a fine-tuned
      head): then every class is 'class i'.
    num_classes: the head's width; a label set of another size gives 'class i' names.

  Returns:
    A list of `num_classes` strings.
  """
  if label_set == 'imagenet-1k' and num_classes == 1000:
    from mvitv2_jax.data import imagenet  # pylint: disable=g-import-not-at-top (TensorFlow)
    return imagenet.class_names()
  return [f'class {i}' for i in range(num_classes)]


def source(label_set: str) -> str:
  """Where the names of `label_set` come from, for tables and messages."""
  return table.LABEL_SETS.get(label_set, 'unknown: printed as "class i"')
