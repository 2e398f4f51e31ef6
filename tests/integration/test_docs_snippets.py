"""The docs' shell snippets run as shown: the README's Quickstart and every command a doc shows.

A newcomer's session is replayed in a scratch checkout (the repository's files linked into a
temporary directory) on a fresh SQLite database: `make run` first, as the Quickstart says,
stopped once it serves; then each doc's snippets, in order, in one bash session per doc (an
`export` carries on to the next command, as in a terminal), on a copy of the database
`make run` left. A snippet is a fenced block tagged `sh` or untagged. In it, `$ COMMAND`
lines are commands and the lines after one are what it prints (`...` stands for any text, a
line of `...` for any lines); a block without `$` lines is a list of commands. A command
exits 0 unless it says `# exit N`. A snippet that cannot run here (it serves forever, needs a
PostgreSQL host, takes minutes) says so just above its fence:
`<!-- not run by tests: why -->`. A doc's file that a snippet needs is written first from the
block below `<!-- tests write this file to: PATH -->`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# Every test here starts portal processes of its own (docs/contributing.md, the hook); one
# xdist worker runs them all, so the Quickstart's `make run` (about 20 s) happens once.
pytestmark = [pytest.mark.portal_processes, pytest.mark.xdist_group("quickstart")]

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_TAGS = frozenset({"", "sh"})
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<tag>[\w-]*)[ \t]*$")
NOT_RUN = re.compile(r"^\s*<!-- not run by tests: (?P<why>.*?) -->\s*$")
WRITES = re.compile(r"^\s*<!-- tests write this file to: (?P<path>\S+) -->\s*$")
EXIT = re.compile(r"#\s*exit (?P<code>\d+)\b")
# Left out of a newcomer's shell: what the test run itself sets for the portal.
PORTAL_VARIABLES = re.compile(r"(PORTAL_|SANDBOX_|DATABASE_URL$|DJANGO_|SECRET_KEY$)")
# Commands the docs must show and this test must run, so marking them "not run" cannot hide drift.
MUST_RUN = ("loadplugins", "runplugin", "pluginhealth --json", "ensureadmin", "issuetoken")


@dataclass
class Command:
    text: str
    expected: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        found = EXIT.search(self.text)
        return int(found["code"]) if found else 0


@dataclass
class Block:
    doc: Path
    line: int
    tag: str
    lines: list[str]
    marker: str  # the line just above the fence

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    @property
    def is_shell(self) -> bool:
        return self.tag in SHELL_TAGS

    @property
    def not_run_why(self) -> str | None:
        found = NOT_RUN.match(self.marker)
        return found["why"] if found else None

    def commands(self) -> list[Command]:
        if not any(line.startswith("$ ") for line in self.lines):
            return [Command(line) for line in self.lines if line.strip()]
        commands: list[Command] = []
        continued = False
        for line in self.lines:
            if continued:
                commands[-1].text += "\n" + line
            elif line.startswith("$ "):
                commands.append(Command(line[2:]))
            elif commands:
                commands[-1].expected.append(line)
            continued = line.endswith("\\")
        return commands


def blocks(doc: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, dedented to their fence."""
    found: list[Block] = []
    lines = doc.read_text().splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent = len(opening["indent"])
        body: list[str] = []
        index += 1
        while not FENCE.match(lines[index]) or FENCE.match(lines[index])["tag"]:
            body.append(lines[index][indent:])
            index += 1
        above = [line for line in lines[: index - len(body) - 1] if line.strip()]
        start = index - len(body)
        found.append(Block(doc, start, opening["tag"], body, above[-1] if above else ""))
        index += 1
    return found


def runnable(doc: Path) -> list[Block]:
    return [b for b in blocks(doc) if b.is_shell and b.not_run_why is None]


def expected_pattern(lines: list[str]) -> re.Pattern[str]:
    """The output a doc shows, as a pattern: `...` is any text, a line of `...` any lines."""
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    parts = []
    for line in lines:
        if line.strip() == "...":
            parts.append(r"(?:.*\n)*?")
        else:
            parts.append(".*".join(map(re.escape, line.rstrip().split("..."))) + r"\n")
    return re.compile("".join(parts))


def newcomer_env(checkout: Path) -> dict[str, str]:
    """A shell as after `make env`, with the virtual environment first on PATH, and a database
    of the checkout's own."""
    env = {name: value for name, value in os.environ.items() if not PORTAL_VARIABLES.match(name)}
    env["PATH"] = f"{checkout / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PORTAL_VAR_DIR"] = str(checkout / "var")  # the test's one difference: not the repo's
    env["PYTHONUNBUFFERED"] = "1"  # output in the order it happens, for the markers below
    return env


def scratch_checkout(path: Path) -> Path:
    path.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in {"var", ".git"}:
            (path / entry.name).symlink_to(entry)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Quickstart:
    checkout: Path
    port: int
    output: str
    health_status: int


