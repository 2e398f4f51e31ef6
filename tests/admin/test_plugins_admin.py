"""The operator admin: what an operator sees, what each role may do, and what actions change."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils.html import escape

from plugins_app import admin as portal_admin
from plugins_app import loader, pipeline, services
from plugins_app.executor import shutdown_executor
from plugins_app.models import (
    EventKind,
    Plugin,
    PluginEvent,
    PluginRun,
    PluginState,
    RunStatus,
    SourceKind,
)
from plugins_app.sources import PluginSource

pytestmark = pytest.mark.django_db

PLUGINS = reverse("admin:plugins_app_plugin_changelist")
RUNS = reverse("admin:plugins_app_pluginrun_changelist")
EVENTS = reverse("admin:plugins_app_pluginevent_changelist")
FAILED_REASON = (
    "Plugin 'flaky' raised ConnectionError in run(): upstream did not answer "
    "(check the upstream service, then rerun)"
)
TORCH_REASON = (
    "Missing Python module 'torch' required by plugin 'yolo' (install with: pip install torch)"
)


def plugin_url(name: str) -> str:
    return reverse("admin:plugins_app_plugin_change", args=[Plugin.objects.get(name=name).pk])


def fleet(make_plugin, finish_run) -> None:
    """One plugin in every state, each with counters of its own."""
    make_plugin("loader", initialized=False)
    make_plugin("ready")
    finish_run("ready")
    finish_run("ready")
    make_plugin("busy")
    services.run_start(run_id=services.run_queue(name="busy", params={}, actor="t").pk, worker="w")
    make_plugin("flaky")
    finish_run("flaky")
    finish_run("flaky", RunStatus.FAILED, reason="first failure of the flaky plugin in a test")
    finish_run("flaky", RunStatus.FAILED, reason=FAILED_REASON)
    services.plugin_mark_unavailable(name="yolo", reason=TORCH_REASON, actor="t")


def row(content: str, name: str) -> str:
    """The HTML of the change-list row that links to plugin `name`."""
    for match in re.finditer(r"<tr>.*?</tr>", content, re.S):
        if f">{name}</a>" in match.group(0):
            return match.group(0)
    raise AssertionError(f"no row for {name}")


def cells(row_html: str) -> list[str]:
    """The row's cells as text, tags stripped."""
    found = re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row_html, re.S)
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in found]


def shown_names(response) -> list[str]:
    return [obj.name for obj in response.context["cl"].result_list]


def messages_of(response) -> list[tuple[str, str]]:
    return [(m.level_tag, str(m)) for m in response.context["messages"]]


def act(client, action: str, *names: str, follow: bool = True, **extra):
    """Post an admin action for the named plugins, as the change list's Go button does."""
    pks = [str(Plugin.objects.get(name=name).pk) for name in names]
    data = {"action": action, "index": 0, "_selected_action": pks, **extra}
    return client.post(PLUGINS, data, follow=follow)


def confirm(client, action: str, *names: str, note: str = "", **extra):
    """Post the confirmation page of a with-a-note action."""
    pks = [str(Plugin.objects.get(name=name).pk) for name in names]
    data = {"action": action, "_selected_action": pks, "_confirm": "yes", "note": note, **extra}
    return client.post(PLUGINS, data, follow=True)


@pytest.fixture
def operator_client(client, make_operator):
    client.force_login(make_operator("ops", role="operator"))
    return client


@pytest.fixture
def example_plugins(plugin_dir, settings):
    """Real plugins loaded through the sandbox; runs execute inline so tests can watch them."""
    settings.PORTAL_PLUGIN_DIRS = [str(plugin_dir.path)]
    settings.PORTAL_RUN_EXECUTOR = "inline"
    yield plugin_dir
    shutdown_executor()
    pipeline.discard_warm_hosts()


def add_switch_plugin(plugins, tmp_path):
    """A plugin that fails while its 'upstream down' flag file exists, and works once it is gone."""
    flag = tmp_path / "upstream-down"
    flag.write_text("down")
    plugins.add(
        "switch",
        f"""
        import os
        def run(page=1):
            if os.path.exists({str(flag)!r}):
                raise ConnectionError("upstream service did not answer (flag file present)")
            return {{"page": page}}
        """,
    )
    pipeline.reload_plugin(name="switch", actor="test")
    return flag


