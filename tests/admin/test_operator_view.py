"""The admin as an operator reads it: reasons that keep their advice, runs named for what they
are, reruns offered only where they can work (with new params), load tracebacks, and the last
failure kept in sight after a reload."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse
from django.utils.html import escape

from plugins_app import services
from plugins_app.admin import display as show
from plugins_app.models import Plugin, PluginRun, PluginState, RunStatus
from tests.admin.test_plugins_admin import PLUGINS, act, cells, messages_of, plugin_url, row

pytestmark = pytest.mark.django_db

ADVICE = "(install it with: pip install acme-ocr==2.1, then reload the plugin)"
LONG_REASON = (
    "Plugin 'ocr' raised ValueError in run(): the model file under /srv/models/ocr/v2 "
    "has a header this version cannot read, written by a newer trainer " + ADVICE
)


@pytest.fixture
def operator_client(client, make_operator):
    client.force_login(make_operator("ops", role="operator"))
    return client


def rerun_url(name: str) -> str:
    return reverse("admin:plugins_app_plugin_rerun", args=[Plugin.objects.get(name=name).pk])


class TestReasonSummary:
    def test_summary__keeps_the_start_and_the_advice(self):
        """A long reason keeps its beginning and its closing advice, joined by an ellipsis."""
        shown = show.reason_summary(LONG_REASON, 80)
        assert shown.startswith("Plugin 'ocr' raised ValueError in run()")
        assert shown.endswith(ADVICE)
        assert "…" in shown
        assert len(shown) < len(LONG_REASON)

    def test_summary__advice_after_the_last_semicolon(self):
        """Without a closing parenthesis, the part after the last ';' is the advice kept."""
        reason = "Plugin 'x' failed because " + "the upstream was slow; " * 6 + "rerun it later"
        shown = show.reason_summary(reason, 80)
        assert shown.startswith("Plugin 'x' failed because the upstream")
        assert shown.endswith("rerun it later")

    def test_summary__short_reason_unchanged(self):
        """A reason that fits is shown whole."""
        assert show.reason_summary("Plugin 'x' is fine (nothing to do)", 80) == (
            "Plugin 'x' is fine (nothing to do)"
        )

    def test_changelist__reason_column_keeps_the_advice(self, operator_client, make_plugin):
        """The plugins list shows the reason's start and its advice, the full text on hover."""
        make_plugin("ocr")
        services.plugin_mark_unavailable(name="ocr", reason=LONG_REASON, actor="t")
        html = row(operator_client.get(PLUGINS).content.decode(), "ocr")
        assert f'title="{escape(LONG_REASON)}"' in html
        assert cells(html)[3].endswith(escape(ADVICE))


class TestRunTitle:
    def test_run_page__names_the_run_and_its_plugin(self, operator_client, make_plugin, finish_run):
        """The run page says 'Run #N of plugin NAME', never the plugin's database id."""
        for name in ("a", "b", "hello"):
            make_plugin(name)
        run = finish_run("hello", RunStatus.FAILED)
        plugin_id = Plugin.objects.get(name="hello").pk
        url = reverse("admin:plugins_app_pluginrun_change", args=[run.pk])
        content = operator_client.get(url).content.decode()
        assert f"Run #{run.pk} of plugin &#x27;hello&#x27;" in content
        assert f"run {run.pk} of {plugin_id}" not in content
        assert str(run) == f"Run #{run.pk} of plugin 'hello'"


def action_buttons(content: str) -> list[str]:
    return re.findall(r'class="button plugin-action-button"[^>]*>([^<]+)</button>', content)


class TestRerunOffered:
    def test_unavailable__no_rerun_on_its_page(self, operator_client, make_plugin):
        """An UNAVAILABLE plugin's page offers Reload, not Rerun, and says why."""
        services.plugin_mark_unavailable(name="yolo", reason="Missing torch (install)", actor="t")
        content = operator_client.get(plugin_url("yolo")).content.decode()
        assert action_buttons(content) == ["Reload", "Disable…", "Reset counters…", "Retry policy…"]
        assert "Rerun with params" not in content
        assert "UNAVAILABLE" in re.search(r'class="rerun-note">(.*?)<', content, re.S).group(1)

    def test_load_failed__no_rerun_on_its_page(self, operator_client):
        """A plugin whose last load failed is not offered a rerun: it needs a reload first."""
        services.plugin_mark_failed(
            name="broken", reason="Plugin 'broken' failed to import (fix it)", actor="t"
        )
        content = operator_client.get(plugin_url("broken")).content.decode()
        assert action_buttons(content) == ["Reload", "Disable…", "Reset counters…", "Retry policy…"]
        assert "reload" in re.search(r'class="rerun-note">(.*?)<', content, re.S).group(1)

    def test_bulk_rerun__skips_what_would_be_refused(self, operator_client, make_plugin):
        """The list's rerun action queues nothing for unavailable or never-loaded plugins."""
        make_plugin("ok")
        services.plugin_mark_unavailable(name="yolo", reason="Missing torch (install)", actor="t")
        services.plugin_mark_failed(name="broken", reason="Import failed (fix it)", actor="t")
        response = act(operator_client, "rerun_selected", "yolo", "broken")
        levels = [level for level, _ in messages_of(response)]
        assert levels == ["error", "error"]
        assert "reload" in messages_of(response)[0][1]
        assert PluginRun.objects.count() == 0
        assert Plugin.objects.get(name="broken").state == PluginState.FAILED

    def test_reload_success__offers_rerun_again(self, operator_client, make_plugin):
        """Once a load succeeds, the plugin may be rerun again."""
        services.plugin_mark_failed(name="ocr", reason="Import failed (fix it)", actor="t")
        make_plugin("ocr")
        content = operator_client.get(plugin_url("ocr")).content.decode()
        assert action_buttons(content)[0] == "Rerun"
        assert "Rerun with params" in content


