"""`python -m benchmarks.peers`: the cross-library comparison (see benchmarks/peers/driver.py)."""

import sys

from benchmarks.peers.driver import main

sys.exit(main())
