"""Fixtures of the reader tests."""

import pytest

from tests.helpers import checkpoint_files


@pytest.fixture
def fake_torch(monkeypatch):
  """Modules named like torch's, so that pickle writes torch's own globals."""
  return checkpoint_files.fake_torch_modules(monkeypatch)
