"""Every test says in its docstring what a user would notice, so a failure reads as a sentence."""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"

Function = ast.FunctionDef | ast.AsyncFunctionDef


def is_test_module(path: Path) -> bool:
    """A file pytest collects tests from (its default `python_files`)."""
    return path.suffix == ".py" and (path.name.startswith("test_") or path.stem.endswith("_test"))


def is_test_class(node: ast.ClassDef) -> bool:
    """A class pytest collects tests from: named `Test*`, with no __init__."""
    has_init = any(isinstance(item, Function) and item.name == "__init__" for item in node.body)
    return node.name.startswith("Test") and not has_init


def collected_tests(body: list[ast.stmt], prefix: str = "") -> Iterator[tuple[str, Function]]:
    """(name, definition) of each test pytest collects from a module or class body: `test*`
    functions and methods, the latter in test classes (nested ones included)."""
    for node in body:
        if isinstance(node, Function) and node.name.startswith("test"):
            yield f"{prefix}{node.name}", node
        elif isinstance(node, ast.ClassDef) and is_test_class(node):
            yield from collected_tests(node.body, f"{prefix}{node.name}::")


def undocumented(source: str, path: str) -> list[str]:
    """pytest node ids (`path::Class::test`) of the tests in `source` with no docstring."""
    return [
        f"{path}::{name}"
        for name, function in collected_tests(ast.parse(source).body)
        if not (ast.get_docstring(function) or "").strip()
    ]


def found(source: str) -> list[str]:
    return undocumented(textwrap.dedent(source), "tests/test_x.py")


class TestDocstringCheck:
    def test_tests_without_docstring__named_by_node_id(self):
        """A test function, a test method and an async test with no docstring are each named."""
        source = """\
            def test_plain():
                assert True

            async def test_async():
                assert True

            class TestThing:
                def test_method(self):
                    assert True

                class TestNested:
                    def test_inner(self):
                        ""
            """
        assert found(source) == [
            "tests/test_x.py::test_plain",
            "tests/test_x.py::test_async",
            "tests/test_x.py::TestThing::test_method",
            "tests/test_x.py::TestThing::TestNested::test_inner",
        ]

    def test_documented_tests_and_helpers__not_named(self):
        """Documented tests pass; helpers, fixtures, nested functions and non-test classes are
        not tests, whatever their names."""
        source = """\
            import pytest

            def make_plugin(name):
                return name

            @pytest.fixture
            def plugins():
                return []

            def test_documented():
                \"\"\"The plugin list starts empty.\"\"\"
                def test_inner_helper():
                    pass

            class Helper:
                def test_like_name(self):
                    pass

            class TestWithInit:
                def __init__(self):
                    pass

                def test_never_collected(self):
                    pass

            class TestThing:
                def setup_method(self):
                    pass

                def _run(self):
                    pass

                def test_documented(self):
                    \"\"\"A thing runs.\"\"\"
            """
        assert found(source) == []

    def test_test_modules__what_pytest_collects(self):
        """test_*.py and *_test.py files hold tests; conftest.py and support modules do not."""
        names = ["test_api.py", "api_test.py", "conftest.py", "concurrency_support.py", "x.txt"]
        assert [name for name in names if is_test_module(Path(name))] == [
            "test_api.py",
            "api_test.py",
        ]


class TestRepository:
    def test_every_test__has_a_docstring(self):
        """Each test in tests/ has a docstring saying the behaviour it checks."""
        modules = [module for module in sorted(TESTS.rglob("*.py")) if is_test_module(module)]
        # Parsed on a fresh thread: CPython 3.11's AST depth check can trip on a long-lived
        # worker's thread state ("AST constructor recursion depth mismatch").
        with ThreadPoolExecutor(max_workers=1) as fresh_thread:
            missing = [
                entry
                for found_here in fresh_thread.map(
                    lambda module: undocumented(
                        module.read_text(encoding="utf-8"), module.relative_to(ROOT).as_posix()
                    ),
                    modules,
                )
                for entry in found_here
            ]
        assert not missing, f"{len(missing)} test(s) without a docstring:\n" + "\n".join(missing)
