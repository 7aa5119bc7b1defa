"""Entry point of ``python -m spiraljax.report``."""

import sys

from spiraljax.report import main

sys.exit(main())
