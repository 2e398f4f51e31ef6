"""Admin scale benchmark: every operator page under 500 ms with 10,000 plugins and 1M runs.

Seeds its own SQLite file (bulk_create in batches, time-ordered like real history), logs in
with Django's test client, times each admin page several times and prints p50/max per page
with PASS/FAIL (on the median) against the target. For scale, the same pages are timed once
on a stock Django admin over the same database (full COUNT(*), stock paginator and
date_hierarchy, related-field filters): the baseline the portal's admin is measured against.

    .venv/bin/python benchmarks/admin_bench.py                 # seed once (reused), then time
    .venv/bin/python benchmarks/admin_bench.py --reseed        # rebuild the database
    .venv/bin/python benchmarks/admin_bench.py --plugins 1000 --runs 100000 --events 30000

Exit code 0 when every page passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_MS = 500.0
SEED_VERSION = 1  # bump when the shape of the seeded data changes
BATCH = 5000

FAILURES = [
    (
        "ValueError",
        "Plugin '{name}' raised ValueError in run(): page 3 has no text layer "
        "(check the input file, then rerun)",
    ),
    (
        "TimeoutError",
        "Plugin '{name}' timed out after 30 s (raise limits.timeout_s or make the "
        "input smaller, then rerun)",
    ),
    (
        "Crashed",
        "Plugin '{name}' crashed with signal SIGSEGV in a native library "
        "(update the library or report it to the plugin's author, then rerun)",
    ),
    (
        "MemoryError",
        "Plugin '{name}' exceeded its memory limit of 1024 MiB "
        "(raise limits.memory_mb or process a smaller input, then rerun)",
    ),
]
UNAVAILABLE_REASON = (
    "Missing Python module 'torch' required by plugin '{name}' (install with: pip install torch)"
)
TRACEBACK = (
    'Traceback (most recent call last):\n  File "plugin.py", line 3, in run\nValueError: boom'
)
RUN_STATUSES = (
    # (status, outcome, share in percent)
    ("succeeded", "ok", 90),
    ("failed", "error", 6),
    ("timed_out", "timeout", 2),
    ("crashed", "crashed", 1),
    ("interrupted", "interrupted", 1),
)


def setup_django(db_path: Path) -> None:
    os.environ["DATABASE_URL"] = f"sqlite:///{db_path}"
    os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings"
    os.environ.setdefault("PORTAL_VAR_DIR", str(db_path.parent))
    import django

    django.setup()


# --------------------------------------------------------------------------- seeding


def plugin_rows(count: int, now):
    from plugins_app.models import Plugin

    rng = random.Random(1)
    for i in range(count):
        name = f"plugin-{i:05d}"
        slot = i % 100
        state, reason, since = "INITIALIZED", "", now - timedelta(hours=rng.randint(1, 2000))
        if slot < 5:
            _, text = FAILURES[i % len(FAILURES)]
            state, reason, since = "FAILED", text.format(name=name), None
        elif slot < 8:
            state, reason, since = "UNAVAILABLE", UNAVAILABLE_REASON.format(name=name), None
        elif slot < 10:
            state = "RUNNING"
        elif slot < 15:
            state = "LOADED"
        disabled = i % 50 == 7
        success, errors = rng.randint(0, 5000), rng.randint(0, 300)
        yield Plugin(
            name=name,
            state=state,
            reason=reason,
            description=f"Benchmark plugin number {i}",
            version="1.0.0",
            source=f"/srv/plugins/{name}.py",
            enabled=not disabled,
            disabled_by="user:bench" if disabled else "",
            disabled_at=now if disabled else None,
            disabled_note="maintenance" if disabled else "",
            state_changed_at=now - timedelta(minutes=rng.randint(1, 10000)),
            available_since=since,
            running_count=1 if state == "RUNNING" else 0,
            success_count=success,
            error_count=errors,
            consecutive_failures=rng.randint(1, 9) if state == "FAILED" else 0,
            last_run_at=now - timedelta(minutes=rng.randint(1, 600)),
            last_duration_ms=rng.uniform(5, 900),
            avg_duration_ms=rng.uniform(5, 900),
        )


def time_ordered(count: int, now, days: float, rng: random.Random):
    """Timestamps over the last `days`, oldest first, denser towards now (like a growing fleet)."""
    ages = sorted((days * rng.random() ** 3 for _ in range(count)), reverse=True)
    return (now - timedelta(days=age) for age in ages)


def run_rows(count: int, plugin_ids: list[int], now):
    from plugins_app.models import PluginRun

    rng = random.Random(2)
    weights = [share for _, _, share in RUN_STATUSES]
    for queued_at in time_ordered(count, now, 400, rng):
        status, outcome, _ = rng.choices(RUN_STATUSES, weights)[0]
        plugin_id = rng.choice(plugin_ids)
        duration = rng.uniform(5, 2000)
        failed = status != "succeeded"
        error_type, reason = FAILURES[plugin_id % len(FAILURES)] if failed else ("", "")
        yield PluginRun(
            plugin_id=plugin_id,
            status=status,
            outcome=outcome,
            params={"page": rng.randint(1, 50)},
            result=None if failed else {"words": rng.randint(0, 900)},
            error_type=error_type,
            reason=reason.format(name=f"plugin-{plugin_id}"),
            traceback=TRACEBACK if failed else "",
            exit_code=-11 if status == "crashed" else None,
            signal="SIGSEGV" if status == "crashed" else "",
            peak_rss_kb=rng.randint(20_000, 900_000),
            duration_ms=duration,
            stdout_tail="processed\n",
            actor=rng.choice(("schedule", "api:etl", "user:ops")),
            worker="bench-host:4242",
            queued_at=queued_at,
            started_at=queued_at,
            finished_at=queued_at + timedelta(milliseconds=duration),
            heartbeat_at=queued_at,
        )


def event_rows(count: int, plugin_ids: list[int], now):
    from plugins_app.models import PluginEvent

    rng = random.Random(3)
    moves = [
        ("INITIALIZED", "RUNNING"),
        ("RUNNING", "INITIALIZED"),
        ("RUNNING", "FAILED"),
        ("FAILED", "RUNNING"),
        ("LOADED", "UNAVAILABLE"),
    ]
    for created_at in time_ordered(count, now, 400, rng):
        from_state, to_state = rng.choice(moves)
        plugin_id = rng.choice(plugin_ids)
        reason = ""
        if to_state == "FAILED":
            reason = FAILURES[0][1].format(name=f"plugin-{plugin_id}")
        elif to_state == "UNAVAILABLE":
            reason = UNAVAILABLE_REASON.format(name=f"plugin-{plugin_id}")
        yield PluginEvent(
            plugin_id=plugin_id,
            from_state=from_state,
            to_state=to_state,
            reason=reason,
            actor="system",
            created_at=created_at,
        )


def bulk_insert(model, rows, total: int, label: str) -> None:
    """bulk_create in transactions of BATCH rows, printing progress."""
    from django.db import transaction

    started, done, chunk = time.perf_counter(), 0, []
    for row in rows:
        chunk.append(row)
        if len(chunk) == BATCH:
            with transaction.atomic():
                model.objects.bulk_create(chunk)
            done += len(chunk)
            chunk = []
            if done % 100_000 == 0:
                rate = done / (time.perf_counter() - started)
                print(f"  {label}: {done:,}/{total:,} ({rate:,.0f} rows/s)", flush=True)
    if chunk:
        with transaction.atomic():
            model.objects.bulk_create(chunk)
    print(f"  {label}: {total:,} in {time.perf_counter() - started:.1f} s", flush=True)


def seed(plugins: int, runs: int, events: int) -> None:
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from plugins_app.models import Plugin, PluginEvent, PluginRun

    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA synchronous=OFF")  # a throwaway benchmark file: speed over safety
    now = timezone.now()
    print(f"Seeding {plugins:,} plugins, {runs:,} runs, {events:,} events ...", flush=True)
    bulk_insert(Plugin, plugin_rows(plugins, now), plugins, "plugins")
    ids = list(Plugin.objects.order_by("id").values_list("id", flat=True))
    bulk_insert(PluginRun, run_rows(runs, ids, now), runs, "runs")
    bulk_insert(PluginEvent, event_rows(events, ids, now), events, "events")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # give the planner real statistics, as a live database has


def ensure_seeded(db_path: Path, plugins: int, runs: int, events: int, reseed: bool) -> None:
    marker = db_path.with_suffix(".json")
    wanted = {"version": SEED_VERSION, "plugins": plugins, "runs": runs, "events": events}
    reusable = not reseed and db_path.exists() and marker.exists()
    if reusable and json.loads(marker.read_text()) == wanted:
        print(f"Reusing {db_path} ({plugins:,} plugins, {runs:,} runs, {events:,} events)")
        setup_django(db_path)
        return
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    marker.unlink(missing_ok=True)
    setup_django(db_path)
    started = time.perf_counter()
    seed(plugins, runs, events)
    print(f"Seeded in {time.perf_counter() - started:.0f} s")
    marker.write_text(json.dumps(wanted))


# --------------------------------------------------------------------------- pages


@dataclass(frozen=True)
class Page:
    label: str
    path: str
    stock_path: str | None  # the same view on the stock admin, or None when it has none


def pages() -> list[Page]:
    """The operator's pages, each with the query string an operator would use."""
    from django.utils import timezone

    from plugins_app.models import Plugin, PluginRun

    failed = Plugin.objects.filter(state="FAILED").order_by("name").first()
    busiest = failed.name if failed else "plugin-00000"
    run = PluginRun.objects.filter(status="crashed").order_by("-queued_at").first()
    today = timezone.localdate()
    year, month, day = today.year, today.month, today.day
    runs, events, plugins = (
        "plugins_app/pluginrun/",
        "plugins_app/pluginevent/",
        "plugins_app/plugin/",
    )
    both = [
        ("plugins: list (problems first)", plugins),
        ("plugins: failed", f"{plugins}?state__exact=FAILED"),
        ("plugins: search reason", f"{plugins}?q=torch"),
        ("plugin: detail page", f"{plugins}{failed.pk if failed else 1}/change/"),
        ("runs: list", runs),
        ("runs: last page", f"{runs}?p=10"),
        ("runs: status crashed", f"{runs}?status__exact=crashed"),
        ("runs: date year", f"{runs}?queued_at__year={year}"),
        ("runs: date month", f"{runs}?queued_at__year={year}&queued_at__month={month}"),
        (
            "runs: date day",
            f"{runs}?queued_at__year={year}&queued_at__month={month}&queued_at__day={day}",
        ),
        ("runs: search error", f"{runs}?q=SIGSEGV"),
        ("run: forensics page", f"{runs}{run.pk if run else 1}/change/"),
        ("events: list", events),
        ("events: date month", f"{events}?created_at__year={year}&created_at__month={month}"),
        ("events: search reason", f"{events}?q=torch"),
    ]
    ours_only = [
        ("admin index (fleet overview)", ""),
        ("plugins: needs attention", f"{plugins}?health=problems"),
        ("runs: sandbox outcome crashed", f"{runs}?outcome=crashed"),
        ("runs: one plugin", f"{runs}?plugin={busiest}"),
        ("events: one plugin", f"{events}?plugin={busiest}"),
    ]
    stock_only = {
        # The stock equivalents of the filters that need a custom one here.
        "runs: sandbox outcome crashed": f"{runs}?outcome__exact=crashed",
        "runs: one plugin": f"{runs}?plugin__id__exact={failed.pk if failed else 1}",
        "events: one plugin": f"{events}?plugin__id__exact={failed.pk if failed else 1}",
    }
    result = [Page(label, f"/admin/{path}", f"/stock-admin/{path}") for label, path in both]
    for label, path in ours_only:
        stock = stock_only.get(label)
        result.append(Page(label, f"/admin/{path}", f"/stock-admin/{stock}" if stock else None))
    return result


