"""`python -m mvitv2_jax.convert`: see `cli`."""

import sys

from mvitv2_jax.convert import cli

sys.exit(cli.main())