class TestPluginChangeList:
    def test_changelist__badge_reason_and_counters_for_every_state(
        self, operator_client, make_plugin, finish_run
    ):
        """Each state has its coloured badge, and each row its reason and counters."""
        fleet(make_plugin, finish_run)
        content = operator_client.get(PLUGINS).content.decode()
        for name, state in [
            ("loader", "LOADED"),
            ("ready", "INITIALIZED"),
            ("busy", "RUNNING"),
            ("flaky", "FAILED"),
            ("yolo", "UNAVAILABLE"),
        ]:
            assert f'class="state-badge state-{state}"' in row(content, name), name
        flaky = cells(row(content, "flaky"))
        # name, state, reason, successes, errors, consecutive failures, uptime, last run, enabled
        assert flaky[1:2] == ["flaky"]
        assert flaky[2] == "Failed"
        assert flaky[3].startswith("Plugin &#x27;flaky&#x27; raised ConnectionError")
        assert flaky[4:7] == ["1", "2", "2"]
        assert flaky[7] == "—"  # a FAILED plugin has no uptime
        assert flaky[8].endswith("ago")
        ready = cells(row(content, "ready"))
        assert ready[4:7] == ["2", "0", "0"]
        assert re.fullmatch(r"\d+s", ready[7])
        assert cells(row(content, "loader"))[8] == "never"

    def test_changelist__run_orphaned_by_dead_process_shown_interrupted(
        self, operator_client, make_plugin, monkeypatch
    ):
        """After a restart the plugin list finishes runs whose process died: not RUNNING."""
        from plugins_app import executor

        monkeypatch.setattr(executor, "_last_sweep", float("-inf"))
        make_plugin("orphan")
        run = services.run_queue(name="orphan", params={}, actor="t")
        services.run_start(run_id=run.pk, worker="deadhost:1")
        PluginRun.objects.filter(pk=run.pk).update(
            heartbeat_at=datetime.now(UTC) - timedelta(hours=1)
        )
        operator_client.get(PLUGINS)
        assert Plugin.objects.get(name="orphan").state == PluginState.FAILED
        assert PluginRun.objects.get(pk=run.pk).status == RunStatus.INTERRUPTED

    def test_changelist__problems_sort_first(self, operator_client, make_plugin, finish_run):
        """FAILED, then UNAVAILABLE, then disabled plugins come first; the rest by name."""
        fleet(make_plugin, finish_run)
        make_plugin("aaa-paused")
        services.plugin_disable(name="aaa-paused", note="", actor="t")
        response = operator_client.get(PLUGINS)
        assert shown_names(response) == ["flaky", "yolo", "aaa-paused", "busy", "loader", "ready"]

    def test_changelist__long_reason_shortened_with_full_text_on_hover(
        self, operator_client, make_plugin, finish_run
    ):
        """A long reason is cut in the list, keeping its advice; the full one is on hover."""
        make_plugin("verbose")
        reason = "Plugin 'verbose' failed because " + "the upstream was slow; " * 10 + "rerun it"
        finish_run("verbose", RunStatus.FAILED, reason=reason)
        html = row(operator_client.get(PLUGINS).content.decode(), "verbose")
        assert f'title="{escape(reason)}"' in html
        shown = cells(html)[3]
        assert "…" in shown
        assert shown.endswith("rerun it")
        assert len(shown) < len(reason)

    def test_changelist__health_filter_lists_what_needs_attention(
        self, operator_client, make_plugin, finish_run
    ):
        """The 'needs attention' filter shows failing, unavailable and disabled plugins."""
        fleet(make_plugin, finish_run)
        services.plugin_disable(name="ready", note="", actor="t")
        response = operator_client.get(PLUGINS, {"health": "problems"})
        assert shown_names(response) == ["flaky", "yolo", "ready"]
        healthy = operator_client.get(PLUGINS, {"health": "healthy"})
        assert shown_names(healthy) == ["busy", "loader"]

    def test_changelist__filters_by_state_and_enabled(
        self, operator_client, make_plugin, finish_run
    ):
        """The state and enabled filters narrow the list."""
        fleet(make_plugin, finish_run)
        services.plugin_disable(name="busy", note="", actor="t")
        assert shown_names(operator_client.get(PLUGINS, {"state__exact": "FAILED"})) == ["flaky"]
        assert shown_names(operator_client.get(PLUGINS, {"enabled__exact": "0"})) == ["busy"]

    def test_changelist__search_by_name_and_reason(self, operator_client, make_plugin, finish_run):
        """Searching finds plugins by name and by words of their reason."""
        fleet(make_plugin, finish_run)
        assert shown_names(operator_client.get(PLUGINS, {"q": "torch"})) == ["yolo"]
        assert shown_names(operator_client.get(PLUGINS, {"q": "flak"})) == ["flaky"]

    def test_changelist__no_add_or_delete(self, operator_client, make_plugin):
        """Plugins come from the plugin directories: the admin neither adds nor deletes them."""
        plugin = make_plugin("ocr")
        content = operator_client.get(PLUGINS).content.decode()
        assert "addlink" not in content
        assert "delete_selected" not in content
        add = operator_client.get(reverse("admin:plugins_app_plugin_add"))
        delete = operator_client.get(reverse("admin:plugins_app_plugin_delete", args=[plugin.pk]))
        assert (add.status_code, delete.status_code) == (403, 403)


def readonly_field(client, name: str, field: str) -> str:
    """The HTML inside one read-only field of plugin `name`'s page."""
    content = client.get(plugin_url(name)).content.decode()
    found = re.search(
        rf'class="form-row[^"]*field-{field}\b.*?<div class="readonly">(.*?)</div>', content, re.S
    )
    assert found, f"no field {field} on the page"
    return found.group(1).strip()


