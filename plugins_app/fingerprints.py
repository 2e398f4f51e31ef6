"""What changed in a plugin's environment between its last successful run and a run.

A run's ``environment`` is the fingerprint its warm host reported
(plugin_contract/fingerprint.py). The operator's first question about a plugin that started
failing is what changed: answered here as short lines ("torch 2.13.0 -> 2.14.1").
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

__all__ = ["changes_between"]


def changes_between(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Lines naming each difference, in a stable order."""
    changes = []
    for key, label in (("python", "Python interpreter"), ("python_version", "Python")):
        if before.get(key) != after.get(key):
            changes.append(f"{label} {before.get(key)} -> {after.get(key)}")
    packages_before = _mapping(before.get("packages"))
    packages_after = _mapping(after.get("packages"))
    for name in sorted(packages_before.keys() | packages_after.keys()):
        old, new = packages_before.get(name), packages_after.get(name)
        if old != new:
            changes.append(f"{name} {old or 'absent'} -> {new or 'absent'}")
    if before.get("code_sha256") != after.get("code_sha256"):
        changes.append("the plugin's code changed")
    files_before, files_after = _mapping(before.get("files")), _mapping(after.get("files"))
    for name in sorted(files_before.keys() | files_after.keys()):
        old, new = files_before.get(name), files_after.get(name)
        if old != new:
            changes.append(_file_change(name, new))
    for key, label in (("platform", "platform"), ("gpu", "GPU")):
        if before.get(key) != after.get(key):
            changes.append(f"{label} {before.get(key) or 'none'} -> {after.get(key) or 'none'}")
    return changes


def _file_change(name: str, new: object) -> str:
    if not isinstance(new, dict):
        return f"file {name} is gone"
    mtime = new.get("mtime")
    when = (
        datetime.fromtimestamp(mtime, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        if isinstance(mtime, int | float)
        else "an unknown time"
    )
    return f"file {name} changed at {when} ({new.get('size')} bytes)"


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
