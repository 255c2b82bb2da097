"""``python -m pipeline.report OUT``: see ``pipeline.report.cli``."""

import sys

from pipeline.report.cli import main

sys.exit(main())
