"""The celery executor's database side: claims, routing, worker records, refused arguments."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from plugins_app import pipeline, reasons, reasons_policy, services
from plugins_app.errors import InvalidParams, PluginRefused, TooManyVanished
from plugins_app.executor import shutdown_executor
from plugins_app.fleet.celery_app import celery_app
from plugins_app.fleet.loads import load_outcome
from plugins_app.fleet.node import WorkerNode, keep_database_connections, node_environment
from plugins_app.fleet.queues import live_workers_per_queue, queue_of, route_expression
from plugins_app.fleet.tasks import execute_run_task, load_plugins_task
from plugins_app.models import (
    EventKind,
    LoadRequest,
    Plugin,
    PluginEvent,
    PluginRun,
    PluginState,
    RunStatus,
    Worker,
)

pytestmark = pytest.mark.django_db


def register(name: str, queues: list[str]) -> Worker:
    return services.worker_register(
        name=name, queues=queues, concurrency=2, environment=node_environment()
    )


@pytest.mark.django_db(transaction=True)  # the task closes its thread's connection
class TestClaim:
    def test_a_redelivered_message_does_nothing(self, plugins):
        """The second delivery of a run id finds the run finished: one attempt, counted once."""
        plugins.add("hello", "def run():\n    return {'hi': 1}\n")
        pipeline.load_plugins(actor="test")
        run = services.run_queue(name="hello", params={}, actor="test")

        execute_run_task(run.pk)
        execute_run_task(run.pk)

        run.refresh_from_db()
        assert (run.status, run.attempt, PluginRun.objects.count()) == (RunStatus.SUCCEEDED, 1, 1)
        plugin = Plugin.objects.get(name="hello")
        assert (plugin.success_count, plugin.error_count) == (1, 0)

    def test_runs_in_a_row__one_database_connection_when_kept(self, plugins, monkeypatch):
        """With CONN_MAX_AGE set (a node's default), a thread's runs share one connection
        instead of connecting to the database for every run."""
        monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 60)
        plugins.add("hello", "def run():\n    return 1\n")
        pipeline.load_plugins(actor="test")
        used = []
        for _ in range(2):
            execute_run_task(services.run_queue(name="hello", params={}, actor="test").pk)
            used.append(connection.connection)
        assert used[0] is not None and used[1] is used[0]
        assert PluginRun.objects.filter(status=RunStatus.SUCCEEDED).count() == 2

    def test_a_run__connection_closed_without_conn_max_age(self, plugins, monkeypatch):
        """CONN_MAX_AGE 0 (Django's default): the task leaves no connection open behind it."""
        monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
        plugins.add("hello", "def run():\n    return 1\n")
        pipeline.load_plugins(actor="test")
        execute_run_task(services.run_queue(name="hello", params={}, actor="test").pk)
        assert connection.connection is None

    def test_a_message_for_a_deleted_run_does_nothing(self, make_plugin):
        """A run pruned before a worker took it: the task logs and returns."""
        make_plugin("gone")
        run = services.run_queue(name="gone", params={}, actor="test")
        PluginRun.objects.filter(pk=run.pk).delete()

        execute_run_task(run.pk)

        assert not PluginRun.objects.exists()


class TestRouting:
    def test_default_gpu_and_override(self, make_plugin):
        """'gpu' for a plugin that requires one, 'default' otherwise, the override over both."""
        plain = make_plugin("plain")
        gpu = make_plugin("vision", requirements={"gpu": True})
        assert (queue_of(plain), queue_of(gpu)) == ("default", "gpu")

        services.plugin_set_queue(name="vision", queue="big-gpu", actor="user:ann")

        assert queue_of(Plugin.objects.get(name="vision")) == "big-gpu"

    def test_routes_in_sql__the_same_as_queue_of(self, make_plugin):
        """The database's routing (used to find a node's due retries) agrees with queue_of
        for a plain plugin, a GPU one, a declared queue and an override."""
        make_plugin("plain")
        make_plugin("vision", requirements={"gpu": True})
        make_plugin("ocr", declared_queue="docs")
        make_plugin("big", requirements={"gpu": True})
        services.plugin_set_queue(name="big", queue="big-gpu", actor="user:ann")

        in_sql = dict(
            Plugin.objects.annotate(route=route_expression()).values_list("name", "route")
        )

        assert in_sql == {plugin.name: queue_of(plugin) for plugin in Plugin.objects.all()}
        assert in_sql == {"plain": "default", "vision": "gpu", "ocr": "docs", "big": "big-gpu"}

    def test_an_override_is_recorded_once_as_an_event(self, make_plugin):
        """Changing the queue writes one event with who and why; setting it again writes none."""
        make_plugin("plain")
        services.plugin_set_queue(name="plain", queue="slow", actor="user:ann")
        services.plugin_set_queue(name="plain", queue="slow", actor="user:ann")

        events = PluginEvent.objects.filter(kind=EventKind.QUEUE_CHANGED)
        assert events.count() == 1
        event = events.get()
        assert event.actor == "user:ann"
        assert event.reason == reasons.queue_changed(plugin="plain", previous="", queue="slow")

    def test_a_timeout_for_one_run_needs_the_local_path(self, make_plugin, settings):
        """With the celery executor, runplugin --timeout is refused unless the run is local."""
        make_plugin("plain")
        settings.PORTAL_RUN_EXECUTOR = "celery"
        with pytest.raises(InvalidParams, match="--local"):
            pipeline.run_plugin(name="plain", params={}, actor="test", timeout_s=5)
        assert not PluginRun.objects.exists()


class TestWorkerRecords:
    def test_live_lost_and_stopped(self, settings):
        """A node is alive while it heartbeats, lost when silent, stopped after a clean exit."""
        register("a", ["default", "gpu"])
        register("b", ["gpu"])
        register("c", ["default"])
        stale = timezone.now() - timedelta(seconds=settings.PORTAL_RUN_STALE_AFTER_S + 1)
        Worker.objects.filter(name="b").update(heartbeat_at=stale)
        services.worker_stopped(name="c")

        statuses = {worker.name: worker.status for worker in Worker.objects.all()}
        assert statuses == {"a": "alive", "b": "lost", "c": "stopped"}
        assert live_workers_per_queue() == {"default": 1, "gpu": 1}

    def test_a_heartbeat_brings_a_deleted_row_back(self):
        """A node whose row was deleted registers again at its next beat."""
        node = WorkerNode(name="n1", queues=["default"], concurrency=1)
        node.register()
        Worker.objects.all().delete()

        node.beat()

        assert Worker.objects.get(name="n1").queues == ["default"]


class TestRunworkerArguments:
    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (["--queues", ""], "not a list of queue names"),
            (["--queues", "default,GPU!"], "'GPU!'"),
            (["--concurrency", "0"], "--concurrency must be 1 or more"),
            (["--name", "a@b"], "cannot name a worker"),
        ],
    )
    def test_bad_arguments_exit_2(self, argv, message):
        """Misuse stops before any broker connection, with exit code 2 and what to give."""
        with pytest.raises(CommandError, match=message) as raised:
            call_command("runworker", *argv)
        assert raised.value.returncode == 2


