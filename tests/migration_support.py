"""Migration tests: the schema and models as they were at a migration, then back to the latest."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.apps.registry import Apps
from django.db import connection
from django.db.migrations.executor import MigrationExecutor


def migrate_to(target: tuple[str, str]) -> Apps:
    """Migrate plugins_app to `target` and return the models as they were there."""
    executor = MigrationExecutor(connection)
    executor.migrate([target])
    executor.loader.build_graph()
    return executor.loader.project_state([target]).apps


@contextmanager
def migrated_back_to(target: tuple[str, str]) -> Iterator[Apps]:
    """The models at `target` for the block, with every migration applied again afterwards."""
    apps = migrate_to(target)
    try:
        yield apps
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
