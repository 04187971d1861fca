"""Allow ``python -m snubridge``."""

import sys

from snubridge.cli import main

sys.exit(main())
