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


def fields_of(message: type) -> set[str]:
    return set(message.__required_keys__ | message.__optional_keys__)  # type: ignore[attr-defined]


def test_checked_envelope__every_declared_field_none_when_left_out():
    """A checked envelope holds every field Envelope declares, so readers subscript them."""
    checked = wire.check_envelope(b'{"outcome": "ok", "stray": 1}')
    assert set(checked) == fields_of(Envelope)
    assert {key: value for key, value in checked.items() if value is not None} == {"outcome": "ok"}


def test_checked_answer_and_lost_call__every_field_of_the_call_header():
    """An answer the host sent and a call whose host was lost have the same fields."""
    answered = wire.answered_call(wire.check_answer({"type": "result", "call_id": 7}))
    lost = wire.lost_call("the host died")
    assert set(answered) == set(lost) == fields_of(wire.CallHeader)
    assert (answered["call_id"], answered["host_lost"], lost["host_lost"]) == (
        7,
        None,
        "the host died",
    )
