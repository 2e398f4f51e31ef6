"""`python -m tools.audit`: see tools/audit/cli.py."""

import sys

from tools.audit.cli import main

sys.exit(main())
