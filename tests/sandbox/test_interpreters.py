"""Hosts run with other interpreters than the portal's: probed first, then used as they are."""

from __future__ import annotations

import glob
import os
import sys
from pathlib import Path

import pytest

from sandbox import Preload, discard_preload, run_plugin_sandboxed
from sandbox.portal.interpreters import probe_interpreter

BASE_PYTHON = str(Path(getattr(sys, "_base_executable", sys.executable)).resolve())
# Every CPython 3.11+ this machine has besides the portal's venv (pyenv's, Debian's).
OTHER_PYTHONS = sorted(
    {
        str(Path(path).resolve())
        for path in [
            *glob.glob("/root/.pyenv/versions/3.1[1-9]*/bin/python3.1[1-9]"),
            BASE_PYTHON,
            "/usr/bin/python3.11",
        ]
        if os.access(path, os.X_OK)
    }
)


class TestProbe:
    def test_portal_base_interpreter__usable_with_its_version(self):
        """The interpreter the venv came from is CPython 3.11+, with its version."""
        probe = probe_interpreter(BASE_PYTHON)
        assert probe.ok and probe.version == ".".join(map(str, sys.version_info[:3]))

    def test_missing_path__missing(self, tmp_path):
        """A path with nothing there is 'missing'."""
        assert probe_interpreter(str(tmp_path / "python")).problem == "missing"

    def test_file_that_is_no_interpreter__broken(self, tmp_path):
        """An executable that does not answer as Python is 'broken', with what it said."""
        fake = tmp_path / "python"
        fake.write_text("#!/bin/sh\necho not python >&2\nexit 3\n")
        fake.chmod(0o755)
        probe = probe_interpreter(str(fake))
        assert probe.problem == "broken" and "exit code 3: not python" in probe.detail

    def test_not_executable__not_executable(self, tmp_path):
        """A file without the executable bit is 'not_executable'."""
        plain = tmp_path / "python"
        plain.write_text("")
        assert probe_interpreter(str(plain)).problem == "not_executable"


class TestHostOnOtherInterpreter:
    @pytest.mark.parametrize("python", OTHER_PYTHONS)
    def test_call__runs_in_that_interpreter(self, python):
        """The host's code runs on each CPython 3.11+ here, outside the portal's venv."""
        preload = Preload("builtins:hash", (python,), python=python)
        try:
            version = run_plugin_sandboxed("platform:python_version", preload=preload)
            assert version.ok and version.value == probe_interpreter(python).version
        finally:
            discard_preload(preload)

    def test_portal_venv_modules__not_importable_there(self):
        """The portal's site-packages are not on the other interpreter's sys.path."""
        preload = Preload("builtins:hash", ("isolated",), python=BASE_PYTHON)
        try:
            result = run_plugin_sandboxed("importlib:import_module", "django", preload=preload)
            assert result.error_type == "ModuleNotFoundError"
        finally:
            discard_preload(preload)

    def test_relative_python__refused(self):
        """A Preload's python must be an absolute path."""
        with pytest.raises(ValueError, match="absolute interpreter path"):
            Preload("builtins:hash", python="python3")
