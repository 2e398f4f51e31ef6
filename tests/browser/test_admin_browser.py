"""The operator admin in a real browser: log in, read the fleet, fix a plugin, respect roles."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from plugins_app import pipeline, services
from plugins_app.executor import shutdown_executor
from plugins_app.models import Plugin, PluginEvent, PluginRun, RunStatus
from tests.conftest import OPERATOR_PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "plugins"
STATES = {
    "loader": "LOADED",
    "hello": "INITIALIZED",
    "busy": "RUNNING",
    "flaky": "FAILED",
    "yolo": "UNAVAILABLE",
}


@pytest.fixture
def live_fleet(settings, make_plugin):
    """Real example plugins loaded and run in the sandbox, plus LOADED and RUNNING ones."""
    settings.PORTAL_PLUGIN_DIRS = [str(EXAMPLES)]
    settings.PORTAL_RUN_EXECUTOR = "thread"
    shutdown_executor()
    pipeline.load_plugins(names=["hello", "flaky", "yolo"], actor="command:loadplugins")
    pipeline.run_plugin(name="hello", params={"name": "ops"}, actor="api:etl")
    pipeline.run_plugin(name="flaky", params={"fail": True}, actor="schedule")
    make_plugin("loader", initialized=False)
    make_plugin("busy")
    queued = services.run_queue(name="busy", params={}, actor="schedule")
    services.run_start(run_id=queued.pk, worker="worker-1:4242")
    assert {p.name: p.state for p in Plugin.objects.all()} == STATES
    yield
    shutdown_executor()
    pipeline.discard_warm_hosts()


def log_in(page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", OPERATOR_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")


def plugin_row(page, name: str):
    return page.locator(f"#result_list tbody tr:has(th.field-name a:text-is('{name}'))")


def cell(page, name: str, column: str) -> str:
    return plugin_row(page, name).locator(f"td.field-{column}").inner_text().strip()


def wait_for(condition, page, timeout_s: float = 45.0) -> None:
    """Reload the page until `condition()` holds, as an operator watching it would."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the page did not change in time"
        page.wait_for_timeout(300)
        page.reload()