class TestPluginDetail:
    def test_detail__operational_fields_are_read_only(self, operator_client, make_plugin):
        """The page has no inputs for state, reason or counters, and a forged POST is refused."""
        make_plugin("ocr")
        url = plugin_url("ocr")
        content = operator_client.get(url).content.decode()
        for field in ("state", "reason", "success_count", "error_count", "enabled"):
            assert f'name="{field}"' not in content
        response = operator_client.post(url, {"state": "FAILED", "success_count": 99})
        assert response.status_code == 403
        plugin = Plugin.objects.get(name="ocr")
        assert (plugin.state, plugin.success_count) == (PluginState.INITIALIZED, 0)

    def test_detail__full_reason_latest_runs_and_event_timeline(
        self, operator_client, make_plugin, finish_run
    ):
        """The page shows the whole reason, the newest runs and the state changes with actors."""
        make_plugin("flaky")
        runs = [finish_run("flaky") for _ in range(11)]
        runs.append(finish_run("flaky", RunStatus.FAILED, reason=FAILED_REASON))
        response = operator_client.get(plugin_url("flaky"))
        content = response.content.decode()
        assert escape(FAILED_REASON) in content
        runs_inline, events_inline = response.context["inline_admin_formsets"]
        shown_runs = [form.original.pk for form in runs_inline]
        assert shown_runs == [run.pk for run in reversed(runs)][: portal_admin.LATEST_RUNS]
        assert f'href="{reverse("admin:plugins_app_pluginrun_change", args=[runs[-1].pk])}"' in (
            content
        )
        kinds = [(form.original.from_state, form.original.to_state) for form in events_inline]
        assert kinds[0] == ("RUNNING", "FAILED")
        assert len(kinds) == portal_admin.LATEST_EVENTS
        assert "All runs of flaky" in content
        assert '<span class="state-badge state-run-failed">Failed</span>' in content
        assert "10 ms" in content  # each run's duration

    @pytest.mark.parametrize(
        ("role", "buttons"),
        [
            ("viewer", []),
            ("runner", ["Rerun", "Reload"]),
            ("operator", ["Rerun", "Reload", "Disable…", "Reset counters…", "Retry policy…"]),
        ],
    )
    def test_detail__action_buttons_follow_permissions(
        self, client, make_operator, make_plugin, role, buttons
    ):
        """Each role sees exactly the one-click actions it may use on the plugin's page."""
        make_plugin("ocr")
        client.force_login(make_operator(role=role))
        content = client.get(plugin_url("ocr")).content.decode()
        shown = re.findall(r'class="button plugin-action-button"[^>]*>([^<]+)</button>', content)
        assert shown == buttons


class TestPluginSource:
    def test_entry_point__kind_and_name_shown(self, operator_client):
        """An entry point plugin shows its source kind and the entry point's name."""
        source = PluginSource(
            location="entry point: acme = acme_ocr (acme-ocr 1.0)",
            kind=SourceKind.ENTRY_POINT,
            entry_point_name="acme",
        )
        metadata = services.PluginMetadata(source=source)
        services.plugin_register(name="pretty", metadata=metadata, actor="t")
        assert readonly_field(operator_client, "pretty", "source_kind") == "entry point"
        assert readonly_field(operator_client, "pretty", "entry_point_name") == "acme"

    def test_conflict__each_source_on_a_line(self, operator_client):
        """A name conflict lists every source on a line of its own, and no single source."""
        conflict = PluginSource(conflicting=("/a/ocr.py", "/b/<ocr>.py"))
        services.plugin_mark_unavailable(
            name="ocr",
            reason="Two sources for ocr in the test (remove one)",
            actor="t",
            source=conflict,
        )
        listed = readonly_field(operator_client, "ocr", "conflicting_sources_list")
        assert listed == "/a/ocr.py<br>/b/&lt;ocr&gt;.py"
        assert readonly_field(operator_client, "ocr", "source") == "-"


