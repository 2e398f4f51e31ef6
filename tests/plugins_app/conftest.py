"""Fixtures for the tests of plugins_app's modules (tests/conftest.py's apply too)."""

from __future__ import annotations

import pytest

from plugins_app import pipeline


@pytest.fixture
def plugins(plugin_dir, settings):
    """A plugin directory that PORTAL_PLUGIN_DIRS points at; warm hosts go with the test."""
    settings.PORTAL_PLUGIN_DIRS = [str(plugin_dir.path)]
    yield plugin_dir
    pipeline.discard_warm_hosts()
