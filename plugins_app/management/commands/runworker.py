"""Start a worker node of the celery executor: it runs the plugins of its queues."""

from __future__ import annotations

import os
import socket

from django.core.management.base import CommandError
from django.db import connections

from plugins_app.fleet.celery_app import celery_app, portal_queue
from plugins_app.fleet.node import WorkerNode, keep_database_connections
from plugins_app.fleet.queues import is_queue_name
from plugins_app.management.arguments import PortalCommand

NAME_CHARS = 100


def parse_queues(value: str) -> list[str]:
    queues = [queue.strip() for queue in value.split(",") if queue.strip()]
    bad = [queue for queue in queues if not is_queue_name(queue)]
    if not queues or bad:
        given = ", ".join(map(repr, bad)) or repr(value)
        raise CommandError(
            f"--queues {given} is not a list of queue names: give lowercase names of letters, "
            "digits, '.', '_' or '-', separated by commas, such as --queues default,gpu",
            returncode=2,
        )
    return list(dict.fromkeys(queues))


class Command(PortalCommand):
    help = (
        "Run a worker node: take runs of the given queues from the broker (PORTAL_BROKER_URL) "
        "and execute them in this node's sandbox, with its warm plugin hosts. SIGTERM stops "
        "taking runs, finishes the ones in progress and hands the rest back to the queue. "
        "Exit code 2 for misuse."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--queues",
            default="default",
            metavar="Q1,Q2",
            help="Queues to consume, comma-separated (default: default).",
        )
        parser.add_argument(
            "--concurrency",
            type=int,
            default=2,
            metavar="N",
            help="Runs at once on this node (threads; each call is its own process). Default 2.",
        )
        parser.add_argument(
            "--name", metavar="NAME", help="This node's name (default: HOST-PID), unique."
        )

    def handle(self, *args, queues, concurrency, name, **options):
        queue_names = parse_queues(queues)
        if concurrency < 1:
            raise CommandError(f"--concurrency must be 1 or more, got {concurrency}", returncode=2)
        name = name if name is not None else f"{socket.gethostname()}-{os.getpid()}"
        if not name.strip() or len(name) > NAME_CHARS or "@" in name:
            raise CommandError(
                f"--name {name!r} cannot name a worker: give 1 to {NAME_CHARS} characters "
                "without '@', such as --name gpu-1",
                returncode=2,
            )
        import plugins_app.fleet.tasks  # noqa: F401  (registers the task with the app)

        # The settings every connection of this process is made from, pool threads' included.
        keep_database_connections(connections.settings["default"])
        node = WorkerNode(name=name, queues=queue_names, concurrency=concurrency)
        app = celery_app()
        app.conf.task_queues = [portal_queue(queue) for queue in queue_names]
        worker = app.Worker(
            hostname=f"{name}@{socket.gethostname()}",
            queues=queue_names,
            pool="threads",
            concurrency=concurrency,
            loglevel="INFO",
            without_gossip=True,
            without_mingle=True,
            optimization="fair",
        )
        node.start()
        self.stdout.write(
            f"Worker {name}: queues {', '.join(queue_names)}, concurrency {concurrency}"
        )
        try:
            worker.start()
        finally:
            node.stop()
        if worker.exitcode:
            raise CommandError(
                f"Worker {name} stopped with exit code {worker.exitcode}", returncode=1
            )