class TestNoteActions:
    def test_disable__asks_for_a_note_first(self, operator_client, make_plugin):
        """Disable opens a confirmation page with a note field and changes nothing yet."""
        make_plugin("ocr")
        response = act(operator_client, "disable_selected", "ocr")
        assert response.status_code == 200
        assert response.templates[0].name == "admin/plugins_app/plugin/action_note.html"
        assert 'name="note"' in response.content.decode()
        assert Plugin.objects.get(name="ocr").enabled is True

    def test_disable__records_note_and_user(self, operator_client, make_plugin):
        """Confirming disables the plugins and records the note with who did it."""
        make_plugin("ocr")
        make_plugin("asr")
        response = confirm(operator_client, "disable_selected", "ocr", "asr", note="GPU swap")
        assert messages_of(response) == [
            ("success", "Disabled 2 plugins: asr, ocr. Note: GPU swap")
        ]
        for name in ("ocr", "asr"):
            plugin = Plugin.objects.get(name=name)
            assert (plugin.enabled, plugin.disabled_by, plugin.disabled_note) == (
                False,
                "user:ops",
                "GPU swap",
            )
            event = PluginEvent.objects.filter(plugin=plugin).first()
            assert (event.kind, event.reason, event.actor) == (
                EventKind.DISABLED,
                "GPU swap",
                "user:ops",
            )

    def test_enable__records_note_and_user(self, operator_client, make_plugin):
        """Enabling brings a disabled plugin back and records why and by whom."""
        make_plugin("ocr")
        services.plugin_disable(name="ocr", note="maintenance", actor="user:other")
        response = confirm(operator_client, "enable_selected", "ocr", note="maintenance done")
        assert messages_of(response) == [
            ("success", "Enabled 1 plugin: ocr. Note: maintenance done")
        ]
        assert Plugin.objects.get(name="ocr").enabled is True
        event = PluginEvent.objects.filter(plugin__name="ocr").first()
        assert (event.kind, event.reason, event.actor) == (
            EventKind.ENABLED,
            "maintenance done",
            "user:ops",
        )

    def test_reset_counters__zeroes_and_records_event(
        self, operator_client, make_plugin, finish_run
    ):
        """Resetting zeroes the counters and keeps the old figures in the event."""
        make_plugin("flaky")
        finish_run("flaky")
        finish_run("flaky", RunStatus.FAILED)
        response = confirm(operator_client, "reset_counters_selected", "flaky", note="new release")
        assert messages_of(response)[0][0] == "success"
        plugin = Plugin.objects.get(name="flaky")
        assert (plugin.success_count, plugin.error_count, plugin.consecutive_failures) == (0, 0, 0)
        event = PluginEvent.objects.filter(plugin=plugin).first()
        assert event.kind == EventKind.COUNTERS_RESET
        assert event.actor == "user:ops"
        assert event.reason == (
            "Counters reset from 1 successes, 1 errors, 1 consecutive failures: new release"
        )

    def test_note_action_from_detail_page__returns_to_it(self, operator_client, make_plugin):
        """Started from a plugin's page, the confirmation keeps the way back to that page."""
        make_plugin("ocr")
        pk = str(Plugin.objects.get(name="ocr").pk)
        page = act(operator_client, "disable_selected", "ocr", _from_detail=pk)
        assert f'name="_from_detail" value="{pk}"' in page.content.decode()
        response = confirm(operator_client, "disable_selected", "ocr", _from_detail=pk)
        assert response.redirect_chain[-1][0] == plugin_url("ocr")
        assert Plugin.objects.get(name="ocr").enabled is False


class TestPermissions:
    def test_viewer__sees_everything_and_no_actions(
        self, client, make_operator, make_plugin, finish_run
    ):
        """A view-only operator sees plugins, runs and events, and no action selector."""
        fleet(make_plugin, finish_run)
        client.force_login(make_operator(role="viewer"))
        plugins = client.get(PLUGINS)
        assert len(shown_names(plugins)) == 5
        assert 'name="action"' not in plugins.content.decode()
        assert client.get(RUNS).status_code == 200
        assert client.get(EVENTS).status_code == 200
        assert client.get(plugin_url("flaky")).status_code == 200

    @pytest.mark.parametrize(
        ("action", "extra"),
        [
            ("disable_selected", {"_confirm": "yes", "note": "x"}),
            ("reset_counters_selected", {"_confirm": "yes"}),
            ("rerun_selected", {}),
            ("reload_selected", {}),
        ],
    )
    def test_viewer__forged_action_changes_nothing(
        self, client, make_operator, make_plugin, finish_run, action, extra
    ):
        """A view-only operator posting any action gets the plain list back, and nothing changes."""
        make_plugin("flaky")
        finish_run("flaky", RunStatus.FAILED)
        client.force_login(make_operator(role="viewer"))
        before = list(PluginEvent.objects.values_list("pk", flat=True))
        response = act(client, action, "flaky", **extra)
        assert response.status_code == 200
        assert response.templates[0].name == "admin/change_list.html"
        plugin = Plugin.objects.get(name="flaky")
        assert (plugin.enabled, plugin.error_count) == (True, 1)
        assert list(PluginEvent.objects.values_list("pk", flat=True)) == before
        assert PluginRun.objects.count() == 1

    def test_runner__may_rerun_and_reload_but_not_operate(self, client, make_operator, make_plugin):
        """run_plugin offers rerun and reload only; disable, enable and reset need operate."""
        make_plugin("ocr")
        client.force_login(make_operator(role="runner"))
        choices = dict(client.get(PLUGINS).context["action_form"].fields["action"].choices)
        assert set(choices) - {""} == {"rerun_selected", "reload_selected"}
        response = act(client, "disable_selected", "ocr", _confirm="yes", note="x")
        assert ("warning", "No action selected.") in messages_of(response)
        assert Plugin.objects.get(name="ocr").enabled is True

    def test_operator__has_every_action(self, operator_client, make_plugin):
        """operate_plugin adds disable, enable, reset counters, the policy and quarantine."""
        make_plugin("ocr")
        choices = dict(operator_client.get(PLUGINS).context["action_form"].fields["action"].choices)
        assert set(choices) - {""} == {
            "rerun_selected",
            "reload_selected",
            "disable_selected",
            "enable_selected",
            "reset_counters_selected",
            "set_policy_selected",
            "lift_quarantine_selected",
            "extend_quarantine_selected",
        }


