"""Worker nodes send due retries to their queue once, find their own among many, and keep a
retry the broker refused for the next heartbeat (a real RabbitMQ vhost; no node processes)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone

from plugins_app import services
from plugins_app.fleet.celery_app import celery_app
from plugins_app.fleet.node import WorkerNode
from plugins_app.models import Plugin, PluginRun, RunStatus
from tests.fleet_support import broker_vhost

pytestmark = [pytest.mark.broker, pytest.mark.django_db(transaction=True)]

NOBODY_LISTENS = "amqp://guest:guest@127.0.0.1:1//"


@pytest.fixture
def broker(settings) -> Iterator[str]:
    """The celery executor on a vhost of this test's own; its broker URL."""
    settings.PORTAL_RUN_EXECUTOR = "celery"
    with broker_vhost() as url:
        settings.PORTAL_BROKER_URL = url
        celery_app.cache_clear()
        try:
            yield url
        finally:
            celery_app.cache_clear()


def use_broker(settings, url: str) -> None:
    settings.PORTAL_BROKER_URL = url
    celery_app.cache_clear()


def messages_in(queue: str) -> int:
    """Messages waiting in `queue` (0 when nothing ever declared it)."""
    with celery_app().connection_for_write() as conn:
        try:
            return conn.default_channel.queue_declare(queue=queue, passive=True).message_count
        except conn.channel_errors:
            return 0


def due_retry(name: str) -> PluginRun:
    """A crashed run's retry whose backoff is over."""
    run = services.run_queue(name=name, params={}, actor="test")
    services.run_start(run_id=run.pk, worker="test:1")
    crashed = services.RunOutcome(
        status=RunStatus.CRASHED, outcome="crashed", reason="Run crashed in the test on purpose"
    )
    services.run_finish(run_id=run.pk, outcome=crashed)
    retry = PluginRun.objects.get(retry_of=run)
    PluginRun.objects.filter(pk=retry.pk).update(not_before=timezone.now() - timedelta(seconds=1))
    retry.refresh_from_db()
    return retry


def node(name: str, *queues: str) -> WorkerNode:
    return WorkerNode(name=name, queues=list(queues), concurrency=1)


RETRIED = {"retry": {"max_attempts": 2, "backoff_s": 1}, "quarantine_after": 0}


class TestDueRetrySends:
    def test_two_nodes_many_beats__one_message(self, broker, make_plugin):
        """Two nodes of the queue, three heartbeats each: the due retry is sent once; the
        others see it sent and wait for it to start."""
        make_plugin("ocr", **RETRIED)
        retry = due_retry("ocr")
        nodes = [node("a", "default"), node("b", "default")]

        sent = [n.dispatch_due_retries() for _ in range(3) for n in nodes]

        assert sent == [[retry.pk]] + [[]] * 5
        assert messages_in("default") == 1
        assert PluginRun.objects.get(pk=retry.pk).status == RunStatus.QUEUED

    def test_a_send_left_waiting_a_stale_limit__sent_again(self, broker, make_plugin, settings):
        """A retry still queued one stale limit after its send (its message lost with a
        broker that kept nothing) is sent again."""
        make_plugin("ocr", **RETRIED)
        retry = due_retry("ocr")
        first = node("a", "default")
        assert first.dispatch_due_retries() == [retry.pk]
        long_ago = timezone.now() - timedelta(seconds=settings.PORTAL_RUN_STALE_AFTER_S + 1)
        PluginRun.objects.filter(pk=retry.pk).update(dispatched_at=long_ago)

        assert node("b", "default").dispatch_due_retries() == [retry.pk]
        assert messages_in("default") == 2

    def test_many_due_retries_of_an_unserved_queue__the_nodes_own_still_sent(
        self, broker, make_plugin
    ):
        """150 due retries wait for a GPU node that is not there: a default node still finds
        and sends the one due retry of its own queue."""
        make_plugin("vision", requirements={"gpu": True}, **RETRIED)
        make_plugin("ocr", **RETRIED)
        stuck = due_retry("vision")
        PluginRun.objects.bulk_create(
            PluginRun(
                plugin=stuck.plugin,
                params={},
                actor="test",
                attempt=2,
                retry_of=stuck.retry_of,
                not_before=stuck.not_before,
            )
            for _ in range(149)
        )
        mine = due_retry("ocr")

        assert node("cpu-1", "default").dispatch_due_retries() == [mine.pk]
        assert messages_in("default") == 1

    def test_broker_down_at_the_send__the_retry_waits_for_the_next_beat(
        self, broker, make_plugin, settings
    ):
        """The broker refuses the send: the retry stays queued with its next retry shown, and
        the next heartbeat with the broker back sends it."""
        make_plugin("ocr", **RETRIED)
        retry = due_retry("ocr")
        cpu = node("cpu-1", "default")

        use_broker(settings, NOBODY_LISTENS)
        assert cpu.dispatch_due_retries() == []
        waiting = PluginRun.objects.get(pk=retry.pk)
        assert (waiting.status, waiting.dispatched_at) == (RunStatus.QUEUED, None)
        assert Plugin.objects.get(name="ocr").next_retry_at is not None

        use_broker(settings, broker)
        assert cpu.dispatch_due_retries() == [retry.pk]
        assert messages_in("default") == 1
