"""Where the sandbox's code lives: the zygote side stays import-light, the portal side apart."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import sandbox.zygote

ROOT = Path(__file__).resolve().parents[2]
# Each of these in the host makes every fork copy more pages (docs/sandbox.md, "Hosts").
HEAVY = frozenset(
    {
        "typing",
        "threading",
        "subprocess",
        "logging",
        "socket",
        "selectors",
        "dataclasses",
        "tempfile",
        "shutil",
        "traceback",
        "inspect",
    }
)
_PROBE = """
import importlib, json, sys
before = set(sys.modules)
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def modules_loaded_by(names: list[str]) -> list[str]:
    """The modules that importing ``names`` adds, in a fresh interpreter started as hosts are."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("COV")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-P", "-c", _PROBE, json.dumps(names)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


def zygote_modules() -> list[str]:
    path = sandbox.zygote.__path__
    return [f"sandbox.zygote.{info.name}" for info in pkgutil.iter_modules(path)]


class TestZygoteSide:
    def test_zygote_modules__load_only_light_standard_library_modules(self):
        """The host's code pulls in no third-party, portal-side or heavy standard module."""
        loaded = modules_loaded_by(zygote_modules())
        assert "sandbox.zygote.host" in loaded
        foreign = [
            name
            for name in loaded
            if name.split(".")[0] not in sys.stdlib_module_names
            and not (name == "sandbox" or name.startswith("sandbox.zygote"))
        ]
        assert foreign == []
        assert sorted(HEAVY & set(loaded)) == []

    def test_zygote_package__every_module_is_listed_in_its_docstring(self):
        """A reader of sandbox/zygote/__init__.py sees every file that must stay import-light."""
        doc = sandbox.zygote.__doc__ or ""
        missing = [name for name in zygote_modules() if f"{name.rsplit('.', 1)[1]}.py" not in doc]
        assert missing == []


class TestPortalSide:
    def test_public_value_types__import_no_process_machinery(self):
        """Limits, SandboxConfig, SandboxResult and Preload load without the portal machinery."""
        loaded = modules_loaded_by(
            ["sandbox.limits", "sandbox.config", "sandbox.result", "sandbox.targets"]
        )
        assert [name for name in loaded if name.startswith("sandbox.portal")] == []
        assert sorted({"threading", "subprocess", "socket", "logging"} & set(loaded)) == []
