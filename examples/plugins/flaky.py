"""Calls an unreliable upstream service: fails about half of the time.

Pass fail=true or fail=false to decide instead of chance.
"""

import random

version = "1.0"
limits = {"timeout_s": 10}


def run(fail=None):
    if fail is None:
        fail = random.random() < 0.5
    if fail:
        raise ConnectionError("upstream service did not answer within 5 s (simulated flake)")
    return {"status": "upstream answered"}
