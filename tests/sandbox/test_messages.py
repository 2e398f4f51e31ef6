"""The messages a host and its call processes send the portal are declared once
(sandbox/messages.py), and the portal's schemas check exactly their fields."""

from __future__ import annotations

import pytest

from sandbox.messages import AnswerFields, Envelope, HelloFields
from sandbox.portal import wire


@pytest.mark.parametrize("message", [Envelope, HelloFields, AnswerFields])
def test_schema_missing_a_declared_field__refused_naming_it(message):
    """A schema that leaves out a field its message declares stops the sandbox loading."""
    keys = sorted(message.__required_keys__ | message.__optional_keys__)
    schema = {key: ("text", 10) for key in keys[1:]}
    with pytest.raises(AssertionError, match=repr(keys[0])):
        wire._schema(message, schema)


def test_schema_checking_a_field_nobody_declared__refused_naming_it():
    """A schema field the message does not declare (so no writer is checked) is refused."""
    schema = {key: ("text", 10) for key in Envelope.__required_keys__ | Envelope.__optional_keys__}
    with pytest.raises(AssertionError, match="'stray'"):
        wire._schema(Envelope, {**schema, "stray": ("text", 10)})
