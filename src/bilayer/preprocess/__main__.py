"""``python -m bilayer.preprocess ARGS``: the same as ``bilayer preprocess ARGS`` (same errors and exit codes)."""

import sys

from ..cli import main

sys.exit(main(["preprocess", *sys.argv[1:]]))
