"""Where queued runs execute, and the heartbeat that tells live runs from orphaned ones.

settings.PORTAL_RUN_EXECUTOR picks the executor: "thread" (default) runs queued runs on a
bounded thread pool in this process, so a request or an admin action never waits for a
plugin; "inline" runs them synchronously inside submit (tests, scripts).

Every run in progress in this process is registered with the heartbeat, a daemon thread
that refreshes the runs' heartbeat_at every PORTAL_RUN_HEARTBEAT_S seconds and sweeps the
database for runs whose heartbeat went stale (their process was killed), finishing them as
INTERRUPTED through the services, and for runs queued by a process that died before starting
them, which it adopts (a thread executor in this process runs them), and for retries whose
backoff is over, which it starts (plugins_app.services.retries: the table is the schedule, so a
restart loses none; a timer per retry queued here only saves waiting for the next tick).

A web process starts the thread executor and its heartbeat at its start (start_in_background,
from plugins_app.background), so all of that happens though nobody uses the process; at
SIGTERM it stops starting runs (stop_starting_runs, from gunicorn's hooks) and hands the rest
back: they stay QUEUED until a live process adopts them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.utils import timezone

from plugins_app import services
from plugins_app.models import PluginRun, RunStatus
from plugins_app.services import retries

logger = logging.getLogger(__name__)

EXECUTORS = ("thread", "inline", "celery")

_node_name = ""  # a worker node's name (manage.py runworker --name), recorded on its runs


def set_node_name(name: str) -> None:
    global _node_name
    _node_name = name


def runs_elsewhere() -> bool:
    """Plugin work goes to worker nodes (the celery executor), unless this process is one."""
    return settings.PORTAL_RUN_EXECUTOR == "celery" and not _node_name


def worker_id() -> str:
    """host:pid of this process (after a fork too), after the worker node's name if any."""
    where = f"{socket.gethostname()}:{os.getpid()}"
    return f"{_node_name} ({where})" if _node_name else where


def reconcile_interrupted(*, actor: str = services.SYSTEM_ACTOR) -> list[PluginRun]:
    """Finish runs whose process stopped heartbeating as INTERRUPTED, each counted once."""
    stale_after = timedelta(seconds=settings.PORTAL_RUN_STALE_AFTER_S)
    runs = services.runs_reconcile_interrupted(stale_after=stale_after, actor=actor)
    for run in runs:
        logger.warning("%s", run.reason)
    return runs


_last_sweep = float("-inf")  # time.monotonic() of this process's last sweep_if_due()
_sweep_lock = threading.Lock()


def sweep_if_due() -> None:
    """Reconcile interrupted runs at most once per PORTAL_RUN_HEARTBEAT_S (request paths).

    After a restart nothing else may sweep until a run is submitted; pages that show runs or
    plugins call this so orphaned runs stop showing as RUNNING. A failing sweep is logged.
    """
    global _last_sweep
    now = time.monotonic()
    with _sweep_lock:
        if now - _last_sweep < settings.PORTAL_RUN_HEARTBEAT_S:
            return
        _last_sweep = now
    try:
        reconcile_interrupted()
    except Exception:
        logger.exception("Reconciling interrupted runs failed; the next request retries")


