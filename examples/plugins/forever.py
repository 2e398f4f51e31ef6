"""Loops forever: the sandbox stops it after its 2 s timeout."""

version = "1.0"
limits = {"timeout_s": 2, "cpu_s": 10}


def run():
    while True:
        pass
