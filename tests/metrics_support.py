"""Reading /metrics in tests: samples by name and labels, from a client or a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]

Samples = dict[str, dict[tuple, float]]


def parse(text: str) -> Samples:
    """Samples by name, each keyed by its sorted label pairs."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[key] = sample.value
    return samples


def scrape(client) -> Samples:
    """GET /metrics through a Django or DRF test client: 200, Prometheus text 0.0.4."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(response.content.decode())


def scrape_in_new_process(*, database_url: str, var_dir: Path) -> Samples:
    """/metrics as a server process started now would answer it (python -m tests.metrics_scrape)."""
    env = {**os.environ, "DATABASE_URL": database_url, "PORTAL_VAR_DIR": str(var_dir)}
    done = subprocess.run(
        [sys.executable, "-m", "tests.metrics_scrape"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return parse(done.stdout)


def of(plugin: str, **labels: str) -> tuple:
    """The label key of a plugin's sample."""
    return tuple(sorted({"plugin": plugin, **labels}.items()))