class TestLoadTraceback:
    def test_setup_traceback__shown_on_the_plugin_page(self, operator_client):
        """The traceback of a failed setup() is on the plugin's page."""
        trace = 'Traceback (most recent call last):\n  File "lic.py", line 7, in setup\nOSError'
        services.plugin_mark_failed(
            name="lic",
            reason="setup() of plugin 'lic' raised OSError",
            actor="t",
            load_traceback=trace,
        )
        content = operator_client.get(plugin_url("lic")).content.decode()
        assert escape(trace) in content

    def test_load_traceback__cleared_by_a_good_load(self, make_plugin):
        """A later successful load clears the old traceback."""
        services.plugin_mark_failed(name="lic", reason="x (y)", actor="t", load_traceback="tb")
        plugin = make_plugin("lic")
        assert (plugin.load_traceback, plugin.load_failed) == ("", False)


class TestRerunWithParams:
    def test_form__prefilled_with_the_last_params(self, operator_client, make_plugin):
        """The rerun form shows the last run's params as JSON, ready to edit."""
        make_plugin("hello")
        services.run_queue(name="hello", params={"name": "Ann"}, actor="t")
        response = operator_client.get(rerun_url("hello"))
        assert response.status_code == 200
        assert json.loads(response.context["form"].initial["params"]) == {"name": "Ann"}

    @pytest.mark.parametrize("text", ['["Ann"]', "{name: Ann}", '"Ann"', "null"])
    def test_form__refuses_what_is_not_a_json_object(self, operator_client, make_plugin, text):
        """Params that are not a JSON object are refused with a message; nothing is queued."""
        make_plugin("hello")
        response = operator_client.post(rerun_url("hello"), {"params": text})
        assert response.status_code == 200
        assert "JSON object" in str(response.context["form"].errors["params"])
        assert PluginRun.objects.count() == 0

    def test_form__queues_a_run_with_the_new_params(
        self, operator_client, make_plugin, monkeypatch
    ):
        """Valid params queue a run with them, by this user, and return to the plugin page."""
        from plugins_app import runner

        queued: list[int] = []
        submit = type("Executor", (), {"submit": staticmethod(queued.append)})
        monkeypatch.setattr(runner, "get_executor", lambda job: submit)
        monkeypatch.setattr(runner, "_unavailable_if_gone", lambda name, actor: None)
        make_plugin("hello")
        response = operator_client.post(rerun_url("hello"), {"params": '{"name": "Bo"}'})
        assert response.status_code == 302
        assert response.url == plugin_url("hello")
        run = PluginRun.objects.get()
        assert (run.params, run.actor) == ({"name": "Bo"}, "user:ops")
        assert queued == [run.pk]

    def test_form__refused_for_a_viewer(self, client, make_operator, make_plugin):
        """A viewer cannot open or post the rerun form."""
        make_plugin("hello")
        client.force_login(make_operator(role="viewer"))
        assert client.get(rerun_url("hello")).status_code == 403
        assert client.post(rerun_url("hello"), {"params": "{}"}).status_code == 403
        assert PluginRun.objects.count() == 0

    def test_form__refused_for_an_unavailable_plugin(self, operator_client):
        """A plugin that would refuse the run gets no form, only the reason why."""
        services.plugin_mark_unavailable(name="yolo", reason="Missing torch (install)", actor="t")
        response = operator_client.post(rerun_url("yolo"), {"params": "{}"}, follow=True)
        assert messages_of(response)[0][0] == "error"
        assert PluginRun.objects.count() == 0


class TestLastFailure:
    def test_plugin_page__links_to_the_latest_failing_run(
        self, operator_client, make_plugin, finish_run
    ):
        """The plugin page links to its newest failed run, even after later successes."""
        make_plugin("flaky")
        failed = finish_run("flaky", RunStatus.FAILED, reason="Plugin 'flaky' broke (rerun)")
        finish_run("flaky")
        content = operator_client.get(plugin_url("flaky")).content.decode()
        field = re.search(r"field-latest_failed_run.*?</div>\s*</div>", content, re.S).group(0)
        run_url = reverse("admin:plugins_app_pluginrun_change", args=[failed.pk])
        assert f'href="{run_url}"' in field

    def test_reload_after_crash__keeps_the_failure_in_sight(
        self, operator_client, make_plugin, finish_run
    ):
        """After a crash and a good reload, the counters stay and the page says the last run
        failed although the plugin reloaded fine."""
        make_plugin("seg")
        crash = "Plugin 'seg' crashed with signal SIGSEGV (report it to the plugin's author)"
        finish_run("seg", RunStatus.CRASHED, reason=crash)
        make_plugin("seg")  # the reload: LOADED, then INITIALIZED
        plugin = Plugin.objects.get(name="seg")
        assert (plugin.state, plugin.consecutive_failures) == (PluginState.INITIALIZED, 1)
        content = operator_client.get(plugin_url("seg")).content.decode()
        reason = re.search(r"field-reason_full.*?</div>\s*</div>", content, re.S).group(0)
        assert "reloaded fine, but its last run failed" in reason
        assert escape(crash) in reason
        listed = cells(row(operator_client.get(PLUGINS).content.decode(), "seg"))
        assert "reloaded fine, but its last run failed" in listed[3]
        assert listed[6] == "1"
