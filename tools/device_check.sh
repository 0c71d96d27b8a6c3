#!/usr/bin/env bash
# The device check on a lent accelerator host, as one command:
#   bash tools/device_check.sh OUT_DIR [device_check flags]
# The host has jax, flax, optax, orbax and torch but not ml_collections, which travels as a
# wheel in .device_wheels/ (made beside the checkout first:
#   pip download --no-deps --dest .device_wheels ml_collections).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bash tools/device_check.sh OUT_DIR [flags of python -m tools.device_check]}
shift
if ! python -c 'import ml_collections' 2>/dev/null; then
  python -m pip install --quiet --no-index --find-links .device_wheels ml_collections
fi
exec python -m tools.device_check --out "$out" "$@"
