"""Sleeps for the given number of seconds, then says how long it slept."""

import time

version = "1.0"
limits = {"timeout_s": 300, "cpu_s": 10}


def run(seconds=1.0):
    time.sleep(float(seconds))
    return {"slept_s": float(seconds)}
