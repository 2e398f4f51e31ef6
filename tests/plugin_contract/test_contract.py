"""The plugin contract, declared once: the loader in the sandbox and the portal share it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import plugin_contract
from plugins_app.discovery import is_plugin_name
from plugins_app.loader import LOAD_TARGET, LOADER_TARGET
from plugins_app.models import Plugin
from plugins_app.runner import CALL_TARGET
from plugins_app.warm_hosts import WARM_TARGET
from tests.plugin_contract.test_loader import load

ROOT = Path(__file__).resolve().parents[2]


def test_contract_and_loader__import_without_django():
    """The sandbox host imports the loader and its contract without Django or the portal."""
    probe = textwrap.dedent(
        """
        import json, sys
        import plugin_contract, plugin_contract.loader
        print(json.dumps(sorted(sys.modules)))
        """
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("COV")}
    done = subprocess.run(
        [sys.executable, "-P", "-c", probe],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = json.loads(done.stdout)
    assert [m for m in loaded if m.split(".")[0] in {"django", "plugins_app", "portal"}] == []


def test_portal_targets__name_the_contracts_loader():
    """Every sandbox target the portal calls is a function of plugin_contract.loader."""
    targets = [LOAD_TARGET, CALL_TARGET, WARM_TARGET, LOADER_TARGET]
    assert {target.split(":")[0] for target in targets} == {"plugin_contract.loader"}


def test_registry_columns__are_the_contracts_lengths():
    """A name or version the loader accepts fits its registry column, to the character."""
    assert Plugin._meta.get_field("name").max_length == plugin_contract.MAX_NAME_CHARS
    assert Plugin._meta.get_field("version").max_length == plugin_contract.MAX_VERSION_CHARS


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("ocr", True),
        ("yolo-v8_small", True),
        ("9lives", True),
        ("a" * plugin_contract.MAX_NAME_CHARS, True),
        ("a" * (plugin_contract.MAX_NAME_CHARS + 1), False),
        ("-leading-dash", False),
        ("has space", False),
        ("dotted.name", False),
        ("", False),
    ],
)
def test_portal_name_check__is_the_contracts(name, allowed):
    """The portal accepts exactly the names the contract allows a plugin to declare."""
    assert is_plugin_name(name) is allowed
    assert (
        bool(
            len(name) <= plugin_contract.MAX_NAME_CHARS
            and plugin_contract.NAME_PATTERN.fullmatch(name)
        )
        is allowed
    )


@pytest.mark.parametrize(
    ("field", "longest"),
    [("name", plugin_contract.MAX_NAME_CHARS), ("version", plugin_contract.MAX_VERSION_CHARS)],
)
def test_loader__takes_the_longest_declaration_and_refuses_one_more(tmp_path, field, longest):
    """The loader accepts a name or version of the contract's length, and not a longer one."""
    for length, status in ((longest, "ok"), (longest + 1, "failed")):
        path = tmp_path / f"p{length}.py"
        path.write_text(f"{field} = {'v' * length!r}\ndef run():\n    return 1\n")
        report = load(path)
        assert (report["status"], report["field"]) == (
            status,
            None if status == "ok" else field,
        )
