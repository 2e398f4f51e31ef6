"""Rerun plugins (the named ones, the FAILED ones, or all) with their last params."""

from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed

from django.core.management.base import CommandError
from django.db import connection

from plugins_app import pipeline, selectors
from plugins_app.errors import InvalidParams, PluginError, PluginNotFound
from plugins_app.management.arguments import PortalCommand
from plugins_app.models import Plugin, PluginState, RunStatus
from plugins_app.params_check import check_params
from plugins_app.storable import value_problem

ACTOR = "command:rerunplugins"
BAR_WIDTH = 30


def _rerun(name: str, params: dict) -> tuple[str, str, str]:
    """(name, status, reason) of one rerun, in a worker thread."""
    try:
        run = pipeline.run_plugin(name=name, params=params, actor=ACTOR)
        return name, run.status, run.reason
    except PluginError as exc:  # refused: disabled or UNAVAILABLE since it was selected
        return name, "refused", str(exc)
    finally:
        connection.close()


class Command(PortalCommand):
    help = (
        "Rerun plugins with the params of their last run: the named ones, --failed (those in "
        "FAILED) or --all (every enabled plugin that can run). Exit code 1 if any run failed; "
        "2 for misuse, or last params the plugin no longer accepts (nothing is rerun)."
    )

    def add_arguments(self, parser):
        parser.add_argument("names", nargs="*", metavar="NAME", help="Plugins to rerun.")
        parser.add_argument("--failed", action="store_true", help="Rerun every FAILED plugin.")
        parser.add_argument(
            "--all", action="store_true", dest="every", help="Rerun every runnable plugin."
        )
        parser.add_argument(
            "--concurrency", type=int, default=2, metavar="N", help="Runs at once (default 2)."
        )

    def handle(self, *args, names, failed, every, concurrency, **options):
        if concurrency < 1:
            raise CommandError(f"--concurrency must be 1 or more, got {concurrency}", returncode=2)
        plugins = self._select(names, failed=failed, every=every)
        if not plugins:
            self.stdout.write("Nothing to rerun: no plugin matches.")
            return
        jobs = [(p.name, selectors.plugin_last_run_params(name=p.name)) for p in plugins]
        self._check_params(jobs, {p.name: p for p in plugins})
        results = self._run_all(jobs, concurrency)
        self._summary(results)
        failures = sum(1 for _, status, _ in results if status != RunStatus.SUCCEEDED)
        if failures:
            raise CommandError(f"{failures} of {len(results)} rerun(s) failed", returncode=1)

    def _check_params(self, jobs: list[tuple[str, dict]], plugins: dict[str, Plugin]) -> None:
        """Stored params an older version let in (a NUL, a lone surrogate), and params the
        plugin's run() or params_schema no longer accept, are not rerun: exit 2 first."""
        for name, params in jobs:
            plugin = plugins[name]
            try:
                check_params(
                    name=name,
                    params=params,
                    run_params=plugin.run_params,
                    params_schema=plugin.params_schema,
                )
            except InvalidParams as exc:
                raise CommandError(
                    f"Cannot rerun '{name}' with its last params: {exc} (run it with new "
                    f"params: manage.py runplugin {name} --params-json '{{...}}')",
                    returncode=2,
                ) from None
            problem = value_problem(params, "params")
            if problem:
                raise CommandError(
                    f"Cannot rerun '{name}' with its last params, {problem}; nothing was rerun "
                    f"(run it with new params: manage.py runplugin {name} --params-json '{{...}}')",
                    returncode=2,
                )

    def _select(self, names, *, failed, every) -> list[Plugin]:
        if not (names or failed or every):
            raise CommandError("Name the plugins to rerun, or pass --failed or --all", returncode=2)
        chosen: dict[str, Plugin] = {}
        for name in names:
            try:
                chosen[name] = selectors.plugin_get(name=name)
            except PluginNotFound as exc:
                raise CommandError(
                    f"{exc} (list plugins with: pluginhealth)", returncode=2
                ) from None
        runnable = selectors.plugin_list(enabled=True).exclude(state=PluginState.UNAVAILABLE)
        if every:
            chosen.update((p.name, p) for p in runnable)
        elif failed:
            chosen.update((p.name, p) for p in runnable.filter(state=PluginState.FAILED))
        return sorted(chosen.values(), key=lambda plugin: plugin.name)

    def _run_all(self, jobs, concurrency) -> list[tuple[str, str, str]]:
        results = []
        self._progress(0, len(jobs))
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="rerun") as pool:
            futures = [pool.submit(_rerun, name, params) for name, params in jobs]
            for future in as_completed(futures):
                results.append(future.result())
                self._progress(len(results), len(jobs), results[-1])
        return results

    def _progress(self, done: int, total: int, last: tuple[str, str, str] | None = None) -> None:
        if self.stdout.isatty():
            filled = BAR_WIDTH * done // total
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            ending = "\n" if done == total else ""
            self.stdout.write(f"\r[{bar}] {done}/{total}", ending=ending)
            self.stdout.flush()
        elif last is not None:
            name, status, _ = last
            self.stdout.write(f"{done}/{total} {name}: {status}")

    def _summary(self, results) -> None:
        succeeded = Counter(name for name, status, _ in results if status == RunStatus.SUCCEEDED)
        failed = Counter(name for name, status, _ in results if status != RunStatus.SUCCEEDED)
        names = sorted({name for name, _, _ in results})
        width = max(len("PLUGIN"), *(len(name) for name in names))
        self.stdout.write(f"{'PLUGIN':<{width}}  SUCCEEDED  FAILED  LAST REASON")
        for name in names:
            reason = next((r for n, s, r in results if n == name and s != RunStatus.SUCCEEDED), "")
            line = f"{name:<{width}}  {succeeded[name]:<9}  {failed[name]:<6}  {reason}"
            self.stdout.write(line.rstrip())
        self.stdout.write(
            f"{len(results)} rerun(s): {sum(succeeded.values())} succeeded, "
            f"{sum(failed.values())} failed"
        )
