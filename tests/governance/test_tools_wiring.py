"""The checks are wired in (hooks, CI) and bite: types, coverage floor, sandbox-child coverage."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
COVERAGE_FLOOR = 90


def make_target(name: str) -> str:
    """The recipe lines of one Makefile target."""
    text = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{name}:.*\n((?:\t.*\n)+)", text, re.MULTILINE)
    assert match, f"no '{name}' target in the Makefile"
    return match.group(1)


class TestWiring:
    def test_pre_commit__runs_ruff_audit_types_and_tests(self):
        """The hook runs the linters, the audit, mypy and the suite on every commit."""
        config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
        entries = [hook["entry"] for repo in config["repos"] for hook in repo["hooks"]]
        needs = ("ruff check", "ruff format", "-m tools.audit", "make typecheck", "make test")
        for needed in needs:
            assert any(needed in entry for entry in entries), needed

    def test_pre_commit__tests_without_outside_parts_ci_runs_all(self):
        """The hook runs `make test-quick` (no outside parts); `make test` runs every test."""
        config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
        entries = [hook["entry"] for repo in config["repos"] for hook in repo["hooks"]]
        assert "make test-quick" in entries
        makefile = (ROOT / "Makefile").read_text()
        quick = re.search(r"^test-quick:.*\n\t(.*)$", makefile, re.M)
        excluded = (
            "not browser and not portal_processes and not promtool and not postgres_cluster"
            " and not broker and not redis and not torch"
        )
        assert quick and f'-m "{excluded}"' in quick[1]
        for target in ("test", "coverage"):
            full = re.search(rf"^{target}:.*\n\t(.*)$", makefile, re.M)
            assert full and " -m " not in full[1], target

    def test_markers__each_outside_part_is_left_to_ci_and_documented(self):
        """Every declared marker but `slow` is excluded from test-quick and in the docs' table."""
        pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
        declared = [m.split(":")[0] for m in pyproject["tool"]["pytest"]["ini_options"]["markers"]]
        makefile = (ROOT / "Makefile").read_text()
        quick = re.search(r"^test-quick:.*\n\t(.*)$", makefile, re.M)
        contributing = (ROOT / "docs" / "contributing.md").read_text()
        for marker in declared:
            if marker == "slow":
                continue
            assert quick and f"not {marker}" in quick[1], marker
            assert f"| `{marker}` |" in contributing, marker

    def test_ci_run__audits_typechecks_and_tests_both_databases(self):
        """.ci/run runs the audit and mypy, the README's `make test` on SQLite, and the suite
        with its coverage floor (`make coverage`) on PostgreSQL."""
        script = (ROOT / ".ci" / "run").read_text()
        commands = [line.strip() for line in script.splitlines() if "make " in line]
        assert "make audit" in commands
        assert "make typecheck" in commands
        assert "make test" in commands
        coverage = [command for command in commands if command.endswith("make coverage")]
        assert coverage and re.match(r'DATABASE_URL="?postgres://', coverage[0])

    def test_github_workflow__runs_the_same_checks(self):
        """The GitHub workflow runs the audit, mypy, `make test` on SQLite and `make coverage`
        on PostgreSQL."""
        workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
        steps = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
        assert {"make audit", "make typecheck", "make ${{ matrix.target }}"} <= set(steps)
        matrix = workflow["jobs"]["test"]["strategy"]["matrix"]["include"]
        assert {(row["database"], row["target"]) for row in matrix} == {
            ("sqlite", "test"),
            ("postgres", "coverage"),
        }

    def test_make_targets__call_the_tools(self):
        """`make audit` runs the audit on the tree; `make typecheck` covers the code packages."""
        assert "-m tools.audit" in make_target("audit")
        typed = make_target("typecheck")
        assert "mypy" in typed
        for package in ("plugins_app", "portal", "tools"):
            assert package in re.sub(r"\$\(TYPED\)", _typed_paths(), typed)

    def test_coverage_floor__enforced_and_not_lowered(self):
        """Branch coverage is measured and `make coverage` fails below the floor."""
        assert PYPROJECT["tool"]["coverage"]["run"]["branch"] is True
        assert PYPROJECT["tool"]["coverage"]["report"]["fail_under"] >= COVERAGE_FLOOR
        assert "--cov-fail-under=$(COVERAGE_FLOOR)" in make_target("coverage")
        floor = re.search(r"^COVERAGE_FLOOR \?= (\d+)", (ROOT / "Makefile").read_text(), re.M)
        assert floor and int(floor.group(1)) >= COVERAGE_FLOOR