@pytest.fixture(scope="session")
def quickstart(tmp_path_factory) -> Quickstart:
    """`make run` as the Quickstart gives it, in a scratch checkout, stopped once it serves."""
    checkout = scratch_checkout(tmp_path_factory.mktemp("newcomer") / "portal")
    port = free_port()
    make = subprocess.Popen(
        ["make", "run", f"PORT={port}"],
        cwd=checkout,
        env=newcomer_env(checkout),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    serving = threading.Event()

    def read() -> None:
        assert make.stdout is not None
        for line in make.stdout:
            lines.append(line)
            if line.startswith("Quit the server with"):
                serving.set()
        serving.set()  # make ended: nothing more will come

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        serving.wait(timeout=100)
        status = _health_status(port) if make.poll() is None else 0
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        make.wait(timeout=30)
        reader.join(timeout=10)
    return Quickstart(checkout, port, "".join(lines), status)


def _health_status(port: int) -> int:
    # runserver prints its banner just before it binds: a refused connection is retried briefly.
    deadline = time.monotonic() + 10
    while True:
        try:
            url = f"http://127.0.0.1:{port}/v1/plugins"
            with urllib.request.urlopen(url, timeout=10) as answer:
                return answer.status
        except urllib.error.URLError as exc:
            refused = isinstance(exc.reason, ConnectionRefusedError)
            if not refused or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def run_doc(doc: Path, quickstart: Quickstart, scratch: Path) -> list[tuple[Command, int, str]]:
    """Run a doc's snippets in one bash session, after the Quickstart: (command, code, output)."""
    checkout = scratch_checkout(scratch / "portal")
    shutil.copytree(quickstart.checkout / "var", checkout / "var")
    for block in blocks(doc):
        written = WRITES.match(block.marker)
        if written:
            target = checkout / written["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("\n".join(block.lines) + "\n")
    commands = [c for block in runnable(doc) for c in block.commands()]
    token = f"@@snippet-{os.getpid()}-{id(commands)}"
    script = ["exec 2>&1"]
    for index, command in enumerate(commands):
        script += [f"echo {token} {index}", command.text, f"echo {token} {index} $?"]
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=checkout,
        env=newcomer_env(checkout),
        capture_output=True,
        text=True,
        timeout=110,
    )
    results = []
    for index, command in enumerate(commands):
        found = re.search(
            rf"^{token} {index}\n(?P<output>(?:.*\n)*?){token} {index} (?P<code>\d+)$",
            done.stdout,
            re.MULTILINE,
        )
        assert found, f"{doc.name}: `{command.text}` did not finish:\n{done.stdout[-3000:]}"
        output = "".join(line.rstrip() + "\n" for line in found["output"].splitlines())
        results.append((command, int(found["code"]), output))
    return results


class TestQuickstart:
    def test_make_run__serves_on_the_given_port_after_seeding_the_demo(self, quickstart):
        """`make run PORT=N` migrates, loads the examples, seeds the demo and serves on N."""
        output = quickstart.output
        assert quickstart.health_status == 200, output
        assert f"Portal: http://127.0.0.1:{quickstart.port}/admin/" in output
        assert "Created admin account 'admin' with password: " in output
        assert "hello          INITIALIZED" in output

    def test_make_run__says_the_demo_fails_on_purpose_and_no_make_error(self, quickstart):
        """The demo's failures are announced first, and make prints no error line of its own."""
        output = quickstart.output
        announced = output.find(
            "Demo: rerunning segfault, memory_hog and forever, which fail on purpose"
        )
        summary = output.find("3 rerun(s): 0 succeeded, 3 failed")
        assert 0 <= announced < summary, output
        assert "Error 1" not in output and "(ignored)" not in output, output
        assert not re.search(r"^make(\[\d+\])?: \*\*\*", output.split("Quit the server")[0], re.M)


class TestDocSnippets:
    def test_every_shell_snippet__is_run_or_says_why_not(self):
        """Each shell snippet of the docs is run here, or is marked with why it cannot be."""
        for doc in DOCS:
            for block in blocks(doc):
                if not block.is_shell:
                    continue
                why = block.not_run_why
                assert why is None or len(why.split()) >= 3, f"{block.where}: say why not run"
                assert block.commands(), f"{block.where}: a shell snippet with no command"

    def test_the_everyday_commands__are_among_those_run(self):
        """loadplugins, runplugin, pluginhealth --json, ensureadmin and issuetoken are run."""
        ran = " ".join(c.text for doc in DOCS for b in runnable(doc) for c in b.commands())
        for command in MUST_RUN:
            assert command in ran, f"no doc snippet that tests run shows {command}"

    @pytest.mark.parametrize(
        "doc", [doc for doc in DOCS if runnable(doc)], ids=lambda doc: doc.name
    )
    def test_snippets__run_as_shown_and_print_what_the_doc_shows(self, doc, quickstart, tmp_path):
        """A doc's commands exit as it says and print what it shows, run in its order."""
        for command, code, output in run_doc(doc, quickstart, tmp_path):
            shown = f"{doc.name}: `{command.text}` printed:\n{output}"
            assert code == command.exit_code, shown
            if command.expected:
                assert expected_pattern(command.expected).fullmatch(output), shown