def stock_urlconf():
    """The portal's URLs plus a stock Django admin over the same models: the baseline."""
    from types import ModuleType

    from django.contrib import admin
    from django.urls import path

    from plugins_app.models import Plugin, PluginEvent, PluginRun
    from portal import urls as portal_urls

    stock = admin.AdminSite(name="stock")
    stock.register(
        Plugin,
        list_display=("name", "state", "reason", "success_count", "error_count", "enabled"),
        list_filter=("state", "enabled"),
        search_fields=("name", "reason"),
    )
    stock.register(
        PluginRun,
        list_display=("id", "plugin", "status", "outcome", "reason", "duration_ms", "queued_at"),
        list_filter=("status", "outcome", "plugin"),
        list_select_related=("plugin",),
        date_hierarchy="queued_at",
        search_fields=("reason", "error_type"),
    )
    stock.register(
        PluginEvent,
        list_display=("created_at", "plugin", "kind", "from_state", "to_state", "reason"),
        list_filter=("kind", "to_state", "plugin"),
        list_select_related=("plugin",),
        date_hierarchy="created_at",
        search_fields=("reason", "actor"),
    )
    urlconf = ModuleType("admin_bench_urls")  # Django accepts a module object as ROOT_URLCONF
    urlconf.urlpatterns = [path("stock-admin/", stock.urls), *portal_urls.urlpatterns]
    return urlconf


