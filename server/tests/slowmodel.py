"""A classifier that takes its time, for drain tests: it touches ``$SLOW_MODEL_MARKER`` on entry."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np


class SlowClassifier:
    n_features_in_ = 2

    def predict(self, x: np.ndarray) -> np.ndarray:
        marker = os.environ.get("SLOW_MODEL_MARKER")
        if marker and len(x) == 1 and x[0, 0] == 42:
            Path(marker).touch()
            time.sleep(1.5)
        return np.zeros(len(x), dtype=int)