class TestDeclaredQueue:
    def test_a_module_declares_its_queue(self, plugins, make_plugin):
        """`queue = "gpu"` in the module routes its runs there; the override still wins."""
        plugins.add("painter", 'queue = "render"\n\ndef run():\n    return 1\n')
        pipeline.load_plugins(actor="test")
        painter = Plugin.objects.get(name="painter")
        assert (painter.declared_queue, queue_of(painter)) == ("render", "render")

        services.plugin_set_queue(name="painter", queue="default", actor="user:ann")

        assert queue_of(Plugin.objects.get(name="painter")) == "default"

    def test_a_queue_that_is_no_name_fails_the_load(self, plugins):
        """A declared queue that cannot name a queue: FAILED, the reason says what to write."""
        plugins.add("odd", 'queue = "GPU nodes"\n\ndef run():\n    return 1\n')
        pipeline.load_plugins(actor="test")
        odd = Plugin.objects.get(name="odd")
        assert odd.state == PluginState.FAILED
        assert "queue must name a worker queue" in odd.reason


class TestRunpluginLocal:
    def test_local_runs_here_with_the_celery_executor(self, plugins, settings, capsys):
        """runplugin --local keeps the in-process path: no broker, the run done here."""
        plugins.add("hello", "def run(name='x'):\n    return {'hi': name}\n")
        pipeline.load_plugins(actor="test")
        settings.PORTAL_RUN_EXECUTOR = "celery"
        settings.PORTAL_BROKER_URL = "amqp://guest:guest@127.0.0.1:1//"  # nothing listens

        call_command("runplugin", "hello", "--local", "--param", "name=Ann")

        assert '"hi": "Ann"' in capsys.readouterr().out
        run = PluginRun.objects.get()
        assert (run.status, run.attempt, PluginRun.objects.count()) == (RunStatus.SUCCEEDED, 1, 1)


