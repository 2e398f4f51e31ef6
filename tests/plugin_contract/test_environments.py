"""The python declaration, read from a plugin's source without running it."""

from __future__ import annotations

import pytest

from plugin_contract.environments import declared_python


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ('python = "/srv/envs/ocr/bin/python"\n', "/srv/envs/ocr/bin/python"),
        ('python: str = "torch"\nimport torch\n', "torch"),
        ("import os\ndef run():\n    python = 'inside'\n", None),
        ("def broken(:\n", None),
    ],
    ids=["path", "annotated-name", "not-top-level", "syntax-error"],
)
def test_file_plugin__its_top_level_string(tmp_path, source, value):
    """A top-level string literal is the declaration; nothing else is (and nothing runs)."""
    path = tmp_path / "p.py"
    path.write_text(source)
    declared = declared_python("file", str(path))
    assert (declared.value, declared.problem) == (value, "")


def test_computed_value__a_problem_saying_why(tmp_path):
    """A computed value cannot be read before import: the problem says to write a literal."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("import os\npython = os.environ['PY']\n")
    declared = declared_python("package", str(tmp_path / "pkg"))
    assert declared.value is None
    assert "must be a string literal" in declared.problem and "os.environ" in declared.problem