class TestRerunAndReload:
    def test_rerun__failed_plugin_runs_again_with_last_params(
        self, operator_client, example_plugins, tmp_path
    ):
        """Rerun repeats the last run's params; once upstream is back the plugin recovers."""
        flag = add_switch_plugin(example_plugins, tmp_path)
        first = pipeline.run_plugin(name="switch", params={"page": 7}, actor="api:etl")
        assert first.status == RunStatus.FAILED
        flag.unlink()  # the operator fixed upstream
        response = act(operator_client, "rerun_selected", "switch")
        run = PluginRun.objects.exclude(pk=first.pk).get()
        ((level, text),) = messages_of(response)
        assert level == "success"
        assert f"Queued run #{run.pk} of 'switch'" in re.sub(r"<[^>]+>", "", text)
        assert (run.params, run.actor, run.status, run.result) == (
            {"page": 7},
            "user:ops",
            RunStatus.SUCCEEDED,
            {"page": 7},
        )
        plugin = Plugin.objects.get(name="switch")
        assert (plugin.state, plugin.success_count, plugin.error_count) == (
            PluginState.INITIALIZED,
            1,
            1,
        )
        assert plugin.consecutive_failures == 0

    def test_rerun__refused_plugin_reports_the_reason(
        self, operator_client, make_plugin, finish_run
    ):
        """Rerunning a disabled plugin reports an error naming who disabled it and why."""
        make_plugin("ocr")
        services.plugin_disable(name="ocr", note="bad model", actor="user:lead")
        response = act(operator_client, "rerun_selected", "ocr")
        ((level, text),) = messages_of(response)
        assert level == "error"
        assert text.startswith("Could not rerun 'ocr': Plugin 'ocr' is disabled by user:lead")
        assert "bad model" in text
        assert PluginRun.objects.count() == 0

    def test_reload__unavailable_plugin_recovers_once_the_file_exists(
        self, operator_client, example_plugins, tmp_path
    ):
        """Reload re-checks the environment: the missing model file now exists, so it is ready."""
        model = tmp_path / "model.bin"
        example_plugins.add(
            "vision", f"requires = {{'files': [{str(model)!r}]}}\ndef run():\n    return 1\n"
        )
        assert pipeline.reload_plugin(name="vision", actor="t").state == PluginState.UNAVAILABLE
        model.write_bytes(b"weights")
        response = act(operator_client, "reload_selected", "vision")
        assert messages_of(response) == [("success", "Reloaded 'vision': it is INITIALIZED now.")]
        assert Plugin.objects.get(name="vision").state == PluginState.INITIALIZED

    def test_reload__run_orphaned_by_dead_process_does_not_block(
        self, operator_client, example_plugins, monkeypatch
    ):
        """A run left RUNNING by a killed server is INTERRUPTED first; the reload applies."""
        from plugins_app import executor

        monkeypatch.setattr(executor, "_last_sweep", time.monotonic())  # the list just swept
        example_plugins.add("vision", "def run():\n    return 1\n")
        pipeline.reload_plugin(name="vision", actor="t")
        run = services.run_queue(name="vision", params={}, actor="t")
        services.run_start(run_id=run.pk, worker="deadhost:1")
        PluginRun.objects.filter(pk=run.pk).update(
            heartbeat_at=datetime.now(UTC) - timedelta(hours=1)
        )
        response = act(operator_client, "reload_selected", "vision")
        assert messages_of(response) == [("success", "Reloaded 'vision': it is INITIALIZED now.")]
        assert PluginRun.objects.get(pk=run.pk).status == RunStatus.INTERRUPTED

    def test_reload__still_unavailable_reports_the_reason(
        self, operator_client, example_plugins, tmp_path
    ):
        """A reload that finds the environment still broken says so, with the reason."""
        model = tmp_path / "missing-model.bin"
        example_plugins.add(
            "vision", f"requires = {{'files': [{str(model)!r}]}}\ndef run():\n    return 1\n"
        )
        pipeline.reload_plugin(name="vision", actor="t")
        response = act(operator_client, "reload_selected", "vision")
        ((level, text),) = messages_of(response)
        reason = Plugin.objects.get(name="vision").reason
        assert level == "error"
        assert text == f"Reloaded 'vision': it is still UNAVAILABLE: {reason}"
        assert str(model) in reason

    def test_reload__several_selected_discovered_once_each_reported(
        self, operator_client, example_plugins, tmp_path, monkeypatch
    ):
        """Reloading several plugins scans the plugin folders once and reports each by name."""
        example_plugins.add("alpha", "def run():\n    return 1\n")
        model = tmp_path / "missing.bin"
        example_plugins.add("beta", f"requires = {{'files': [{str(model)!r}]}}\ndef run(): pass\n")
        example_plugins.add("gamma", "def run():\n    return 3\n")
        pipeline.load_plugins(actor="t")
        queued = services.run_queue(name="gamma", params={}, actor="t")
        services.run_start(run_id=queued.pk, worker="w:1")
        scans = []
        discover = loader.discover
        monkeypatch.setattr(loader, "discover", lambda: scans.append(1) or discover())
        response = act(operator_client, "reload_selected", "alpha", "beta", "gamma")
        beta_reason = Plugin.objects.get(name="beta").reason
        assert sorted(messages_of(response)) == [
            (
                "error",
                "Could not reload 'gamma': Plugin 'gamma' has 1 run(s) in progress and cannot be "
                "reloaded now (wait for them to finish, then reload)",
            ),
            ("error", f"Reloaded 'beta': it is still UNAVAILABLE: {beta_reason}"),
            ("success", "Reloaded 'alpha': it is INITIALIZED now."),
        ]
        assert len(scans) == 1
        assert Plugin.objects.get(name="gamma").state == PluginState.RUNNING

    def test_reload__plugin_with_runs_in_progress_is_refused_with_the_reason(
        self, operator_client, make_plugin
    ):
        """Reloading a plugin that is running says to wait, and leaves it running."""
        make_plugin("busy")
        queued = services.run_queue(name="busy", params={}, actor="t")
        services.run_start(run_id=queued.pk, worker="w:1")
        response = act(operator_client, "reload_selected", "busy")
        assert messages_of(response) == [
            (
                "error",
                "Could not reload 'busy': Plugin 'busy' has 1 run(s) in progress and cannot be "
                "reloaded now (wait for them to finish, then reload)",
            )
        ]
        assert Plugin.objects.get(name="busy").state == PluginState.RUNNING

    def test_action_from_detail_page__returns_to_it(self, operator_client, make_plugin):
        """A one-click action on a plugin's page comes back to that page with its message."""
        make_plugin("ocr")
        services.plugin_disable(name="ocr", note="", actor="t")
        pk = str(Plugin.objects.get(name="ocr").pk)
        response = act(operator_client, "rerun_selected", "ocr", _from_detail=pk)
        assert response.redirect_chain == [(plugin_url("ocr"), 302)]
        assert messages_of(response)[0][0] == "error"


