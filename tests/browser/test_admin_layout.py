"""The admin on an operator's screen: the wide lists fit at 1440 and 1280 px, and every page is
kept as a screenshot at both widths (artifacts/screenshots/layout-*)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from plugins_app import pipeline, services
from plugins_app.executor import shutdown_executor
from plugins_app.models import Plugin, PluginRun
from plugins_app.notifications.deliverer import deliver_due
from plugins_app.notifications.models import Webhook, WebhookDelivery
from plugins_app.schedules.firing import fire_due
from plugins_app.schedules.models import Schedule
from plugins_app.schedules.writes import sync_declared
from tests.browser.test_admin_browser import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "plugins"
SCREENS = {"1440": (1440, 900), "1280": (1280, 800)}
LONG_REASON = (
    "Missing Python module 'torch' required by plugin 'vision-enterprise-detector' (and "
    "torchvision, timm and onnxruntime-gpu after it; the CUDA 12 wheels are needed on this "
    "host) (install with: pip install torch torchvision timm onnxruntime-gpu)"
)


@pytest.fixture
def operator_fleet(settings, make_operator) -> Iterator[None]:
    """Real examples in every situation the admin explains: ok, failing, unavailable, a failed
    setup(), a syntax error, a crash followed by a good reload, a long reason, timeouts that
    queued a retry and quarantined the plugin."""
    settings.PORTAL_PLUGIN_DIRS = [str(EXAMPLES)]
    settings.PORTAL_RUN_EXECUTOR = "thread"
    shutdown_executor()
    names = ["hello", "flaky", "yolo", "bad_setup", "broken_syntax", "segfault", "slow"]
    pipeline.load_plugins(names=names, actor="command:loadplugins")
    pipeline.run_plugin(name="hello", params={"name": "ops"}, actor="api:etl-nightly-batch")
    pipeline.run_plugin(name="flaky", params={"fail": True}, actor="schedule")
    pipeline.run_plugin(name="segfault", params={}, actor="user:olivia")
    pipeline.reload_plugin(name="segfault", actor="user:olivia")
    services.plugin_mark_unavailable(
        name="vision-enterprise-detector", reason=LONG_REASON, actor="command:loadplugins"
    )
    retry = {"max_attempts": 3, "backoff_s": 600, "max_backoff_s": 3600}
    services.plugin_set_policy(
        name="slow", retry=retry, quarantine_after=2, note="GPU node flaps", actor="user:olivia"
    )
    pipeline.run_plugin(name="slow", params={"seconds": 0}, actor="schedule")  # its host warm
    for _ in range(2):  # two timeouts: a retry queued for later, then the quarantine
        pipeline.run_plugin(name="slow", params={"seconds": 30}, actor="schedule", timeout_s=0.5)
    make_operator("olivia", role="operator")
    yield
    shutdown_executor()
    pipeline.discard_warm_hosts()


@pytest.fixture(params=list(SCREENS), ids=[f"{w}x{h}" for w, h in SCREENS.values()])
def screen_page(request, chromium) -> Iterator:
    """A browser tab sized like one of the operators' screens; its width key is `page.width`."""
    width, height = SCREENS[request.param]
    context = chromium.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.width_key = request.param
    yield page
    context.close()


SIDEWAYS = "() => document.scrollingElement.scrollWidth - document.scrollingElement.clientWidth"


def overflow(page) -> dict[str, int]:
    """How many pixels the results table's container and the page scroll sideways."""
    return page.evaluate(
        """() => {
            const box = document.querySelector('#changelist .results');
            const root = document.scrollingElement;
            return {
                results: box.scrollWidth - box.clientWidth,
                page: root.scrollWidth - root.clientWidth,
            };
        }"""
    )


def column_visible(page, column: str) -> bool:
    """Whether every cell of the column lies inside the viewport's width."""
    return page.evaluate(
        """(column) => [...document.querySelectorAll(`#result_list .column-${column}, `
                + `#result_list td.field-${column}`)]
            .every(el => el.getBoundingClientRect().right
                <= document.documentElement.clientWidth)""",
        column,
    )