class TestLoadsOnNodes:
    def test_a_reload_with_no_live_node_for_the_queue_is_refused(self, make_plugin, settings):
        """Under the celery executor a reload nobody could answer is refused at once, naming
        the queue and the command to start a node; nothing is asked of the broker."""
        make_plugin("vision", requirements={"gpu": True})
        settings.PORTAL_RUN_EXECUTOR = "celery"
        settings.PORTAL_BROKER_URL = "amqp://guest:guest@127.0.0.1:1//"  # nothing listens

        with pytest.raises(PluginRefused, match="runworker --queues gpu"):
            pipeline.reload_plugin(name="vision", actor="test")

        assert not LoadRequest.objects.exists()

    def test_a_node_answers_with_reports_or_the_refusal_as_data(self, plugins):
        """What a node writes back: the reports as dicts, or the error's kind and sentence."""
        plugins.add("hello", "def run():\n    return 1\n")

        asked = services.load_request_create(names=["hello"], actor="test", queue="default")
        answered = load_outcome(asked)
        nowhere = services.load_request_create(names=["nowhere"], actor="test", queue="default")
        missing = load_outcome(nowhere)

        assert [report["name"] for report in answered["reports"]] == ["hello"]
        assert answered["reports"][0]["state"] == PluginState.INITIALIZED
        assert missing == {
            "error": "PluginNotFound",
            "name": "nowhere",
            "message": "Plugin 'nowhere' not found",
        }

    def test_a_plugin_declaring_a_queue_nobody_serves__unavailable_saying_what_to_start(
        self, plugins
    ):
        """A new plugin loaded on 'default' that declares 'gpu', with no gpu node alive: it is
        UNAVAILABLE, its reason naming the node to start; nothing is forwarded."""
        plugins.add("tracker", "queue = 'gpu'\n\ndef run():\n    return 1\n")
        asked = services.load_request_create(names=["tracker"], actor="test", queue="default")

        answered = load_outcome(asked)

        tracker = Plugin.objects.get(name="tracker")
        assert tracker.state == PluginState.UNAVAILABLE
        assert tracker.reason == reasons.load_without_worker(plugin="tracker", queue="gpu")
        assert answered["reports"][0]["state"] == PluginState.UNAVAILABLE
        assert (answered["forwarded"], LoadRequest.objects.count()) == ([], 1)

    def test_load_of_every_plugin_under_celery__vanished_ones_marked_here(
        self, plugins, make_plugin, settings
    ):
        """No plugin file found: nothing is sent to a node, a registered plugin is marked
        vanished here, and more than two at once are refused as a likely wrong directory."""
        make_plugin("gone")
        settings.PORTAL_RUN_EXECUTOR = "celery"

        [report] = pipeline.load_plugins(actor="test")

        assert (report.name, report.state) == ("gone", PluginState.UNAVAILABLE)
        assert "gone" in report.reason and not LoadRequest.objects.exists()
        plugins.add("fresh", "def run():\n    return 1\n")
        with pytest.raises(CommandError, match="runworker --queues default") as refused:
            call_command("loadplugins")
        assert refused.value.returncode == 1
        for name in ("gone-2", "gone-3", "gone-4"):
            make_plugin(name)
        with pytest.raises(TooManyVanished):
            pipeline.load_plugins(actor="test")


@pytest.mark.django_db(transaction=True)  # the task closes its thread's connection
class TestLoadDeliveries:
    def test_a_load_delivered_a_third_time__nothing_imported_and_the_plugin_failed(self, plugins):
        """A load whose two deliveries each lost their node: the third loads nothing, and the
        plugin is FAILED saying it likely takes its worker down; a later delivery does nothing."""
        plugins.add("fine", "def run():\n    return 1\n")
        request = services.load_request_create(names=["fine"], actor="test", queue="default")
        LoadRequest.objects.filter(pk=request.pk).update(attempts=2)

        load_plugins_task(request.pk)
        load_plugins_task(request.pk)

        request.refresh_from_db()
        fine = Plugin.objects.get(name="fine")
        assert (fine.state, request.attempts) == (PluginState.FAILED, 3)
        assert fine.reason == reasons_policy.load_took_node_down(
            plugin="fine", attempts=2, queue="default"
        )
        assert request.outcome["reports"][0]["state"] == PluginState.FAILED


@pytest.mark.django_db(transaction=True)  # the send happens once the run's row commits
class TestBrokerUnreachable:
    def test_a_run_that_cannot_be_sent_is_closed_uncounted(self, make_plugin, settings):
        """No broker at PORTAL_BROKER_URL: the run ends refused, with what to check, and the
        plugin's counters do not move."""
        make_plugin("plain")
        settings.PORTAL_RUN_EXECUTOR = "celery"
        settings.PORTAL_BROKER_URL = "amqp://guest:guest@127.0.0.1:1//"  # nothing listens
        celery_app.cache_clear()
        try:
            run = pipeline.submit_run(name="plain", params={}, actor="test")
        finally:
            shutdown_executor()
            celery_app.cache_clear()

        assert (run.status, run.outcome) == (RunStatus.FAILED, "refused")
        assert "broker is unreachable" in run.reason and "PORTAL_BROKER_URL" in run.reason
        plugin = Plugin.objects.get(name="plain")
        assert (plugin.error_count, plugin.running_count) == (0, 0)


class TestNodeConnections:
    def test_node__keeps_connections_checked_before_reuse(self, settings):
        """A worker node keeps its threads' connections (60 s), checked before each reuse."""
        database = {"ENGINE": "django.db.backends.postgresql", "CONN_MAX_AGE": 0}
        keep_database_connections(database, environ={})
        assert database["CONN_MAX_AGE"] == 60
        assert settings.DATABASES["default"]["CONN_HEALTH_CHECKS"] is True

    def test_operator_set_conn_max_age__left_as_set(self):
        """CONN_MAX_AGE in the environment is the operator's choice: the node keeps it."""
        database = {"ENGINE": "django.db.backends.postgresql", "CONN_MAX_AGE": 0}
        keep_database_connections(database, environ={"CONN_MAX_AGE": "0"})
        assert database["CONN_MAX_AGE"] == 0