def login():
    from django.contrib.auth import get_user_model
    from django.test import Client

    users = get_user_model()
    user = users.objects.filter(username="bench").first()
    if user is None:
        user = users.objects.create_superuser(username="bench", email="", password=None)
    client = Client()
    client.force_login(user)
    return client


def timed_get(client, path: str) -> float:
    started = time.perf_counter()
    response = client.get(path)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise SystemExit(f"GET {path} answered {response.status_code}, not 200")
    return elapsed


def measure(repeat: int, stock: bool) -> bool:
    from django.test.utils import override_settings, setup_test_environment

    setup_test_environment()  # lets the test client run outside a test runner
    client = login()
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"\nMachine: {os.cpu_count()} cores, load average {load} (1, 5, 15 min) before timing.")
    print(f"Each page: 1 warm-up, then {repeat} timed GETs (test client, full middleware).")
    print(f"PASS when the median is under {TARGET_MS:.0f} ms; 'slow max' flags a slower outlier.")
    header = f"{'page':34} {'p50 ms':>8} {'max ms':>8} {'stock ms':>9} {'speed-up':>9}  result"
    print(header)
    print("-" * len(header))
    passed = True
    with override_settings(ROOT_URLCONF=stock_urlconf(), DEBUG=False):
        for page in pages():
            timed_get(client, page.path)
            times = [timed_get(client, page.path) for _ in range(repeat)]
            p50, worst = statistics.median(times), max(times)
            ok = p50 < TARGET_MS
            passed &= ok
            stock_cell, ratio_cell = "—", "—"
            if stock and page.stock_path:
                stock_ms = timed_get(client, page.stock_path)
                stock_cell, ratio_cell = f"{stock_ms:9.0f}", f"{stock_ms / p50:8.1f}x"
            verdict = "PASS" if ok else "FAIL"
            if worst >= TARGET_MS:
                verdict += " (slow max)"
            print(
                f"{page.label:34} {p50:8.1f} {worst:8.1f} {stock_cell:>9} {ratio_cell:>9}  "
                f"{verdict}",
                flush=True,
            )
    return passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", type=Path, default=ROOT / "var" / "admin_bench.sqlite3")
    parser.add_argument("--plugins", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=5, help="timed GETs per page")
    parser.add_argument("--reseed", action="store_true", help="rebuild the database")
    parser.add_argument("--no-stock", action="store_true", help="skip the stock-admin baseline")
    args = parser.parse_args(argv)
    args.db.parent.mkdir(parents=True, exist_ok=True)
    ensure_seeded(args.db.resolve(), args.plugins, args.runs, args.events, args.reseed)
    passed = measure(args.repeat, stock=not args.no_stock)
    verdict = "PASS" if passed else "FAIL"
    print(f"\n{verdict}: every page's median under {TARGET_MS:.0f} ms")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
