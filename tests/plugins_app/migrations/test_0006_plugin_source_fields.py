"""Upgrading fills each plugin's source kind, entry point and conflicts from its old source text."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.apps.registry import Apps

from tests.migration_support import migrate_to, migrated_back_to

BEFORE = ("plugins_app", "0005_pluginrun_outcome_choices")
AFTER = ("plugins_app", "0006_plugin_source_fields")

OLD_SOURCES = {
    "ocr": "/srv/plugins/ocr.py",
    "vision": "/srv/plugins/vision",
    "acme": "entry point: acme-ocr = acme.ocr:Plugin (acme-plugins 1.0)",
    "dup": "/srv/a/dup.py; /srv/b/dup.py",
    "blank": "",
}


@pytest.fixture
def at_0005() -> Iterator[Apps]:
    """The schema before the source fields, with every migration applied again afterwards."""
    with migrated_back_to(BEFORE) as apps:
        yield apps


@pytest.mark.django_db(transaction=True)
class TestSourceFieldsMigration:
    def test_forward__fields_filled_from_source_text(self, at_0005):
        """Kind from the text, the entry point's name, and a conflict's sources as a list."""
        old = at_0005.get_model("plugins_app", "Plugin")
        for name, source in OLD_SOURCES.items():
            old.objects.create(name=name, source=source)
        new = migrate_to(AFTER).get_model("plugins_app", "Plugin")
        fields = ("source", "source_kind", "entry_point_name", "conflicting_sources")
        rows = {row["name"]: tuple(row[f] for f in fields) for row in new.objects.values()}
        assert rows == {
            "ocr": ("/srv/plugins/ocr.py", "file", "", []),
            "vision": ("/srv/plugins/vision", "package", "", []),
            "acme": (OLD_SOURCES["acme"], "entry_point", "acme-ocr", []),
            "dup": ("", "", "", ["/srv/a/dup.py", "/srv/b/dup.py"]),
            "blank": ("", "", "", []),
        }

    def test_backward__conflict_text_restored(self, at_0005):
        """Going back writes a conflict's sources into the source text as before."""
        old = at_0005.get_model("plugins_app", "Plugin")
        for name, source in OLD_SOURCES.items():
            old.objects.create(name=name, source=source)
        migrate_to(AFTER)
        restored = migrate_to(BEFORE).get_model("plugins_app", "Plugin")
        assert dict(restored.objects.values_list("name", "source")) == OLD_SOURCES
