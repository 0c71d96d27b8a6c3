"""Packaging: pyproject.toml declares requirements.txt's runtime ranges and working commands."""

import importlib
import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _requirements() -> list[str]:
  lines = (ROOT / 'requirements.txt').read_text().splitlines()
  runtime = lines[:lines.index('# Tests')]
  return [line for line in runtime if line and not line.startswith('#')]


def test_dependencies_are_the_runtime_requirements():
  project = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']
  assert project['dependencies'] == _requirements()


def test_console_scripts_resolve_to_mains():
  scripts = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['scripts']
  assert set(scripts) == {'mvitv2-convert', 'mvitv2-predict', 'mvitv2-export'}
  for target in scripts.values():
    module, function = target.split(':')
    assert callable(getattr(importlib.import_module(module), function)), target
