"""Comments and docstrings in the portal's code name only files that exist."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

from django.contrib.staticfiles import finders
from django.template import TemplateDoesNotExist
from django.template.loader import get_template

ROOT = Path(__file__).resolve().parents[2]
# sandbox/ is left out while it is being moved (issue 13); its own docs say where things went.
CHECKED = ("plugins_app", "portal", "tools")
FILE_NAME = re.compile(r"(?<![\w./-])([\w/-]+(?:/[\w-]+)*\.(?:py|md|html|css|txt|toml|json))\b")
PLACEHOLDER = re.compile(r"(^|/)[A-Z]+\.py$")  # `NAME.py` in prose means any plugin's file


def prose(source: str) -> list[tuple[int, str]]:
    """(line, text) of every comment and string in a module: where references are written."""
    found = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.COMMENT, tokenize.STRING):
            found.append((token.start[0], token.string))
    return found


def exists(reference: str, where: Path) -> bool:
    """A file of the repository (from the root or a directory above the module), a static file
    or a template (an admin tag's own name, `date_hierarchy.html`, is under admin/)."""
    if PLACEHOLDER.search(reference) or finders.find(reference):
        return True
    inside = [ROOT, *(directory for directory in where.parents if ROOT in directory.parents)]
    if any((directory / reference).exists() for directory in inside):
        return True
    try:
        get_template(reference if reference.startswith("admin/") else f"admin/{reference}")
    except TemplateDoesNotExist:
        try:
            get_template(reference)
        except TemplateDoesNotExist:
            return False
    return True


def dangling(files: list[Path]) -> list[str]:
    """'module.py:line: reference' for each file a comment or docstring names that is not there."""
    missing = []
    for file in files:
        for line, text in prose(file.read_text()):
            for reference in FILE_NAME.findall(text):
                if not exists(reference, file):
                    missing.append(f"{file.name}:{line}: {reference}")
    return missing


def portal_files() -> list[Path]:
    return sorted(
        path
        for package in CHECKED
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.parts
    )


class TestReferences:
    def test_comments_and_docstrings__name_existing_files(self):
        """A reader sent to a file by a comment or docstring finds it."""
        assert dangling(portal_files()) == []

    def test_missing_file__reported_with_its_line(self, tmp_path):
        """A comment naming a file that is not there is reported; real ones and NAME.py pass."""
        module = tmp_path / "module.py"
        module.write_text(
            '"""See docs/api.md and NAME.py."""\n'
            "# the contract in common.md\n"
            'TEMPLATE = "admin/plugins_app/index.html"  # and django.utils.html\n'
        )
        missing = dangling([module])
        assert [entry.split(": ", 1)[1] for entry in missing] == ["common.md"]
