"""Where a plugin comes from, as the registry records it: one source of a kind (a module file,
a package directory, an entry point), or every source of a name conflict.

The services store a PluginSource as Plugin.source, source_kind, entry_point_name and
conflicting_sources; the loader and the runner read it back from those fields and find the
plugin again by them (PluginSource.spec). Nothing reads a source's text back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from plugins_app.discovery import Discovery, PluginSpec, spec_for_source
from plugins_app.models import Plugin, SourceKind


@dataclass(frozen=True)
class PluginSource:
    """One source of a kind, or every source of a name conflict (then none of them is used,
    and there is no single source or kind)."""

    location: str = ""  # the file or package path, or "entry point: NAME = module (dist)"
    kind: SourceKind | None = None  # None with a location: unknown, so never found again
    entry_point_name: str = ""  # the entry point's name, by which discovery finds it again
    conflicting: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.conflicting and (self.location or self.kind or self.entry_point_name):
            raise ValueError("a name conflict has no single source, kind or entry point")
        if len(self.conflicting) == 1:
            raise ValueError("a name conflict takes two sources or more")
        if self.kind is not None and not self.location:
            raise ValueError(f"a source of kind {self.kind} needs its location")
        if (self.kind == SourceKind.ENTRY_POINT) != bool(self.entry_point_name):
            raise ValueError("an entry point's name is given for an entry point, and only then")

    @classmethod
    def of_spec(cls, spec: PluginSpec) -> PluginSource:
        """How the registry records a discovered plugin's source."""
        entry_point = spec.kind == SourceKind.ENTRY_POINT
        return cls(
            location=spec.source,
            kind=SourceKind(spec.kind),
            entry_point_name=spec.name if entry_point else "",
        )

    @classmethod
    def of_plugin(cls, plugin: Plugin) -> PluginSource:
        """Where the registry says a plugin comes from, from its fields."""
        return cls(
            location=plugin.source,
            kind=SourceKind(plugin.source_kind) if plugin.source_kind else None,
            entry_point_name=plugin.entry_point_name,
            conflicting=tuple(plugin.conflicting_sources),
        )

    def spec(self, *, discovery: Discovery | None = None) -> PluginSpec | None:
        """The plugin's spec, found again; None when it is gone or there is no single source."""
        return spec_for_source(
            kind=self.kind or "",
            location=self.location,
            entry_point_name=self.entry_point_name,
            discovery=discovery,
        )

    @property
    def shown(self) -> str:
        """The source as an operator reads it in a reason: each source of a conflict."""
        return "; ".join(self.conflicting) if self.conflicting else self.location

    def fields(self) -> dict[str, Any]:
        """The Plugin fields that record it."""
        return {
            "source": self.location,
            "source_kind": self.kind or "",
            "entry_point_name": self.entry_point_name,
            "conflicting_sources": list(self.conflicting),
        }
