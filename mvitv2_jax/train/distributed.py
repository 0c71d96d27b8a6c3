"""A barrier of every process of a run, outside XLA.

The first collective of a step runs on gloo on CPUs, which gives a late peer 30 s; a
process still compiling would fail it. jax has no public barrier on its coordination
service, so this reaches for its client, and falls back to a device collective (with
gloo's timeout) should that private attribute move.
"""

import jax
from jax.experimental import multihost_utils

# How long processes wait for each other, e.g. to finish compiling before the first step.
TIMEOUT_MS = 30 * 60 * 1000


def _coordination_client():
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  return getattr(getattr(distributed, 'global_state', None), 'client', None)


def wait_for_every_process(name: str, timeout_ms: int = TIMEOUT_MS) -> None:
  """Returns once every process has called it with `name` (at once with one process)."""
  if jax.process_count() == 1:
    return
  client = _coordination_client()
  if client is None:
    multihost_utils.sync_global_devices(name)
  else:
    client.wait_at_barrier(name, timeout_in_ms=timeout_ms)
