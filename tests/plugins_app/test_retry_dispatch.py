"""Due retries are dispatched from the table: every dispatcher may try, one claim wins."""

from __future__ import annotations

import sys
import threading
import traceback
from datetime import timedelta

import pytest
from django.utils import timezone

from plugins_app import services
from plugins_app.errors import IllegalTransition
from plugins_app.executor import ThreadExecutor
from plugins_app.models import PluginRun, RunStatus
from plugins_app.services import retries

# Worker threads have their own connections: they see committed rows only.
pytestmark = pytest.mark.django_db(transaction=True)

# Longer than SQLite's busy timeout (30 s), so a claim stuck on a lock ends with its error.
CLAIM_WAIT_S = 45


def waiting_retry(name: str, *, due: bool) -> PluginRun:
    """A retry of a crashed run, its backoff over (due) or an hour away."""
    run = services.run_queue(name=name, params={}, actor="test")
    services.run_start(run_id=run.pk, worker="test:1")
    crashed = services.RunOutcome(
        status=RunStatus.CRASHED, outcome="crashed", reason="Run crashed in the test on purpose"
    )
    services.run_finish(run_id=run.pk, outcome=crashed)
    retry = PluginRun.objects.get(retry_of=run)
    shift = timedelta(seconds=-1 if due else 3600)
    PluginRun.objects.filter(pk=retry.pk).update(not_before=timezone.now() + shift)
    return retry


def retry_state(run_id: int) -> dict:
    """What a dispatcher reads of a retry, for a failure message."""
    return PluginRun.objects.values(
        "status", "not_before", "dispatched_at", "worker", "queued_at"
    ).get(pk=run_id)


class Claims:
    """An executor job that only claims the run, recording who won."""

    def __init__(self) -> None:
        self.won: list[int] = []
        self.lost: list[int] = []
        self.errors: list[str] = []
        self.done = threading.Semaphore(0)
        # Claims start once the test lets them: a claim that won before the second dispatcher
        # looked would leave it nothing due (a race of the test, seen on a loaded machine).
        self.go = threading.Event()

    def job(self, run_id: int) -> None:
        if not self.go.wait(CLAIM_WAIT_S):
            self.errors.append(f"run {run_id}: never let go")
            self.done.release()
            return
        try:
            services.run_start(run_id=run_id, worker="test:claim")
            self.won.append(run_id)
        except IllegalTransition:
            self.lost.append(run_id)
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            self.done.release()

    def wait(self, count: int) -> None:
        """Wait for `count` claims; on a timeout, fail with every thread's stack."""
        for _ in range(count):
            if not self.done.acquire(timeout=CLAIM_WAIT_S):
                frames = sys._current_frames().values()
                stacks = "\n".join("".join(traceback.format_stack(f)) for f in frames)
                pytest.fail(
                    f"A claim did not end in {CLAIM_WAIT_S} s (won {self.won}, lost {self.lost}, "
                    f"errors {self.errors}); threads:\n{stacks}"
                )
        assert self.errors == []


class TestDispatch:
    def test_due_retry__two_dispatchers_one_start(self, make_plugin):
        """Two executors dispatch the same due retry: exactly one claims it, the other no-ops."""
        make_plugin("ocr", retry={"max_attempts": 2, "backoff_s": 1}, quarantine_after=0)
        retry = waiting_retry("ocr", due=True)
        claims = Claims()
        executors = [ThreadExecutor(1, claims.job), ThreadExecutor(1, claims.job)]
        try:
            dispatched = [executor.dispatch_due_retries() for executor in executors]
            # Checked before waiting: a dispatcher that found nothing due sends no claim.
            assert dispatched == [[retry.pk], [retry.pk]], retry_state(retry.pk)
            claims.go.set()
            claims.wait(2)
        finally:
            claims.go.set()  # a failed check above lets the claims end, so the pools shut
            for executor in executors:
                executor.shutdown()
        assert (claims.won, claims.lost) == ([retry.pk], [retry.pk])
        assert PluginRun.objects.get(pk=retry.pk).status == RunStatus.RUNNING

    def test_retry_not_due__not_dispatched(self, make_plugin):
        """A retry still in its backoff is neither listed as due nor adopted as an orphan."""
        make_plugin("ocr", retry={"max_attempts": 2, "backoff_s": 1}, quarantine_after=0)
        retry = waiting_retry("ocr", due=False)
        PluginRun.objects.filter(pk=retry.pk).update(queued_at=timezone.now() - timedelta(hours=2))
        executor = ThreadExecutor(1, Claims().job)
        try:
            assert retries.due_run_ids(now=timezone.now()) == []
            assert executor.dispatch_due_retries() == []
            assert executor.adopt_orphaned_queued_runs() == []
        finally:
            executor.shutdown()

    def test_next_retry_at__follows_the_queue(self, make_plugin):
        """The plugin's next_retry_at is its earliest waiting retry, and clears once started."""
        make_plugin("ocr", retry={"max_attempts": 2, "backoff_s": 1}, quarantine_after=0)
        retry = waiting_retry("ocr", due=True)
        plugin = retry.plugin
        plugin.refresh_from_db()
        assert plugin.next_retry_at is not None
        services.run_start(run_id=retry.pk, worker="test:1")
        plugin.refresh_from_db()
        assert plugin.next_retry_at is None
