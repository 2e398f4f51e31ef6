"""A private PostgreSQL cluster and a gunicorn portal on it, for outage tests and benchmarks.

The cluster is PostgreSQL's own (initdb, pg_ctl from /usr/lib/postgresql/<version>/bin), run as
the `postgres` user in a directory of its own on a free port, so it can be paused (SIGSTOP of
the postmaster and every backend: a hung server whose kernel still ACKs), stopped and resumed
without touching the machine's shared server. Used by tests/integration/test_real_outage.py and
benchmarks/api_outages.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def postgres_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not versions:
        raise RuntimeError(
            "PostgreSQL's server binaries are not installed (/usr/lib/postgresql/<version>/bin): "
            "apt-get install postgresql"
        )
    return versions[-1].parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def as_postgres(*command: str, **kwargs: Any) -> subprocess.CompletedProcess:
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run([*prefix, *command], check=True, capture_output=True, **kwargs)


class PrivateCluster:
    """One PostgreSQL cluster of our own: start, pause, resume, stop, remove."""

    def __init__(self) -> None:
        self.bin = postgres_bin()
        # Under /tmp itself: pytest's directories are root-only, and postgres must enter this one.
        self.root = Path(tempfile.mkdtemp(prefix="portal-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        as_postgres(
            str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "--no-sync", "-E", "UTF8",
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/portal"

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options,
            "-l", str(self.root / "server.log"), "-w", "-t", "60", "start",
        )  # fmt: skip

    def create_database(self, name: str = "portal") -> None:
        as_postgres(
            str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), name
        )  # fmt: skip

    def stop(self) -> None:
        as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"
        )  # fmt: skip

    def _processes(self) -> list[int]:
        import psutil

        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        postmaster = psutil.Process(pid)
        return [pid, *(child.pid for child in postmaster.children(recursive=True))]

    def pause(self) -> None:
        """SIGSTOP the postmaster and its children: connections stay open, nothing answers."""
        for pid in self._processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self._processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            self.resume()
        with contextlib.suppress(subprocess.CalledProcessError, FileNotFoundError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def portal_env(database_url: str, var_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of portal processes on the private cluster (CONN_MAX_AGE=60 as advised)."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "CONN_MAX_AGE": "60",
        "SECRET_KEY": "private-cluster-key-" + "x" * 40,
        "PORTAL_VAR_DIR": str(var_dir),
        "PORTAL_RUN_EXECUTOR": "inline",
        "PORTAL_BENCHMARK_VIEWS": "1",
        **extra,
    }


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True
    )


def seed_plugins(env: dict[str, str], names: list[str], *, failed: list[str]) -> None:
    """Register plugins through the services (some FAILED) in a portal process of their own."""
    code = (
        "from plugins_app import services\n"
        "from plugins_app.models import SourceKind\n"
        "from plugins_app.sources import PluginSource\n"
        f"for name in {names!r}:\n"
        "    source = PluginSource(location=f'/plugins/{name}.py', kind=SourceKind.FILE)\n"
        "    meta = services.PluginMetadata(source=source)\n"
        "    services.plugin_register(name=name, metadata=meta, actor='seed')\n"
        "    services.plugin_mark_initialized(name=name, actor='seed')\n"
        f"for name in {failed!r}:\n"
        "    services.plugin_mark_failed(\n"
        "        name=name, reason='Seeded as failed: rerun it', actor='seed'\n"
        "    )\n"
    )
    manage(env, "shell", "-c", code)


class Gunicorn:
    """gunicorn serving portal.wsgi with N workers on a socket bound before it starts."""

    def __init__(
        self,
        env: dict[str, str],
        log: Path,
        *,
        workers: int = 2,
        threads: int = 4,
        graceful_timeout_s: int = 5,
    ):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.set_inheritable(True)
        self.log = log
        self.base = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        with open(log, "ab") as output:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "gunicorn", "portal.wsgi",
                    "--bind", f"fd://{self.listener.fileno()}",
                    "--workers", str(workers), "--threads", str(threads),
                    "--graceful-timeout", str(graceful_timeout_s), "--timeout", "60",
                    "--no-control-socket",
                ],
                cwd=ROOT, env=env, pass_fds=[self.listener.fileno()],
                stdout=output, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def workers(self) -> list[int]:
        import psutil

        return [child.pid for child in psutil.Process(self.process.pid).children()]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.listener.close()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def get(url: str, timeout: float = 30.0) -> tuple[int, dict[str, str], Any, float]:
    """GET: status, headers, the JSON body (or text), and the seconds it took."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, headers, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, headers, raw = error.code, dict(error.headers), error.read()
    took = time.monotonic() - started
    try:
        body: Any = json.loads(raw)
    except ValueError:
        body = raw.decode(errors="replace")
    return status, headers, body, took


def wait_until(predicate, *, timeout: float, what: str) -> None:
    """Poll another process's state (a server, a cluster) until true; it has no event to await."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if predicate():
                return
        time.sleep(0.1)
    raise TimeoutError(f"Not true within {timeout:g} s: {what}")