@pytest.mark.django_db(transaction=True)
class TestRerunInBackground:
    def test_rerun__returns_before_the_run_finishes(self, operator_client, plugin_dir, settings):
        """The rerun action queues the run and answers at once; the run finishes later."""
        settings.PORTAL_PLUGIN_DIRS = [str(plugin_dir.path)]
        settings.PORTAL_RUN_EXECUTOR = "thread"
        shutdown_executor()
        try:
            sleeper = "import time\ndef run(s=0):\n    time.sleep(s)\n    return s\n"
            plugin_dir.add("sleeper", sleeper)
            pipeline.reload_plugin(name="sleeper", actor="t")
            pipeline.run_plugin(name="sleeper", params={"s": 1.5}, actor="t")
            response = act(operator_client, "rerun_selected", "sleeper", follow=False)
            assert response.status_code == 302
            run = PluginRun.objects.order_by("-pk").first()
            assert run.status in (RunStatus.QUEUED, RunStatus.RUNNING)
            finished = pipeline.wait_for_run(run_id=run.pk, timeout_s=30)
            assert finished.status == RunStatus.SUCCEEDED
            assert Plugin.objects.get(name="sleeper").success_count == 2
        finally:
            shutdown_executor()
            pipeline.discard_warm_hosts()


def run_at(name: str, when: datetime, status: RunStatus = RunStatus.SUCCEEDED, **fields):
    """A finished history row at a chosen time."""
    run = services.run_queue(name=name, params={}, actor="t")
    PluginRun.objects.filter(pk=run.pk).update(queued_at=when, status=status, **fields)
    return PluginRun.objects.get(pk=run.pk)


