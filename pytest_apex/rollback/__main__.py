"""``python -m pytest_apex.rollback``: see `pytest_apex.rollback.cli`."""

import sys

from pytest_apex.rollback.cli import main

sys.exit(main())
