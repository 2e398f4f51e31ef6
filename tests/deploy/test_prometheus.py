"""deploy/prometheus/: the alerting rules pass promtool, and a live /metrics scrape lints clean."""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from plugins_app import services

# promtool is an outside tool (Debian's prometheus package): the hook leaves these to CI.
pytestmark = pytest.mark.promtool

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
SERIES_NAME = re.compile(r"\bportal_[a-z_]+\b")


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run Debian's promtool; a machine without it fails the test, saying how to install it."""
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is not installed, so the alerting rules and /metrics cannot be checked: "
            "install Debian's prometheus package (apt-get install prometheus), as .ci/run does"
        )
    return subprocess.run(
        [found, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def alert_rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def live_scrape(live_server) -> str:
    with urllib.request.urlopen(f"{live_server.url}/metrics", timeout=30) as response:
        assert response.status == 200
        return response.read().decode()


@pytest.fixture
def busy_registry(make_plugin, finish_run, live_server):
    """Plugins with runs of several outcomes and a health read, so every series is in a scrape."""
    make_plugin("ocr")
    finish_run("ocr", duration_ms=40.0)
    finish_run("ocr", status="crashed", outcome="memory", duration_ms=900.0)
    services.plugin_mark_unavailable(name="gpu", reason="No CUDA GPU found here", actor="t")
    services.run_queue(name="ocr", params={}, actor="t")
    with urllib.request.urlopen(f"{live_server.url}/v1/plugins", timeout=30) as response:
        assert response.status == 200  # fills the health snapshot, whose age is a series


class TestAlertRules:
    def test_rules__pass_promtool_check(self):
        """`promtool check rules` accepts alerts.yml."""
        checked = promtool("check", "rules", str(RULES))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout

    def test_rules__their_unit_tests_pass(self):
        """`promtool test rules` runs alerts_test.yml: each alert fires when, and only when, due."""
        tested = promtool("test", "rules", str(RULE_TESTS))
        assert tested.returncode == 0, tested.stdout + tested.stderr


@pytest.mark.django_db(transaction=True)
class TestLiveScrape:
    def test_live_scrape__passes_promtool_check_metrics(self, busy_registry, live_server):
        """A scrape of a running portal's /metrics is clean for `promtool check metrics`."""
        text = live_scrape(live_server)
        assert "portal_plugin_run_duration_seconds_bucket" in text
        checked = promtool("check", "metrics", stdin=text)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert checked.stdout + checked.stderr == ""

    def test_rules__name_only_series_the_portal_exports(self, busy_registry, live_server, settings):
        """Every series a rule or its text names is in a live scrape: a renamed one fails here."""
        settings.PORTAL_RUN_EXECUTOR = "celery"  # worker nodes: portal_workers_alive is exported
        scraped = set(re.findall(r"^(portal_[a-z_]+)", live_scrape(live_server), re.MULTILINE))
        named = {
            name
            for rule in alert_rules()
            for text in (rule["expr"], *rule.get("annotations", {}).values())
            for name in SERIES_NAME.findall(text)
        }
        assert named, "the rules name portal series"
        assert named <= scraped, f"not exported: {sorted(named - scraped)}"
