"""Return values of subclasses of plain types arrive as the plain types, in either format."""

from __future__ import annotations

import pytest

from sandbox import Outcome, run_plugin_sandboxed

TARGET = "tests.sandbox_targets.basic"


@pytest.mark.parametrize("result_format", ["json", "pickle"])
def test_subclass_values__plain_base_values(sandbox_settings, result_format):
    """str/int/bytes subclasses and named tuples come back plain (bytes only as pickle)."""
    sandbox_settings(result_format=result_format)
    result = run_plugin_sandboxed(f"{TARGET}:return_subclasses")
    if result_format == "json":  # bytes are not JSON data: refused, saying what to return
        assert result.outcome == Outcome.UNSERIALISABLE
        assert "bytes" in result.error and "decode" in result.error
        return
    assert result.ok, result.error
    value = result.value
    assert type(value["version"]) is str and value["version"] == "2.13.0"
    assert type(value["count"]) is int and value["count"] == 3
    assert type(value["point"]) is tuple and value["point"] == (1, 2)
    assert type(value["raw"]) is bytes and value["raw"] == b"ab"
    assert type(value["nested"][0]["v"]) is str


def test_unknown_type_as_pickle__message_says_what_to_return(sandbox_settings):
    """A class the portal does not load: the message tells the plugin author what to return."""
    sandbox_settings(result_format="pickle")
    result = run_plugin_sandboxed(f"{TARGET}:return_opaque")
    assert result.outcome == Outcome.UNSERIALISABLE
    assert "str(value)" in result.error and ".tolist()" in result.error
