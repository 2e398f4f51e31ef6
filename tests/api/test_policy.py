"""The API's request policy: the JSON body parser's verdict on deep bodies."""

from __future__ import annotations

import io

import pytest
from rest_framework.exceptions import ParseError

from plugins_app.api.policy import CappedJSONParser


def parse_at_depth(body: str, frames: int) -> object:
    """Parse `body` with `frames` Python frames already on the stack (a deep server stack)."""
    if frames:
        return parse_at_depth(body, frames - 1)
    return CappedJSONParser().parse(io.BytesIO(body.encode()), parser_context={})


class TestDeepBodies:
    @pytest.mark.parametrize("frames", [0, 400])
    def test_900_levels__read_whatever_the_callers_stack_depth(self, frames):
        """A body nested 900 levels reads the same from a shallow or a deep stack."""
        body = "[" * 900 + "]" * 900
        value = parse_at_depth(body, frames)
        for _ in range(899):
            assert isinstance(value, list)
            value = value[0]
        assert value == []

    @pytest.mark.parametrize("frames", [0, 400])
    def test_20000_levels__refused_as_too_deep_to_read(self, frames):
        """A body nested 20,000 levels is a parse error saying so, from any stack depth."""
        with pytest.raises(ParseError, match="nested too deeply"):
            parse_at_depth("[" * 20000 + "]" * 20000, frames)
