"""Real RabbitMQ vhosts and real worker node processes (`manage.py runworker`) for the tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.db import connection

from plugins_app.models import PluginRun, Worker
from tests.concurrency_support import database_url

ROOT = Path(__file__).resolve().parents[1]
HEARTBEAT_S = 0.5
STALE_AFTER_S = 3.0


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@contextmanager
def broker_vhost() -> Iterator[str]:
    """A RabbitMQ vhost of this test run's own (guest may use it); its broker URL."""
    name = f"portal-test-{uuid.uuid4().hex[:12]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@127.0.0.1:5672/{name}"
    finally:
        rabbitmqctl("delete_vhost", name)


def node_env(broker_url: str, plugin_dir: Path, var_dir: Path) -> dict[str, str]:
    """The environment of a worker node process of the test run: its database and broker."""
    inherited = {key: value for key, value in os.environ.items() if key != "CONN_MAX_AGE"}
    return {
        **inherited,  # less CONN_MAX_AGE: the nodes keep their connections as by default
        "DATABASE_URL": database_url(connection.settings_dict),
        "PORTAL_BROKER_URL": broker_url,
        "PORTAL_RUN_EXECUTOR": "celery",
        "PORTAL_PLUGIN_DIRS": str(plugin_dir),
        "PORTAL_VAR_DIR": str(var_dir),
        "PORTAL_RUN_HEARTBEAT_S": str(HEARTBEAT_S),
        "PORTAL_RUN_STALE_AFTER_S": str(STALE_AFTER_S),
    }


class NodeProcess:
    """One `manage.py runworker` process; its output goes to a file for the failure message."""

    def __init__(
        self, name: str, queues: str, env: dict[str, str], log_dir: Path, concurrency: int = 2
    ) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        argv = ["runworker", "--name", name, "--queues", queues, "--concurrency", str(concurrency)]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", *argv],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until Celery says the node consumes (its banner's 'ready' line)."""
        wait_until(lambda: " ready." in self.output, timeout_s, f"worker {self.name} ready")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout_s)


def wait_until(condition, timeout_s: float, what: str) -> None:
    """Poll `condition` (a database or a log the test cannot subscribe to) until it holds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.05)


def process_tree(pid: int) -> list[str]:
    """The command lines of `pid`'s descendants, from /proc."""
    found, stack = [], [pid]
    while stack:
        for task in Path(f"/proc/{stack.pop()}/task").glob("*"):
            with contextlib.suppress(OSError):
                for child in (task / "children").read_text().split():
                    stack.append(int(child))
                    raw = Path(f"/proc/{child}/cmdline").read_bytes()
                    found.append(raw.replace(b"\0", b" ").decode(errors="replace"))
    return found


def run_status(run_id: int) -> str:
    return PluginRun.objects.get(pk=run_id).status


def worker_row(name: str) -> Worker | None:
    return Worker.objects.filter(name=name).first()
