"""The README's "Pretrained models" table is the one tools/pretrained_table.py writes."""

from tools import pretrained_table


def test_readme_table_is_up_to_date():
  text = pretrained_table.README.read_text()
  assert pretrained_table.render(text) == text, 'run python -m tools.pretrained_table'


def test_every_checkpoint_has_a_row():
  from mvitv2_jax import pretrained  # pylint: disable=g-import-not-at-top
  table = pretrained_table.markdown()
  assert all(f'| `{name}` |' in table for name in pretrained.names())
