"""A plugin's source as a value: one source of a kind or a conflict's sources, never half of one."""

from __future__ import annotations

import pytest

from plugins_app.discovery import PluginSpec
from plugins_app.models import SourceKind
from plugins_app.sources import PluginSource

ONE_FILE = PluginSource(location="/srv/plugins/ocr.py", kind=SourceKind.FILE)
TWO_FILES = PluginSource(conflicting=("/a/ocr.py", "/b/ocr.py"))


class TestPluginSource:
    @pytest.mark.parametrize(
        "fields",
        [
            {"location": "/a/ocr.py", "conflicting": ("/a/ocr.py", "/b/ocr.py")},
            {"kind": SourceKind.FILE, "conflicting": ("/a/ocr.py", "/b/ocr.py")},
            {"location": "entry point: acme = acme_ocr (x 1)", "kind": SourceKind.ENTRY_POINT},
            {"location": "/a/ocr.py", "kind": SourceKind.FILE, "entry_point_name": "ocr"},
            {"kind": SourceKind.PACKAGE},
            {"conflicting": ("/a/ocr.py",)},
        ],
    )
    def test_inconsistent_source__refused(self, fields):
        """A source and a conflict at once, an entry point without its name, or a bare kind fail."""
        with pytest.raises(ValueError):
            PluginSource(**fields)

    def test_shown__location_or_every_conflicting_source(self):
        """What an operator reads as the source: the location, or each source of a conflict."""
        assert (ONE_FILE.shown, TWO_FILES.shown) == ("/srv/plugins/ocr.py", "/a/ocr.py; /b/ocr.py")

    def test_of_spec__entry_point_keeps_its_name(self):
        """A discovered entry point is recorded with its kind and the entry point's name."""
        spec = PluginSpec("acme", "entry_point", "/site", module="acme_ocr", distribution="a 1")
        assert PluginSource.of_spec(spec) == PluginSource(
            location="entry point: acme = acme_ocr (a 1)",
            kind=SourceKind.ENTRY_POINT,
            entry_point_name="acme",
        )

    def test_fields__what_the_plugin_row_stores(self):
        """A conflict stores no single source and lists each one; one source lists none."""
        assert TWO_FILES.fields() == {
            "source": "",
            "source_kind": "",
            "entry_point_name": "",
            "conflicting_sources": ["/a/ocr.py", "/b/ocr.py"],
        }
        assert ONE_FILE.fields()["conflicting_sources"] == []
