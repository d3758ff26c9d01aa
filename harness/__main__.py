"""``python -m harness`` is ``archbench``."""

import sys

from harness.cli import main

sys.exit(main())
