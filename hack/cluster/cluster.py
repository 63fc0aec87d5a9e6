#!/usr/bin/env python3
"""Entry point of the test-cluster harness: ``python3 hack/cluster/cluster.py up|down|images|...``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mlcluster.__main__ import main

sys.exit(main())