def schedules_and_webhooks() -> tuple[Schedule, Webhook, WebhookDelivery]:
    """Schedules in the states an operator meets (fired, refused, declared) and a webhook
    whose receiver is down, with its delivery log."""
    hook = Webhook.objects.create(name="on-call pager", url="http://127.0.0.1:9/portal-events")
    sync_declared(name="hello", declared={"every_s": 3600, "params": {"name": "cron"}})
    nightly = Schedule.objects.create(
        plugin=Plugin.objects.get(name="yolo"),
        name="nightly-detection",
        cron="0 3 * * *",
        params={"images": "/srv/inbox"},
        overlap="queue_one",
        next_run_at=timezone.now() - timedelta(seconds=1),
    )
    Schedule.objects.filter(plugin__name="hello").update(
        next_run_at=timezone.now() - timedelta(seconds=1)
    )
    for firing in fire_due():  # the fired runs end before 'hello' is marked failed
        if firing.run_id is not None:
            pipeline.wait_for_run(run_id=firing.run_id, timeout_s=60)
    services.plugin_mark_failed(
        name="hello", reason="Run 9 of plugin 'hello' failed on purpose (rerun it)", actor="test"
    )
    deliver_due()
    return nightly, hook, WebhookDelivery.objects.latest("pk")


class TestListsFit:
    @pytest.mark.parametrize(
        ("url", "last_column", "name"),
        [
            ("/admin/plugins_app/plugin/", "enabled", "plugins-list"),
            ("/admin/plugins_app/pluginrun/", "actor", "runs-list"),
        ],
    )
    def test_changelist__fits_the_screen(
        self, live_server, screen_page, operator_fleet, screenshot, url, last_column, name
    ):
        """The plugins and runs lists need no sideways scrolling; their last column shows."""
        page = screen_page
        log_in(page, live_server, "olivia")
        page.goto(f"{live_server.url}{url}")
        page.wait_for_selector("#result_list")
        screenshot(page, f"layout-{name}-{page.width_key}")
        assert overflow(page) == {"results": 0, "page": 0}
        assert column_visible(page, last_column)


class TestEveryPageKept:
    def test_pages__screenshots_at_both_widths(
        self, live_server, screen_page, operator_fleet, screenshot
    ):
        """Each admin page an operator uses is kept as a screenshot, none scrolling sideways."""
        page = screen_page
        log_in(page, live_server, "olivia")
        ids = dict(Plugin.objects.values_list("name", "pk"))
        crash = PluginRun.objects.filter(plugin__name="segfault").latest("pk")
        retry = PluginRun.objects.filter(plugin__name="slow", attempt=2).earliest("pk")
        schedule, webhook, delivery = schedules_and_webhooks()
        pages = {
            "index": "/admin/",
            "plugin-failed-setup": f"/admin/plugins_app/plugin/{ids['bad_setup']}/change/",
            "plugin-reloaded-after-crash": f"/admin/plugins_app/plugin/{ids['segfault']}/change/",
            "plugin-unavailable": f"/admin/plugins_app/plugin/{ids['yolo']}/change/",
            "rerun-with-params": f"/admin/plugins_app/plugin/{ids['flaky']}/rerun/",
            "run-crashed": f"/admin/plugins_app/pluginrun/{crash.pk}/change/",
            "plugin-quarantined": f"/admin/plugins_app/plugin/{ids['slow']}/change/",
            "run-retry-waiting": f"/admin/plugins_app/pluginrun/{retry.pk}/change/",
            "events-list": "/admin/plugins_app/pluginevent/",
            "schedules-list": "/admin/plugins_app/schedule/",
            "schedule": f"/admin/plugins_app/schedule/{schedule.pk}/change/",
            "webhooks-list": "/admin/plugins_app/webhook/",
            "webhook": f"/admin/plugins_app/webhook/{webhook.pk}/change/",
            "deliveries-list": "/admin/plugins_app/webhookdelivery/",
            "delivery": f"/admin/plugins_app/webhookdelivery/{delivery.pk}/change/",
        }
        wide = {}
        for name, url in pages.items():
            page.goto(f"{live_server.url}{url}")
            screenshot(page, f"layout-{name}-{page.width_key}")
            wide[name] = page.evaluate(SIDEWAYS)
        assert wide == dict.fromkeys(pages, 0)
        page.goto(f"{live_server.url}{pages['plugin-failed-setup']}")
        assert (
            "ConnectionRefusedError" in page.locator("div.field-load_traceback_text").inner_text()
        )
        page.goto(f"{live_server.url}{pages['plugin-reloaded-after-crash']}")
        reason = page.locator("div.field-reason_full").inner_text()
        assert "reloaded fine, but its last run failed" in reason
        assert page.locator("div.field-latest_failed_run a").inner_text() == f"run #{crash.pk}"
        page.goto(f"{live_server.url}{pages['plugin-quarantined']}")
        assert "runs refused until" in page.locator("div.field-quarantine_shown").inner_text()
        assert "attempt 2" in page.locator("div.field-next_retry").inner_text()
        assert page.get_by_role("button", name="Lift quarantine…").is_visible()
