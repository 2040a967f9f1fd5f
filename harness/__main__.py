"""``python -m harness``: the same command line as the ``stabprobe`` script."""

import sys

from harness.cli import main

sys.exit(main(prog="python -m harness"))
