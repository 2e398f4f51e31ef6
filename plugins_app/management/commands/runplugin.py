"""Run one plugin now, through the sandbox, and print its result or why it failed."""

import json

from django.core.management.base import CommandError

from plugins_app import pipeline
from plugins_app.api.serializers import MAX_PARAM_DEPTH, RunSerializer, nesting_depth
from plugins_app.errors import InvalidParams, PluginNotFound, PluginRefused
from plugins_app.fleet.queues import unserved_reason
from plugins_app.management.arguments import PortalCommand
from plugins_app.models import PluginRun, RunStatus
from plugins_app.storable import value_problem

ACTOR = "command:runplugin"


def parse_params(pairs: list[str], params_json: str | None) -> dict:
    """--params-json first, then each --param KEY=VALUE over it (VALUE as JSON, else text).

    Refused with exit code 2, as the API refuses them with a 400: values nested too deeply,
    and NUL characters or lone surrogates anywhere (keys included).
    """
    params: dict = {}
    if params_json is not None:
        try:
            params = json.loads(params_json)
        except json.JSONDecodeError as exc:
            raise CommandError(f"--params-json is not valid JSON: {exc}", returncode=2) from None
        except RecursionError:
            raise too_deep("--params-json") from None
        if not isinstance(params, dict):
            raise CommandError(
                f"--params-json must be a JSON object such as '{{\"seconds\": 2}}', "
                f"not a {type(params).__name__}",
                returncode=2,
            )
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key:
            raise CommandError(f"--param expects KEY=VALUE, got {pair!r}", returncode=2)
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value  # plain text needs no JSON quotes on the command line
        except RecursionError:
            raise too_deep(f"--param {key}") from None
    if nesting_depth(params) > MAX_PARAM_DEPTH:
        raise too_deep("A parameter")
    problem = value_problem(params, "params")
    if problem:
        raise CommandError(f"Invalid params: {problem}; nothing was run.", returncode=2)
    return params


def too_deep(what: str) -> CommandError:
    return CommandError(
        f"{what} is nested deeper than the {MAX_PARAM_DEPTH} levels a run accepts (flatten it "
        "or pass it as a string)",
        returncode=2,
    )


def run_record(run: PluginRun) -> dict:
    """The run as GET /v1/runs/{id} shows it, with the plugin's output (an operator's shell)."""
    return dict(RunSerializer(run, context={"show_output": True}).data)


class Command(PortalCommand):
    help = (
        "Run a plugin synchronously through the sandbox and print its result, or the reason "
        "it failed; with the celery executor it runs on a worker node of the plugin's queue "
        "(--local: here). Exit code 0: succeeded; 1: the run failed or was refused; 2: misuse "
        "(unknown plugin, bad params, params that run() or the plugin's params_schema does not "
        "accept: nothing is run)."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", metavar="NAME", help="The plugin to run.")
        parser.add_argument(
            "--param",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="A parameter for run(); VALUE is read as JSON when it is (2, true, [1]), "
            "else as text. Repeatable.",
        )
        parser.add_argument(
            "--params-json", metavar="JSON", help="All parameters as one JSON object."
        )
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="Print the whole run record."
        )
        parser.add_argument(
            "--timeout", type=float, metavar="S", help="Wall-clock limit for this run, seconds."
        )
        parser.add_argument(
            "--local",
            action="store_true",
            help="With the celery executor: run it in this process's sandbox instead of on a "
            "worker node of its queue (debugging on one machine).",
        )

    def handle(self, *args, name, param, params_json, as_json, timeout, local, **options):
        params = parse_params(param, params_json)
        pipeline.reconcile_interrupted(actor=ACTOR)
        unserved = "" if local or not pipeline.runs_elsewhere() else unserved_reason(name)
        if unserved:
            self.stderr.write(f"{unserved}; waiting for it (Ctrl-C stops waiting).")
        try:
            run = pipeline.run_plugin(
                name=name, params=params, actor=ACTOR, timeout_s=timeout, local=local
            )
        except PluginNotFound as exc:
            raise CommandError(
                f"{exc} (list plugins with: manage.py pluginhealth; load new ones with: "
                "manage.py loadplugins)",
                returncode=2,
            ) from None
        except InvalidParams as exc:
            raise CommandError(str(exc), returncode=2) from None
        except PluginRefused as exc:
            raise CommandError(str(exc), returncode=1) from None
        if as_json:
            self.stdout.write(json.dumps(run_record(run), indent=2))
        elif run.status == RunStatus.SUCCEEDED:
            self.stdout.write(json.dumps(run.result, indent=2))
        if run.status != RunStatus.SUCCEEDED:
            raise CommandError(f"Run {run.pk} {run.status}: {run.reason}", returncode=1)
