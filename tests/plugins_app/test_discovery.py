"""Discovery: plugin files, packages and entry points are found without importing them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from plugins_app.discovery import PluginSpec, discover, spec_for_source
from plugins_app.models import SourceKind


def make_distribution(site: Path, name: str, entry_points: dict[str, str]) -> None:
    """An installed distribution (dist-info metadata only) with portal.plugins entry points."""
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = "\n".join(f"{key} = {value}" for key, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[portal.plugins]\n{lines}\n")


class TestDirectories:
    def test_files_and_packages__found_in_order(self, plugin_dir):
        """Modules and packages are plugins; helpers, caches and data are not."""
        plugin_dir.add("ocr", "def run(): pass\n")
        plugin_dir.add("vision", "def run(): pass\n", package=True)
        plugin_dir.add("_helpers", "x = 1\n")
        (plugin_dir.path / "__pycache__").mkdir()
        (plugin_dir.path / "models").mkdir()
        (plugin_dir.path / "README.md").write_text("notes")
        found = discover(dirs=[plugin_dir.path])
        assert [(s.name, s.kind) for s in found.specs] == [("ocr", "file"), ("vision", "package")]
        assert found.specs[0].source == str(plugin_dir.path / "ocr.py")
        assert found.warnings == []

    def test_missing_directory__warned_with_fix(self, tmp_path):
        """A plugin directory that does not exist is reported with the setting to fix."""
        found = discover(dirs=[tmp_path / "nope"])
        assert found.specs == []
        assert found.warnings == [
            f"Plugin directory {tmp_path / 'nope'} does not exist or is not a directory "
            "(fix PORTAL_PLUGIN_DIRS)"
        ]

    def test_package_without_init__warned(self, plugin_dir):
        """A directory of Python files without __init__.py is pointed out, not loaded."""
        (plugin_dir.path / "halfpkg").mkdir()
        (plugin_dir.path / "halfpkg" / "main.py").write_text("def run(): pass\n")
        found = discover(dirs=[plugin_dir.path])
        assert found.specs == []
        assert "no __init__.py" in found.warnings[0]

    def test_bad_name__warned_not_loaded(self, plugin_dir):
        """A file whose name cannot be a plugin name is reported, with how to fix it."""
        (plugin_dir.path / "my plugin.py").write_text("def run(): pass\n")
        found = discover(dirs=[plugin_dir.path])
        assert found.specs == []
        assert "rename it" in found.warnings[0]

    def test_same_name_in_two_directories__both_found(self, plugin_dir, tmp_path):
        """Duplicates are not resolved here: both are returned for the pipeline to report."""
        other = tmp_path / "other"
        other.mkdir()
        (other / "ocr.py").write_text("def run(): pass\n")
        plugin_dir.add("ocr", "def run(): pass\n")
        found = discover(dirs=[plugin_dir.path, other])
        assert [s.source for s in found.specs] == [
            str(plugin_dir.path / "ocr.py"),
            str(other / "ocr.py"),
        ]

    def test_settings_dirs__used_by_default(self, plugin_dir, settings):
        """Without explicit directories, PORTAL_PLUGIN_DIRS is searched."""
        plugin_dir.add("ocr", "def run(): pass\n")
        settings.PORTAL_PLUGIN_DIRS = [str(plugin_dir.path)]
        found = discover()
        assert [s.name for s in found.specs] == ["ocr"]
        assert str(plugin_dir.path) in found.searched


class TestEntryPoints:
    def test_entry_points__found_from_metadata_without_import(self, tmp_path, monkeypatch):
        """Entry points in portal.plugins are listed; their modules are not imported."""
        site = tmp_path / "site"
        make_distribution(site, "acme-plugins", {"acme-ocr": "acme_never_imported.ocr:Plugin"})
        monkeypatch.syspath_prepend(str(site))
        found = discover(dirs=[])
        (spec,) = [s for s in found.specs if s.kind == "entry_point"]
        assert (spec.name, spec.module, spec.attr, spec.path) == (
            "acme-ocr",
            "acme_never_imported.ocr",
            "Plugin",
            str(site),
        )
        assert spec.source == (
            "entry point: acme-ocr = acme_never_imported.ocr:Plugin (acme-plugins 1.0)"
        )
        assert "acme_never_imported" not in sys.modules

    def test_spec_for_entry_point_source__found_by_name(self, tmp_path, monkeypatch):
        """A registered entry point is found again from its recorded source."""
        site = tmp_path / "site"
        make_distribution(site, "acme-plugins", {"acme-ocr": "acme.ocr"})
        monkeypatch.syspath_prepend(str(site))
        spec = spec_for_source(
            kind="entry_point",
            location="entry point: acme-ocr = acme.ocr (acme-plugins 0.9)",
            entry_point_name="acme-ocr",
        )
        assert spec is not None and spec.module == "acme.ocr"


class TestSpecForSource:
    def test_file_and_package_sources__rebuilt(self, plugin_dir):
        """A recorded file or package path gives back its spec."""
        path = plugin_dir.add("ocr", "def run(): pass\n")
        package = plugin_dir.add("vision", "def run(): pass\n", package=True)
        file_spec = spec_for_source(kind="file", location=str(path))
        package_spec = spec_for_source(kind="package", location=str(package))
        assert file_spec == PluginSpec("ocr", "file", str(path))
        assert package_spec == PluginSpec("vision", "package", str(package))

    @pytest.mark.parametrize(
        "source",
        [
            {"kind": "file", "location": "/nowhere/x.py"},
            {
                "kind": "entry_point",
                "location": "entry point: gone = gone.mod (x 1)",
                "entry_point_name": "gone",
            },
        ],
    )
    def test_gone_source__none(self, source):
        """A source that no longer exists gives None."""
        assert spec_for_source(**source) is None

    def test_host_spec__hashable_and_complete(self):
        """The host spec is a hashable tuple holding what the host needs."""
        spec = PluginSpec("a", "entry_point", "/site", module="m", attr="x", distribution="d 1")
        host = spec.host_spec()
        hash(host)
        assert dict(host) == {
            "kind": "entry_point",
            "name": "a",
            "path": "/site",
            "module": "m",
            "attr": "x",
        }


class TestSpecForSourceFields:
    def test_entry_point__found_by_recorded_name_not_by_text(self, tmp_path, monkeypatch):
        """An entry point is found by its recorded name; the source's wording is not read."""
        site = tmp_path / "site"
        make_distribution(site, "acme-plugins", {"acme-ocr": "acme.ocr"})
        monkeypatch.syspath_prepend(str(site))
        spec = spec_for_source(
            kind=SourceKind.ENTRY_POINT,
            location="entry point: renamed = elsewhere (acme-plugins 0.1)",
            entry_point_name="acme-ocr",
        )
        assert spec is not None and (spec.name, spec.module) == ("acme-ocr", "acme.ocr")

    def test_kind__decides_what_is_looked_for(self, plugin_dir):
        """A file is looked for as a file and a package as a package, as their kind says."""
        path = plugin_dir.add("ocr", "def run(): pass\n")
        package = plugin_dir.add("vision", "def run(): pass\n", package=True)
        assert spec_for_source(kind=SourceKind.FILE, location=str(path)) == PluginSpec(
            "ocr", "file", str(path)
        )
        assert spec_for_source(kind=SourceKind.PACKAGE, location=str(path)) is None
        assert spec_for_source(kind=SourceKind.FILE, location=str(package)) is None

    def test_no_kind__none(self, plugin_dir):
        """Without a kind (no single source, as in a name conflict) there is nothing to find."""
        path = plugin_dir.add("ocr", "def run(): pass\n")
        assert spec_for_source(kind="", location=str(path)) is None