class Heartbeat:
    """Keeps the heartbeat of this process's runs fresh and sweeps for interrupted ones."""

    def __init__(self) -> None:
        self._runs: set[int] = set()
        self._sweeps: list[Callable[[], object]] = []  # more work for each tick
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @contextmanager
    def tracking(self, run_id: int) -> Iterator[None]:
        """Heartbeat `run_id` while the block runs."""
        with self._lock:
            self._runs.add(run_id)
        self.start()
        try:
            yield
        finally:
            with self._lock:
                self._runs.discard(run_id)

    def add_sweep(self, sweep: Callable[[], object]) -> None:
        with self._lock:
            self._sweeps.append(sweep)

    def remove_sweep(self, sweep: Callable[[], object]) -> None:
        with self._lock:
            if sweep in self._sweeps:
                self._sweeps.remove(sweep)

    @property
    def run_ids(self) -> list[int]:
        with self._lock:
            return sorted(self._runs)

    def start(self, *, beat_first: bool = False) -> None:
        """Start the thread if it is not running; `beat_first`: its first tick at once."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._loop,
                args=(self._stop, beat_first),
                name="portal-run-heartbeat",
                daemon=True,
            )
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def beat(self) -> None:
        """One tick: refresh this process's runs, then take care of other processes' orphans."""
        run_ids = self.run_ids
        if run_ids:
            services.run_heartbeat(run_ids=run_ids)
        reconcile_interrupted()
        with self._lock:
            sweeps = list(self._sweeps)
        for sweep in sweeps:
            sweep()

    def _loop(self, stop: threading.Event, beat_first: bool) -> None:
        failed_ticks = 0  # in a row: an outage is logged when it starts and when it ends
        while beat_first or not stop.wait(settings.PORTAL_RUN_HEARTBEAT_S):
            beat_first = False
            try:
                self.beat()
            except Exception:
                # The database may be down for a while; the next tick tries again.
                if not failed_ticks:
                    logger.exception("Run heartbeat failed; retrying at each tick")
                failed_ticks += 1
                connection.close()
            else:
                if failed_ticks:
                    logger.warning("Run heartbeat works again after %d failed ticks", failed_ticks)
                failed_ticks = 0
                # Kept for the next tick within CONN_MAX_AGE (a node's default), else closed.
                connection.close_if_unusable_or_obsolete()
        connection.close()


Job = Callable[[int], Any]  # what an executor does with a run id: start, call, record
RETRY_TIMER_SLACK_S = 0.05  # a timer firing a hair early would find the retry not due yet


class InlineExecutor:
    kind = "inline"

    def __init__(self, job: Job) -> None:
        self.job = job

    def submit(self, run_id: int) -> None:
        self.job(run_id)

    def shutdown(self, *, wait: bool = True) -> None:
        pass


class ThreadExecutor:
    """A bounded pool of portal threads; work starts once the caller's transaction commits."""

    kind = "thread"

    def __init__(self, workers: int, job: Job) -> None:
        self.job = job
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="portal-run")
        self._pending: set[int] = set()  # queued here, not started yet
        self._stopped = False
        self._draining = False  # set at SIGTERM: runs not started stay QUEUED for others
        self._lock = threading.Lock()

    def stop_starting(self) -> None:
        """Start no more runs: those queued here stay QUEUED in the database, for a live
        process to adopt once they are older than the stale limit; running ones go on.

        Only a flag is set, so a signal handler may call it whatever the thread it interrupts.
        """
        self._draining = True

    def submit(self, run_id: int) -> None:
        if self._draining:
            return  # the run stays QUEUED: a live process adopts it
        with self._lock:
            self._pending.add(run_id)
        # A worker thread has its own connection: it can only see the run once committed.
        transaction.on_commit(lambda: self._start_soon(run_id))

    def _start_soon(self, run_id: int) -> None:
        try:
            self._pool.submit(self._work, run_id)
        except RuntimeError:  # the pool is shut, or the interpreter is exiting
            with self._lock:
                self._pending.discard(run_id)
            logger.info("Run %s stays queued: this process is stopping", run_id)

    def adopt_orphaned_queued_runs(self) -> list[int]:
        """Queue here the runs that waited longer than the stale threshold in no live queue.

        A run queued by a process that died before starting it would wait forever. Adopting
        one that another process is about to start is harmless: run_start lets only one win.
        """
        if self._draining:
            return []
        now = timezone.now()
        cutoff = now - timedelta(seconds=settings.PORTAL_RUN_STALE_AFTER_S)
        waiting = PluginRun.objects.filter(
            retries.not_waiting(now), status=RunStatus.QUEUED, queued_at__lt=cutoff
        )
        with self._lock:
            orphans = [pk for pk in waiting.values_list("pk", flat=True) if pk not in self._pending]
        for run_id in orphans:
            logger.warning("Adopting run %s: it was queued by a process that stopped", run_id)
            self.submit(run_id)
        return orphans

    def dispatch_due_retries(self) -> list[int]:
        """Queue here the retries whose backoff is over (another process may start one first:
        run_start lets only one win)."""
        if self._draining:
            return []
        due = retries.due_run_ids(now=timezone.now())
        with self._lock:
            due = [pk for pk in due if pk not in self._pending]
        for run_id in due:
            self.submit(run_id)
        return due

    def wake(self, run_id: int, not_before: datetime) -> None:
        """Start a retry queued in this process when its backoff ends, not at the next tick."""
        delay = (not_before - timezone.now()).total_seconds() + RETRY_TIMER_SLACK_S
        timer = threading.Timer(max(0.0, delay), self._submit_if_due, args=(run_id,))
        timer.daemon = True
        timer.start()

    def _submit_if_due(self, run_id: int) -> None:
        try:
            if self._stopped:  # stopped meanwhile: the sweep of a live executor starts it
                return
            self.submit(run_id)
        except Exception:
            logger.exception("Starting retry run %s failed; the next sweep starts it", run_id)

    def _work(self, run_id: int) -> None:
        with self._lock:
            self._pending.discard(run_id)
        if self._draining:
            return  # handed back: still QUEUED in the database
        try:
            self.job(run_id)
        except Exception:
            logger.exception("Background run %s failed in the portal (not in the plugin)", run_id)
        finally:
            connection.close()

    def shutdown(self, *, wait: bool = True) -> None:
        self._stopped = True
        self._pool.shutdown(wait=wait, cancel_futures=not wait)


