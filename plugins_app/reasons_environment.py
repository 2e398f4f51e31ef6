"""The reasons about a plugin's Python environment and its memory: what failed, why, what to
do next.

Kept beside plugins_app/reasons.py (the other builders) under the same rules: keyword-only
arguments, `plugin=` first, an actionable sentence each (tests/plugins_app/test_reasons.py walks
every reasons module).
"""

from __future__ import annotations


def python_environment_unknown(*, plugin: str, environment: str, known: str) -> str:
    return (
        f"Plugin '{plugin}' declares python = '{environment}', an environment that "
        f"PORTAL_PLUGIN_ENVIRONMENTS does not name (it names: {known or 'none'}); add "
        f"{environment}=/path/to/its/bin/python to PORTAL_PLUGIN_ENVIRONMENTS, or fix the "
        "declaration, then reload the plugin"
    )


def python_declaration_invalid(*, plugin: str, problem: str) -> str:
    return f"Plugin '{plugin}' has an invalid python declaration: {problem}; fix it and reload"


def python_interpreter_unusable(
    *, plugin: str, path: str, problem: str, version: str, detail: str
) -> str:
    why = {
        "missing": "does not exist",
        "not_executable": "is not an executable file",
        "too_old": f"is Python {version}, older than the 3.11 the sandbox needs",
        "not_cpython": f"is not CPython ({detail})",
    }.get(problem, f"does not run ({detail})")
    return (
        f"The Python interpreter {path} that plugin '{plugin}' runs with {why}; create it "
        "(e.g. python3.11 -m venv <dir>, then <dir>/bin/pip install the plugin's requirements) "
        "or point the plugin's python declaration (or PORTAL_PLUGIN_ENVIRONMENTS) at a "
        "CPython 3.11+ interpreter, then reload the plugin"
    )


def run_out_of_address_space(*, plugin: str, address_space_mb: int | None) -> str:
    limit = f"{address_space_mb} MB " if address_space_mb else ""
    return (
        f"Plugin '{plugin}' ran out of its {limit}address-space limit "
        "(limits.address_space_mb) and was stopped (raise it, or drop it and limit resident "
        "memory with limits.memory_mb: libraries such as torch and CUDA reserve far more "
        "address space than they use)"
    )


def run_resident_crash_loop(*, plugin: str, detail: str) -> str:
    return (
        f"Plugin '{plugin}' is in a crash loop, so its resident process is not restarted "
        f"(resident['max_restarts'] reached): {detail}; fix the crash its earlier runs show "
        "(their outcome and stderr), then reload the plugin to restart it at once"
    )


def fork_after_cuda(*, plugin: str) -> str:
    return (
        f"Plugin '{plugin}' initialised CUDA in its import or setup(), and its calls run in "
        "processes forked after that, which cannot use CUDA; declare mode = 'resident' in the "
        "plugin (or touch CUDA only inside run()), then reload the plugin"
    )
