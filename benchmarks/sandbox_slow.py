"""A stand-in for a plugin that imports something heavy (torch): importing it takes 1 s.

Used by benchmarks/sandbox_bench.py to compare cold calls with calls forked from a Preload
warm host. Never imported by the portal.
"""

import time

IMPORT_SECONDS = 1.0
time.sleep(IMPORT_SECONDS)  # the "heavy import"

_MODEL = {"weights": list(range(1000))}


def predict(x: float) -> float:
    return x * len(_MODEL["weights"])
