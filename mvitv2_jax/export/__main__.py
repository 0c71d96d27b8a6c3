"""`python -m mvitv2_jax.export ...`: the export command from a checkout."""

import sys

from mvitv2_jax.export import cli

sys.exit(cli.main())
