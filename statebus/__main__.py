"""``python -m statebus`` is the ``statebus`` command (see :mod:`statebus.cli`)."""

from __future__ import annotations

import sys

from statebus.cli import main

if __name__ == "__main__":
    sys.exit(main())
