"""``python -m scheduler.simulation``: the ``wattsched simulate`` command on its own."""

import sys

from scheduler.simulation.cli import main

sys.exit(main())
