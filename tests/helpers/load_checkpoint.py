"""`python -m tests.helpers.load_checkpoint PATH [MARKER]`: convert.load_params on one file.

Prints `error: <exception type>: <message>` and exits 1 when load_params raises one of
the two errors it documents; any other exception escapes with its traceback. With
MARKER, exits 3 if any object of the reader's modules (mvitv2_jax.checkpoint.*) gained
an attribute of that name (a pickle BUILD that altered the reader).
"""

import sys

from mvitv2_jax import convert


def _reader_modules() -> list:
  return [module for name, module in sorted(sys.modules.items())
          if name == 'mvitv2_jax.checkpoint' or name.startswith('mvitv2_jax.checkpoint.')]


def _altered(marker: str) -> bool:
  objects = [value for module in _reader_modules() for value in vars(module).values()]
  objects += [member for obj in objects if isinstance(obj, type) for member in vars(obj).values()]
  for obj in objects:
    try:
      if marker in vars(obj):
        return True
    except TypeError:  # No __dict__.
      pass
  return False


def main(argv) -> int:
  path, marker = argv[0], (argv[1] if len(argv) > 1 else None)
  status = 0
  try:
    convert.load_params(path, 'mvitv2_t')
  except (convert.ConversionError, convert.CheckpointFormatError) as e:
    print(f'error: {type(e).__name__}: {e}', file=sys.stderr)
    status = 1
  if marker and _altered(marker):
    return 3
  return status


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