class TestOperatorInBrowser:
    def test_operator__sees_every_state_with_reasons_and_counters(
        self, live_server, browser_page, live_fleet, make_operator, screenshot
    ):
        """After logging in, the overview and the list show each state, reason and counter."""
        make_operator("olivia", role="operator")
        page = browser_page
        log_in(page, live_server, "olivia")
        overview = page.locator(".fleet-overview")
        assert overview.locator('[data-state="FAILED"]').inner_text() == "1"
        assert overview.locator('[data-state="UNAVAILABLE"]').inner_text() == "1"
        problems = overview.locator("tr.fleet-problem")
        assert problems.count() == 2
        assert "Missing Python module 'torch'" in overview.inner_text()
        assert page.locator("svg.runs-chart g.bar").count() == 24
        screenshot(page, "01-admin-index-fleet-overview")

        page.click("#content-main a[href='/admin/plugins_app/plugin/']")
        page.wait_for_selector("#result_list")
        names = page.locator("#result_list tbody th.field-name").all_inner_texts()
        assert names[:2] == ["flaky", "yolo"]  # problems first
        for name, state in STATES.items():
            badge = plugin_row(page, name).locator(".state-badge")
            assert badge.get_attribute("class") == f"state-badge state-{state}", name
            assert badge.is_visible()
        # A red badge for FAILED, white text on it: the colour comes from the admin CSS.
        colour = (
            plugin_row(page, "flaky")
            .locator(".state-badge")
            .evaluate("el => getComputedStyle(el).backgroundColor")
        )
        assert colour == "rgb(198, 40, 40)"
        flaky_reason = Plugin.objects.get(name="flaky").reason
        reason = plugin_row(page, "flaky").locator("td.field-reason_short .short-reason")
        assert reason.get_attribute("title") == flaky_reason
        assert "ConnectionError" in reason.inner_text()
        assert (cell(page, "flaky", "success_count"), cell(page, "flaky", "error_count")) == (
            "0",
            "1",
        )
        assert cell(page, "hello", "success_count") == "1"
        assert cell(page, "flaky", "consecutive_failures_display") == "1"
        assert cell(page, "yolo", "uptime") == "—"
        assert re.fullmatch(r"\d+s", cell(page, "hello", "uptime"))
        screenshot(page, "02-plugins-list-every-state")

        page.click("#result_list th.field-name a:text-is('flaky')")
        page.wait_for_selector("div.field-reason_full")
        assert flaky_reason in page.locator("div.field-reason_full").inner_text()
        assert page.locator(".plugin-actions button").all_inner_texts() == [
            "Rerun",
            "Reload",
            "Disable…",
            "Reset counters…",
            "Retry policy…",
        ]
        screenshot(page, "03-plugin-detail-failed")

    def test_operator__reruns_a_failed_plugin_and_watches_its_counters(
        self, live_server, browser_page, live_fleet, make_operator, screenshot
    ):
        """The rerun action queues a real sandboxed run; a reload later the counters moved."""
        make_operator("olivia", role="operator")
        page = browser_page
        log_in(page, live_server, "olivia")
        page.goto(f"{live_server.url}/admin/plugins_app/plugin/")
        assert cell(page, "flaky", "error_count") == "1"
        plugin_row(page, "flaky").locator("input.action-select").check()
        page.select_option("select[name=action]", "rerun_selected")
        started = time.monotonic()
        page.click("button[name=index]")
        message = page.locator("ul.messagelist li.success")
        assert "Queued run #" in message.inner_text()
        assert time.monotonic() - started < 5  # queued: the page did not wait for the plugin
        screenshot(page, "04-rerun-queued")

        wait_for(lambda: cell(page, "flaky", "error_count") == "2", page)
        assert cell(page, "flaky", "consecutive_failures_display") == "2"
        assert plugin_row(page, "flaky").locator(".state-badge").inner_text() == "FAILED"
        screenshot(page, "05-counters-after-rerun")

        run = PluginRun.objects.filter(plugin__name="flaky", actor="user:olivia").get()
        assert (run.status, run.params) == (RunStatus.FAILED, {"fail": True})
        page.goto(f"{live_server.url}/admin/plugins_app/pluginrun/{run.pk}/change/")
        forensics = page.locator("#content-main").inner_text()
        assert "ConnectionError" in forensics
        assert "user:olivia" in forensics
        assert "Traceback" in forensics
        screenshot(page, "06-run-forensics")

    def test_operator__disables_with_a_note_from_the_plugin_page(
        self, live_server, browser_page, live_fleet, make_operator, screenshot
    ):
        """Disable asks for a note, records it with the user, and returns to the plugin."""
        make_operator("olivia", role="operator")
        page = browser_page
        log_in(page, live_server, "olivia")
        flaky = Plugin.objects.get(name="flaky")
        page.goto(f"{live_server.url}/admin/plugins_app/plugin/{flaky.pk}/change/")
        page.click(".plugin-actions button:text-is('Disable…')")
        page.fill("textarea[name=note]", "upstream outage, ticket OPS-42")
        screenshot(page, "07-disable-note-confirmation")
        page.click("input[type=submit].default")
        page.wait_for_url(f"**/plugin/{flaky.pk}/change/")
        assert "Disabled 1 plugin: flaky" in page.locator("ul.messagelist").inner_text()
        assert page.locator(".plugin-actions button:text-is('Enable…')").count() == 1
        screenshot(page, "08-plugin-disabled")
        event = PluginEvent.objects.filter(plugin=flaky).first()
        assert (event.kind, event.reason, event.actor) == (
            "disabled",
            "upstream outage, ticket OPS-42",
            "user:olivia",
        )


class TestViewerInBrowser:
    def test_viewer__sees_everything_and_cannot_act(
        self, live_server, browser_page, live_fleet, make_operator, screenshot
    ):
        """A view-only operator reads the whole fleet but has nothing to click, and a forged
        action from the browser's session changes nothing."""
        make_operator("victor", role="viewer")
        page = browser_page
        log_in(page, live_server, "victor")
        page.goto(f"{live_server.url}/admin/plugins_app/plugin/")
        assert page.locator("#result_list .state-badge").count() == len(STATES)
        assert page.locator("select[name=action]").count() == 0
        assert page.locator("input.action-select").count() == 0
        screenshot(page, "09-viewer-plugins-list")
        flaky = Plugin.objects.get(name="flaky")
        page.goto(f"{live_server.url}/admin/plugins_app/plugin/{flaky.pk}/change/")
        assert page.locator(".plugin-actions").count() == 0
        assert "ConnectionError" in page.locator("div.field-reason_full").inner_text()
        screenshot(page, "10-viewer-plugin-detail")

        token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
        for action in ("rerun_selected", "disable_selected"):
            response = page.request.post(
                f"{live_server.url}/admin/plugins_app/plugin/",
                form={
                    "csrfmiddlewaretoken": token,
                    "action": action,
                    "index": "0",
                    "_selected_action": str(flaky.pk),
                    "_confirm": "yes",
                    "note": "forged",
                },
            )
            assert response.status == 200
        time.sleep(0.5)  # a queued run would have started by now
        flaky.refresh_from_db()
        assert (flaky.enabled, flaky.error_count) == (True, 1)
        assert PluginRun.objects.filter(plugin=flaky).count() == 1