def _typed_paths() -> str:
    match = re.search(r"^TYPED := (.*)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match, "no TYPED paths in the Makefile"
    return match.group(1)


@pytest.mark.slow
class TestTypecheck:
    def test_mypy_with_django_stubs__rejects_a_wrong_model_field_type(self, tmp_path):
        """The project's mypy config knows model field types, so a wrong one fails the check."""
        module = tmp_path / "probe.py"
        module.write_text(
            "from plugins_app.models import Plugin\n\n\n"
            "def count(plugin: Plugin) -> int:\n"
            "    return plugin.name\n"
        )
        result = subprocess.run(
            [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), str(module)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"{module.name}:5: error: Incompatible return value type" in result.stdout
        assert '(got "str", expected "int")' in result.stdout


CHILD_PROGRAM = """\
    import os
    import work

    pid = os.fork()
    if pid == 0:
        work.in_child()
        os._exit(0)  # as sandbox children end: no atexit, no normal coverage save
    os.waitpid(pid, 0)
    """
WORK_MODULE = """\
    def in_child():
        total = 0
        for number in range(3):
            total += number
        return total
    """


def child_lines_covered(tmp_path: Path, patch: list[str]) -> set[int]:
    """Lines of work.py that coverage saw, when only a forked child that os._exit()s ran them."""
    (tmp_path / "main.py").write_text(textwrap.dedent(CHILD_PROGRAM))
    (tmp_path / "work.py").write_text(textwrap.dedent(WORK_MODULE))
    patches = ", ".join(f'"{name}"' for name in patch)
    (tmp_path / "cov.toml").write_text(
        "[tool.coverage.run]\nbranch = true\nparallel = true\nsource = ['.']\n"
        f"patch = [{patches}]\n"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("COV")}
    coverage = [sys.executable, "-m", "coverage"]
    config = "--rcfile=cov.toml"
    for command in (
        ["run", config, "main.py"],
        ["combine", config],
        ["json", config, "-o", "c.json"],
    ):
        subprocess.run(
            coverage + command, cwd=tmp_path, env=env, check=True, capture_output=True, timeout=60
        )
    report = json.loads((tmp_path / "c.json").read_text())
    return set(report["files"]["work.py"]["executed_lines"])


class TestChildCoverage:
    def test_project_patches__count_code_run_only_in_forked_children(self, tmp_path):
        """With the project's coverage patches, a sandbox-like child's lines are measured."""
        patch = PYPROJECT["tool"]["coverage"]["run"]["patch"]
        assert {2, 3, 4, 5} <= child_lines_covered(tmp_path, patch)

    def test_without_exit_patch__child_lines_lost(self, tmp_path):
        """The patch is what makes it work: without `_exit` the child's lines are lost."""
        assert child_lines_covered(tmp_path, []) == {1}


class TestParallelGroups:
    def test_xdist_group__keeps_a_modules_tests_on_one_worker(self, tmp_path):
        """`--dist=loadgroup` (as the Makefile runs it) keeps a marked module on one worker,
        so its expensive module fixture (nodes, a cluster, `make run`) is built once."""
        (tmp_path / "test_grouped.py").write_text(
            textwrap.dedent(
                """
                import os, pathlib, pytest
                pytestmark = pytest.mark.xdist_group("expensive")
                @pytest.mark.parametrize("n", range(6))
                def test_worker(n):
                    with open(pathlib.Path(__file__).parent / "workers", "a") as seen:
                        seen.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")
                """
            )
        )
        (tmp_path / "test_plain.py").write_text("def test_a(): pass\ndef test_b(): pass\n")
        # Only xdist is loaded: the installed plugins (hypothesis, Django...) would add seconds.
        pytest_args = ["-p", "no:cacheprovider", "-p", "xdist", "-q"]
        done = subprocess.run(
            [sys.executable, "-m", "pytest", *pytest_args, "-n", "2", "--dist=loadgroup", "."],
            cwd=tmp_path,
            env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        workers = (tmp_path / "workers").read_text().split()
        assert len(workers) == 6 and len(set(workers)) == 1, f"the group ran on {workers}"
