#!/usr/bin/env python3
"""Entry point of the test-cluster harness: ``python3 hack/cluster/cluster.py up|down|images|...``."""

import sys

from mlcluster.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