class TestRunAdmin:
    def test_runs__read_only_without_add_edit_or_delete(
        self, operator_client, make_plugin, finish_run
    ):
        """History rows cannot be added, changed or deleted from the admin (the one action
        on runs is Cancel, which ends a queued or running run through the service)."""
        make_plugin("ocr")
        run = finish_run("ocr")
        content = operator_client.get(RUNS).content.decode()
        assert "addlink" not in content
        assert re.findall(r'<option value="(\w+)"', content) == ["cancel_selected"]
        change = reverse("admin:plugins_app_pluginrun_change", args=[run.pk])
        assert operator_client.post(change, {"status": "failed"}).status_code == 403
        delete = reverse("admin:plugins_app_pluginrun_delete", args=[run.pk])
        assert operator_client.post(delete, {"post": "yes"}).status_code == 403
        assert operator_client.get(reverse("admin:plugins_app_pluginrun_add")).status_code == 403
        assert PluginRun.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED

    def test_run_page__shows_its_forensics(self, operator_client, make_plugin, finish_run):
        """A crashed run's page has everything needed to understand it."""
        make_plugin("seg")
        run = services.run_queue(name="seg", params={"image": "cat.png"}, actor="user:alice")
        services.run_start(run_id=run.pk, worker="host-a:4242")
        outcome = services.RunOutcome(
            status=RunStatus.CRASHED,
            outcome="crashed",
            error_type="Crashed",
            reason="Plugin 'seg' crashed with signal SIGSEGV (report it to the plugin's author)",
            traceback='Fatal Python error: Segmentation fault\n  File "seg.py", line 9',
            exit_code=-11,
            signal="SIGSEGV",
            peak_rss_kb=204800,
            duration_ms=1234.5,
            stdout_tail="loading model\n",
            stderr_tail="segfault in libfoo.so\n",
        )
        services.run_finish(run_id=run.pk, outcome=outcome)
        url = reverse("admin:plugins_app_pluginrun_change", args=[run.pk])
        content = operator_client.get(url).content.decode()
        for expected in (
            "&quot;image&quot;: &quot;cat.png&quot;",
            "Crashed",
            "crashed with signal SIGSEGV",
            "Fatal Python error: Segmentation fault",
            "-11",
            "SIGSEGV",
            "200.0 MiB",
            "1.23 s",
            '<span class="state-badge state-run-crashed">Crashed</span>',
            "loading model",
            "segfault in libfoo.so",
            "user:alice",
            "host-a:4242",
        ):
            assert expected in content, expected

    def test_runs__filter_by_status_outcome_and_plugin(
        self, operator_client, make_plugin, finish_run
    ):
        """Runs narrow by status, by sandbox outcome and by plugin name."""
        make_plugin("ocr")
        make_plugin("asr")
        ok = finish_run("ocr", outcome="ok")
        timeout = finish_run("ocr", RunStatus.TIMED_OUT, outcome="timeout")
        other = finish_run("asr", outcome="ok")

        def listed(**params):
            return [run.pk for run in operator_client.get(RUNS, params).context["cl"].result_list]

        assert listed(status__exact="timed_out") == [timeout.pk]
        assert listed(outcome="ok") == [other.pk, ok.pk]
        assert listed(plugin="ocr") == [timeout.pk, ok.pk]
        assert listed(plugin="asr", outcome="timeout") == []

    def test_runs__search_by_error(self, operator_client, make_plugin, finish_run):
        """Searching runs finds failed ones by words of their reason or error type."""
        make_plugin("ocr")
        finish_run("ocr")
        crash = finish_run("ocr", RunStatus.CRASHED, error_type="Crashed", reason="SIGSEGV in x")
        error = finish_run("ocr", RunStatus.FAILED, error_type="KeyError", reason="no key 'page'")
        response = operator_client.get(RUNS, {"q": "sigsegv"})
        assert [run.pk for run in response.context["cl"].result_list] == [crash.pk]
        response = operator_client.get(RUNS, {"q": "KeyError"})
        assert [run.pk for run in response.context["cl"].result_list] == [error.pk]

    def test_runs__never_count_the_whole_table(self, operator_client, make_plugin, finish_run):
        """Every COUNT over the runs is capped, filtered or not."""
        make_plugin("ocr")
        finish_run("ocr")
        for params in ({}, {"status__exact": "failed"}, {"q": "x"}, {"queued_at__year": "2026"}):
            with CaptureQueriesContext(connection) as queries:
                assert operator_client.get(RUNS, params).status_code == 200
            counts = [q["sql"] for q in queries if "COUNT(" in q["sql"] and "pluginrun" in q["sql"]]
            assert all("LIMIT" in sql for sql in counts), counts

    def test_runs__beyond_the_cap_the_list_says_more_than(
        self, operator_client, make_plugin, finish_run, monkeypatch
    ):
        """Past the counting cap the list says 'more than N' instead of counting everything."""
        monkeypatch.setattr(portal_admin.CappedCountPaginator, "cap", 3)
        make_plugin("ocr")
        for _ in range(5):
            finish_run("ocr")
        content = operator_client.get(RUNS).content.decode()
        assert "More than 3 plugin runs" in content
        few = operator_client.get(RUNS, {"status__exact": "failed"}).content.decode()
        assert "0 plugin runs" in few
        assert "More than" not in few

    def test_runs__search_keeps_the_newest_matches_and_says_more_than(
        self, operator_client, make_plugin, finish_run, monkeypatch
    ):
        """A search matching more than its cap lists the newest matches and says 'more than'."""
        monkeypatch.setattr(portal_admin.PluginRunAdmin, "search_cap", 2)
        make_plugin("ocr")
        crashes = [finish_run("ocr", RunStatus.CRASHED, reason="SIGSEGV again") for _ in range(3)]
        response = operator_client.get(RUNS, {"q": "SIGSEGV"})
        shown = [run.pk for run in response.context["cl"].result_list]
        assert shown == [crashes[2].pk, crashes[1].pk]
        content = response.content.decode()
        assert "More than 2 plugin runs" in content
        assert "More than 2 results" in content


