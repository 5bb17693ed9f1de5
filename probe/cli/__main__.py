"""``python -m probe.cli``: the ``neurospec`` command line."""

import sys

from probe.cli import main

sys.exit(main())
