"""Finding plugins without importing them.

A plugin is a `NAME.py` file or a `NAME/` package in a plugin directory (settings
PORTAL_PLUGIN_DIRS), or a module named by an entry point in the group `portal.plugins` of an
installed distribution. Entry points are read from distribution metadata only: no plugin
code runs in the portal process (the sandbox imports it, see plugin_contract/loader.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from django.conf import settings

from plugin_contract import MAX_NAME_CHARS, NAME_PATTERN

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "portal.plugins"
ENTRY_POINT_PREFIX = "entry point: "


@dataclass(frozen=True)
class PluginSpec:
    """Where one plugin lives, as discovered (its module may declare another name)."""

    name: str
    kind: str  # "file", "package" or "entry_point": the values of models.SourceKind
    path: str  # the file, the package directory, or the distribution's sys.path entry
    module: str = ""  # entry points: the module to import
    attr: str = ""  # entry points: an optional attribute of the module
    distribution: str = ""  # entry points: "name version" of the distribution

    @property
    def source(self) -> str:
        """The plugin's source as an operator reads it (Plugin.source): the file or package
        path, or the entry point; spec_for_source finds it again from the fields beside it."""
        if self.kind != "entry_point":
            return self.path
        target = f"{self.module}:{self.attr}" if self.attr else self.module
        return f"{ENTRY_POINT_PREFIX}{self.name} = {target} ({self.distribution})"

    def host_spec(self) -> tuple[tuple[str, str], ...]:
        """The spec the plugin host takes: hashable, so it can key a warm host."""
        fields = {"kind": self.kind, "name": self.name, "path": self.path}
        if self.kind == "entry_point":
            fields.update(module=self.module, attr=self.attr)
        return tuple(sorted(fields.items()))


@dataclass(frozen=True)
class Discovery:
    specs: list[PluginSpec]
    warnings: list[str] = field(default_factory=list)
    searched: str = ""  # in words, for a reason that says where a plugin was looked for


def is_plugin_name(name: str) -> bool:
    """Whether `name` can be a plugin's name (a module name in the host, part of URLs)."""
    return len(name) <= MAX_NAME_CHARS and NAME_PATTERN.fullmatch(name) is not None


def plugin_dirs() -> list[Path]:
    return [Path(item).expanduser() for item in settings.PORTAL_PLUGIN_DIRS]


def discover(*, dirs: list[Path] | None = None) -> Discovery:
    """Every plugin in the directories and entry points, duplicates included, in order."""
    dirs = plugin_dirs() if dirs is None else dirs
    specs: list[PluginSpec] = []
    warnings: list[str] = []
    for directory in dirs:
        specs += _scan_directory(directory, warnings)
    specs += _entry_points(warnings)
    for warning in warnings:
        logger.warning("%s", warning)
    listed = ", ".join(str(d) for d in dirs) or "no plugin directory (PORTAL_PLUGIN_DIRS is empty)"
    searched = f"{listed} and the '{ENTRY_POINT_GROUP}' entry points"
    return Discovery(specs=specs, warnings=warnings, searched=searched)


def _scan_directory(directory: Path, warnings: list[str]) -> list[PluginSpec]:
    if not directory.is_dir():
        warnings.append(
            f"Plugin directory {directory} does not exist or is not a directory "
            "(fix PORTAL_PLUGIN_DIRS)"
        )
        return []
    try:
        entries = sorted(directory.iterdir())
    except OSError as exc:
        warnings.append(f"Plugin directory {directory} cannot be read: {exc} (fix its permissions)")
        return []
    specs = []
    for entry in entries:
        spec = _spec_for_entry(entry, warnings)
        if spec is not None:
            specs.append(spec)
    return specs


def _spec_for_entry(entry: Path, warnings: list[str]) -> PluginSpec | None:
    if entry.name.startswith((".", "_")):
        return None  # private helpers, __pycache__, hidden files
    if entry.is_dir():
        if not (entry / "__init__.py").is_file():
            if any(entry.glob("*.py")):
                warnings.append(
                    f"{entry} holds Python files but no __init__.py, so it is not loaded as a "
                    "plugin package (add __init__.py if it is one)"
                )
            return None
        kind, name = "package", entry.name
    elif entry.suffix == ".py":
        kind, name = "file", entry.stem
    else:
        return None
    if not NAME_PATTERN.fullmatch(name):
        warnings.append(
            f"{entry} is not loaded: a plugin name may hold only letters, digits, '_' and '-' "
            "and must start with a letter or digit (rename it)"
        )
        return None
    return PluginSpec(name=name, kind=kind, path=str(entry.resolve()))


def _entry_points(warnings: list[str]) -> list[PluginSpec]:
    specs = []
    seen: set[tuple[str, str]] = set()
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = entry_point.dist
        dist_label = f"{dist.name} {dist.version}" if dist else "unknown distribution"
        # The same distribution can be visible twice on sys.path; report it once.
        if (entry_point.name, dist_label) in seen:
            continue
        seen.add((entry_point.name, dist_label))
        if not NAME_PATTERN.fullmatch(entry_point.name):
            warnings.append(
                f"Entry point '{entry_point.name}' of {dist_label} is not loaded: a plugin name "
                "may hold only letters, digits, '_' and '-' (rename it in the distribution)"
            )
            continue
        module, _, attr = entry_point.value.partition(":")
        location = str(dist.locate_file("")) if dist else ""
        specs.append(
            PluginSpec(
                name=entry_point.name,
                kind="entry_point",
                path=location,
                module=module.strip(),
                attr=attr.strip(),
                distribution=dist_label,
            )
        )
    return specs


def spec_for_source(
    *, kind: str, location: str, entry_point_name: str = "", discovery: Discovery | None = None
) -> PluginSpec | None:
    """The spec of a registered plugin from its recorded source fields (Plugin.source_kind,
    source, entry_point_name); None when it is gone, or when there is no kind to look for."""
    if kind == "entry_point":
        # By entry point name, so an upgraded distribution keeps serving the plugin.
        specs = (discovery or Discovery(specs=_entry_points([]))).specs
        return next(
            (s for s in specs if s.kind == "entry_point" and s.name == entry_point_name), None
        )
    path = Path(location)
    if kind == "file" and path.is_file():
        return PluginSpec(name=path.stem, kind="file", path=location)
    if kind == "package" and (path / "__init__.py").is_file():
        return PluginSpec(name=path.name, kind="package", path=location)
    return None
