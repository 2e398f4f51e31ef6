"""Shared by the thread and process halves of the concurrency tests."""

from __future__ import annotations

from plugins_app import services
from plugins_app.models import RunStatus


def record_runs(names: list[str], runs: int, *, worker: str) -> None:
    for index in range(runs):
        for name in names:
            run = services.run_queue(name=name, params={"i": index}, actor=worker)
            services.run_start(run_id=run.pk, worker=worker)
            status = RunStatus.SUCCEEDED if index % 2 == 0 else RunStatus.FAILED
            reason = "" if status == RunStatus.SUCCEEDED else f"Odd run {index} fails on purpose"
            outcome = services.RunOutcome(status=status, reason=reason, duration_ms=1.0)
            services.run_finish(run_id=run.pk, outcome=outcome)


def database_url(settings_dict: dict) -> str:
    """The URL of the database the test run uses, for processes started by the test."""
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or ""
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{settings_dict['NAME']}"
