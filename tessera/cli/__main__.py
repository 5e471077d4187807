"""`python -m tessera.cli`: the `tessera` command."""

import sys

from tessera.cli.main import main

sys.exit(main())