class TestDateHierarchy:
    DATES = [
        datetime(2025, 11, 3, 10, tzinfo=UTC),
        datetime(2026, 2, 14, 9, tzinfo=UTC),
        datetime(2026, 2, 20, 23, tzinfo=UTC),
        datetime(2026, 5, 1, 0, 30, tzinfo=UTC),
    ]

    @staticmethod
    def choices(response) -> list[str]:
        nav = re.search(r'<nav class="toplinks">(.*?)</nav>', response.content.decode(), re.S)
        links = re.findall(r'<a href="[^"]*"(?: class="[^"]*")?>([^<]+)</a>', nav.group(1))
        return [unescape(link).removeprefix("\u2039 ") for link in links]  # drop the back arrow

    @pytest.fixture(params=["index probes", "short list"])
    def dated_runs(self, request, make_plugin, monkeypatch):
        """Runs on known dates; the cap decides which way the date bar reads them."""
        cap = 1 if request.param == "index probes" else 10_000
        monkeypatch.setattr(portal_admin.CappedCountPaginator, "cap", cap)
        make_plugin("ocr")
        return [run_at("ocr", when) for when in self.DATES]

    def test_date_bar__years_months_days_with_runs_only(self, operator_client, dated_runs):
        """Each level offers only the years, months and days that have runs."""
        assert self.choices(operator_client.get(RUNS)) == ["2025", "2026"]
        year = operator_client.get(RUNS, {"queued_at__year": "2026"})
        assert self.choices(year) == ["All dates", "February 2026", "May 2026"]
        assert len(year.context["cl"].result_list) == 3
        month = operator_client.get(RUNS, {"queued_at__year": "2026", "queued_at__month": "2"})
        assert self.choices(month) == ["2026", "February 14", "February 20"]
        day = {"queued_at__year": "2026", "queued_at__month": "2", "queued_at__day": "20"}
        assert [r.pk for r in operator_client.get(RUNS, day).context["cl"].result_list] == [
            dated_runs[2].pk
        ]

    def test_date_bar__respects_the_other_filters(self, operator_client, dated_runs):
        """With a filter applied, only dates of matching runs are offered."""
        PluginRun.objects.filter(pk=dated_runs[1].pk).update(status=RunStatus.FAILED)
        response = operator_client.get(RUNS, {"status__exact": "failed"})
        # One matching run: the bar starts at its month, as Django's own does.
        assert self.choices(response) == ["2026", "February 14"]

    def test_date_bar__never_scans_every_row(self, operator_client, dated_runs):
        """No query truncates every row's date (the stock date bar's full scan)."""
        with CaptureQueriesContext(connection) as queries:
            operator_client.get(RUNS, {"queued_at__year": "2026"})
        truncating = re.compile(r"(django_datetime_trunc|date_trunc)\(", re.IGNORECASE)
        assert not [q["sql"] for q in queries if truncating.search(q["sql"])]


class TestEventAdmin:
    def test_events__read_only_timeline_with_transitions(
        self, operator_client, make_plugin, finish_run
    ):
        """Events list state changes with badges, newest first, and cannot be edited."""
        make_plugin("flaky")
        finish_run("flaky", RunStatus.FAILED, reason=FAILED_REASON)
        response = operator_client.get(EVENTS, {"plugin": "flaky"})
        events = list(response.context["cl"].result_list)
        assert [(e.from_state, e.to_state) for e in events][:2] == [
            ("RUNNING", "FAILED"),
            ("INITIALIZED", "RUNNING"),
        ]
        content = response.content.decode()
        assert 'class="state-badge state-FAILED"' in content
        assert "addlink" not in content
        change = reverse("admin:plugins_app_pluginevent_change", args=[events[0].pk])
        assert operator_client.post(change, {"reason": "edited"}).status_code == 403
        assert PluginEvent.objects.get(pk=events[0].pk).reason == FAILED_REASON


class TestAdminIndex:
    def test_index__fleet_counts_and_problems_with_reasons(
        self, operator_client, make_plugin, finish_run
    ):
        """The admin index counts plugins per state and lists what is broken and why."""
        fleet(make_plugin, finish_run)
        services.plugin_disable(name="ready", note="", actor="t")
        content = operator_client.get(reverse("admin:index")).content.decode()
        counts = dict(re.findall(r'data-state="(\w+)">(\d+)<', content))
        assert counts == {
            "LOADED": "1",
            "INITIALIZED": "1",
            "RUNNING": "1",
            "FAILED": "1",
            "UNAVAILABLE": "1",
            "disabled": "1",
        }
        problems = re.findall(r'<tr class="fleet-problem">(.*?)</tr>', content, re.S)
        assert [cells(f"<tr>{p}</tr>")[1] for p in problems] == ["yolo", "flaky"]
        assert escape(TORCH_REASON) in content
        assert escape(FAILED_REASON) in content

    def test_index__runs_per_hour_chart_is_inline_svg(
        self, operator_client, make_plugin, finish_run
    ):
        """The last 24 hours of runs are an inline SVG with one bar per hour, no external asset."""
        make_plugin("ocr")
        finish_run("ocr")
        finish_run("ocr", RunStatus.FAILED)
        old = run_at("ocr", datetime.now(UTC) - timedelta(hours=30))
        content = operator_client.get(reverse("admin:index")).content.decode()
        svg = re.search(r"<svg class=\"runs-chart\".*?</svg>", content, re.S).group(0)
        assert svg.count('<g class="bar">') == 24
        assert "Runs per hour, last 24 hours: 2 runs, 1 failed (busiest hour: 2)" in content
        assert ": 2 runs, 1 failed</title>" in svg
        assert old.pk  # 30 hours old: outside the chart
        assert "http://" not in svg
        assert not re.search(r'<(script|link)[^>]+(src|href)="(https?:)?//', content)

    def test_index__staff_without_plugin_permission_sees_no_overview(self, client, make_operator):
        """The overview is shown only to users who may view plugins."""
        user = make_operator(role="viewer")
        user.user_permissions.clear()
        client.force_login(user)
        assert "Fleet at a glance" not in client.get(reverse("admin:index")).content.decode()
