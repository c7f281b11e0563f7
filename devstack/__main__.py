"""``python -m devstack``: the same as ``make run`` (devstack/local_run.py)."""

import sys

from devstack.local_run import main

sys.exit(main())
