"""Call targets whose result record is forged or whose value is hostile JSON."""

import json
import os
import struct


def forged_record(exit_code):
    """Write a result record with a lying envelope to fd 3, then exit."""
    envelope = json.dumps({"outcome": "exited", "exit_code": exit_code}).encode()
    header = struct.pack(">4sIQQQ", b"SBX2", len(envelope), 0, 0, 0)
    os.write(3, header + envelope)
    os._exit(0)


def forged_envelope(envelope):
    """Write a result record with the given envelope to fd 3, then exit."""
    text = json.dumps(envelope).encode()
    os.write(3, struct.pack(">4sIQQQ", b"SBX2", len(text), 0, 0, 0) + text)
    os._exit(0)


def nested(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


def not_a_number():
    return {"ratio": float("nan")}


def tuple_and_str_subclass():
    class Version(str):
        pass

    return {"pair": (1, 2), "version": Version("2.13.0")}


def opaque_object():
    return object()


def raw_bytes():
    return b"\x00\x01"


def many_empty_lists(count):
    return [[] for _ in range(count)]


def pair():
    return {"pair": (1, 2)}
