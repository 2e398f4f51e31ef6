"""Which variables a plugin declares (plugins_app/plugin_env.py), from untrusted reports too."""

from __future__ import annotations

import pytest

from plugins_app import plugin_env
from sandbox import Outcome, SandboxResult


def load_result(report: object) -> SandboxResult:
    return SandboxResult(ok=True, value=report, outcome=Outcome.OK)


class TestDeclared:
    def test_env_and_file_variables__in_order(self):
        """requires.env names come first, then the $VARS and ${VARS} of requires.files."""
        requires = {"env": ["A_B"], "files": ["$MODEL_DIR/m.pt", "${LABELS}/l.txt", "plain.bin"]}
        assert plugin_env.declared(requires) == ("A_B", "MODEL_DIR", "LABELS")

    @pytest.mark.parametrize(
        "requires",
        [
            {"env": "PATH"},
            {"env": [1, None, {"x": 1}]},
            {"env": ["A=B", "", "NUL\0", "x" * 500]},
            {"files": "$X/y"},
            {"files": [3]},
            "not a dict",
        ],
        ids=repr,
    )
    def test_malformed_declarations__give_no_names(self, requires):
        """Values that are not lists of variable names are ignored, never raised on."""
        assert plugin_env.declared(requires) == ()

    def test_many_names__capped(self):
        """A plugin cannot make its host key (or environment) arbitrarily large."""
        names = [f"V{i}" for i in range(1000)]
        assert len(plugin_env.declared({"env": names})) == plugin_env.MAX_DECLARED


class TestEnvToLoadWith:
    @pytest.mark.parametrize(
        "report",
        [
            None,
            [],
            {"status": "unavailable"},
            {"status": "unavailable", "missing": "env", "requires": {}},
            {"status": "unavailable", "missing": [1, "env", None], "requires": {"env": ["X"]}},
            {"status": "unavailable", "missing": [{"kind": "env"}], "requires": ["X"]},
        ],
        ids=repr,
    )
    def test_malformed_report__no_second_load_and_no_error(self, report, monkeypatch):
        """A load report a hostile plugin mangled never raises in the portal."""
        monkeypatch.setenv("X", "1")
        assert plugin_env.env_to_load_with(load_result(report)) == ()

    def test_missing_declared_variable_the_portal_has__load_again_with_it(self, monkeypatch):
        """A declared variable the portal has (and may pass) is worth a second load."""
        monkeypatch.setenv("PLUGIN_ENV_TEST_REGION", "eu")
        report = {
            "status": "unavailable",
            "missing": [{"kind": "env", "item": "PLUGIN_ENV_TEST_REGION"}],
            "requires": {"env": ["PLUGIN_ENV_TEST_REGION"]},
        }
        assert plugin_env.env_to_load_with(load_result(report)) == ("PLUGIN_ENV_TEST_REGION",)