class Executor(Protocol):
    kind: str

    def submit(self, run_id: int) -> None: ...

    def shutdown(self, *, wait: bool = True) -> None: ...


_heartbeat = Heartbeat()
_executor: Executor | None = None
_executor_lock = threading.Lock()


def heartbeat() -> Heartbeat:
    return _heartbeat


def get_executor(job: Job, *, sweep_here: bool = True) -> Executor:
    """The executor settings.PORTAL_RUN_EXECUTOR names, doing ``job`` with each run id it is
    given, started on first use.

    A thread executor's start sweeps (reconciles, adopts orphans, starts due retries) in the
    caller's thread, or with ``sweep_here`` False in the heartbeat thread at once, so a
    process start never waits for the database (start_in_background).
    """
    global _executor
    kind = settings.PORTAL_RUN_EXECUTOR
    with _executor_lock:
        if _executor is not None and _executor.kind == kind:
            return _executor
        if _executor is not None:
            _stop(_executor, wait=False)
        _executor = _start(kind, job, sweep_here=sweep_here)
        return _executor


def start_in_background(job: Job) -> None:
    """A web process's start: the thread executor with its heartbeat, whose first tick, at
    once, finishes runs of dead processes, adopts their queued runs and starts due retries."""
    if settings.PORTAL_RUN_EXECUTOR == "thread":
        get_executor(job, sweep_here=False)


_stopping = False  # set at SIGTERM: an executor made after it starts no run either


def stop_starting_runs() -> None:
    """SIGTERM: the thread executor starts no more runs (see ThreadExecutor.stop_starting),
    nor does one made later in this process (a schedule firing as it exits)."""
    global _stopping
    _stopping = True
    executor = _executor  # no lock: a signal handler may interrupt the thread that holds it
    if isinstance(executor, ThreadExecutor):
        executor.stop_starting()


def _start(kind: str, job: Job, *, sweep_here: bool = True) -> Executor:
    if kind == "inline":
        return InlineExecutor(job)
    if kind == "celery":
        # Worker nodes execute, heartbeat and reconcile; this process only sends run ids.
        from plugins_app.fleet.executor import CeleryExecutor

        return CeleryExecutor()
    if kind != "thread":
        raise ImproperlyConfigured(
            f"PORTAL_RUN_EXECUTOR is {kind!r}; use one of: {', '.join(EXECUTORS)}"
        )
    executor = ThreadExecutor(settings.PORTAL_RUN_WORKERS, job)
    if _stopping:
        executor.stop_starting()
    # First use in this process: finish runs orphaned by a process that died, then keep
    # sweeping from the heartbeat thread. Never from AppConfig.ready(), which must not query.
    if sweep_here:
        try:
            reconcile_interrupted()
            executor.adopt_orphaned_queued_runs()
            executor.dispatch_due_retries()
        except Exception:
            logger.exception("Reconciling interrupted runs failed; the heartbeat will retry")
    _heartbeat.add_sweep(executor.adopt_orphaned_queued_runs)
    _heartbeat.add_sweep(executor.dispatch_due_retries)
    retries.add_waker(executor.wake)
    _heartbeat.start(beat_first=not sweep_here)
    return executor


def _stop(executor: Executor, *, wait: bool) -> None:
    if isinstance(executor, ThreadExecutor):
        _heartbeat.remove_sweep(executor.adopt_orphaned_queued_runs)
        _heartbeat.remove_sweep(executor.dispatch_due_retries)
        retries.remove_waker(executor.wake)
    executor.shutdown(wait=wait)


def shutdown_executor(*, wait: bool = True) -> None:
    """Stop the executor and the heartbeat (tests, process exit)."""
    global _executor
    with _executor_lock:
        executor, _executor = _executor, None
    if executor is not None:
        _stop(executor, wait=wait)
    _heartbeat.stop()
