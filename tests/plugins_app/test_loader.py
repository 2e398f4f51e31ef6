"""Loads record a plugin's source as fields: its kind, its entry point and a conflict's sources."""

from __future__ import annotations

import pytest

from plugins_app import pipeline
from plugins_app.models import Plugin, SourceKind
from tests.plugins_app.test_discovery import make_distribution

pytestmark = pytest.mark.django_db

ACTOR = "user:tester"


def source_fields(name: str) -> tuple[str, str, str, list[str]]:
    plugin = Plugin.objects.get(name=name)
    return plugin.source, plugin.source_kind, plugin.entry_point_name, plugin.conflicting_sources


class TestSourceFields:
    def test_file_and_package__kind_recorded(self, plugins):
        """A module file and a package directory are recorded with their kinds."""
        path = plugins.add("ocr", "def run(): pass\n")
        package = plugins.add("vision", "def run(): pass\n", package=True)
        pipeline.load_plugins(actor=ACTOR)
        assert source_fields("ocr") == (str(path), SourceKind.FILE, "", [])
        assert source_fields("vision") == (str(package), SourceKind.PACKAGE, "", [])

    def test_entry_point_with_declared_name__found_by_entry_point_name(
        self, plugins, tmp_path, monkeypatch
    ):
        """An entry point's name is recorded, so a plugin declaring another name still runs."""
        site = tmp_path / "site"
        # A module name no other test uses: a sandbox host started while another test's site
        # was on sys.path keeps that entry, and would import that test's module of the name.
        make_distribution(site, "acme-ocr", {"acme": "acme_pretty"})
        (site / "acme_pretty").mkdir()
        (site / "acme_pretty" / "__init__.py").write_text("name = 'pretty'\ndef run(): return 2\n")
        monkeypatch.syspath_prepend(str(site))
        pipeline.load_plugins(actor=ACTOR)
        assert source_fields("pretty") == (
            "entry point: acme = acme_pretty (acme-ocr 1.0)",
            SourceKind.ENTRY_POINT,
            "acme",
            [],
        )
        assert pipeline.run_plugin(name="pretty", params={}, actor=ACTOR).result == 2

    def test_name_conflict__sources_listed_then_cleared(self, plugins):
        """A conflict lists each source, and a reload re-checks each; one left is the source."""
        first = plugins.add("ocr", "def run(): return 'a'\n")
        second = plugins.add("ocr2", "name = 'ocr'\ndef run(): return 'b'\n")
        pipeline.load_plugins(actor=ACTOR)
        assert source_fields("ocr") == ("", "", "", [str(first), str(second)])
        assert pipeline.reload_plugin(name="ocr", actor=ACTOR).state == "UNAVAILABLE"
        assert source_fields("ocr") == ("", "", "", [str(first), str(second)])
        second.unlink()
        assert pipeline.reload_plugin(name="ocr", actor=ACTOR).state == "INITIALIZED"
        assert source_fields("ocr") == (str(first), SourceKind.FILE, "", [])

    def test_path_with_semicolon__one_source_not_a_conflict(self, plugins, tmp_path, settings):
        """A directory named with "; " is one source: when its file goes, the reason says so."""
        team = tmp_path / "team; ocr"
        team.mkdir()
        path = team / "p.py"
        path.write_text("def run(): return 1\n")
        settings.PORTAL_PLUGIN_DIRS = [str(team)]
        pipeline.load_plugins(actor=ACTOR)
        assert source_fields("p") == (str(path), SourceKind.FILE, "", [])
        path.unlink()
        (report,) = pipeline.load_plugins(actor=ACTOR)
        assert report.reason == (
            f"Plugin 'p' is gone: {path} no longer exists (restore it and reload; the "
            "plugin's history is kept meanwhile)"
        )
