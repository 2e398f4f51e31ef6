"""Run outcomes against the registry from a separate OS process (used by test_concurrency).

Usage: python -m tests.concurrency_worker PLUGIN[,PLUGIN...] RUNS_PER_PLUGIN
Each run is queued, started and finished; even runs succeed, odd ones fail.
"""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    from tests.concurrency_support import record_runs

    names, runs = sys.argv[1].split(","), int(sys.argv[2])
    record_runs(names, runs, worker=f"process:{os.getpid()}")


if __name__ == "__main__":
    main()
