"""How long the fault tests run: the issue's full length under ``make test-soak`` (``MLMODEL_SOAK=1``),
fewer iterations of the same assertions under ``make test``, to keep ``.ci/run`` within its budget."""

from __future__ import annotations

import os

SOAK = os.environ.get("MLMODEL_SOAK") == "1"

# Serving pods deleted under load, one every POD_KILL_INTERVAL seconds: gracefully, then with SIGKILL.
POD_KILLS = 6 if SOAK else 1  # per kind of delete: 6 x 30 s = the 3 minutes
POD_KILL_INTERVAL = 30.0 if SOAK else 20.0
# The idle window: 5 minutes, or (make test) this many resync rounds over every ModelDeployment.
IDLE_SECONDS = 300.0 if SOAK else 0.0
IDLE_ROUNDS = 4
