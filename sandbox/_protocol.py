"""Wire formats.

Portal <-> host: frames of an 8-byte big-endian length followed by a pickle. Both ends are
sandbox code, so pickle is safe there.

Call child -> host: the child runs plugin code, so the host never unpickles what it sends.
The child writes MAGIC, the lengths of a JSON "envelope" (outcome, error details) and of an
opaque pickled value, then both. The host parses only the JSON and forwards the value bytes
untouched; the portal rebuilds the value with a restricted unpickler.

Host-side modules (this one, _child, _host, _linux) import only what the host needs:
every megabyte the host holds makes each fork slower.
"""

from __future__ import annotations

import json
import pickle
import struct

FRAME_HEADER = struct.Struct(">Q")
MAX_FRAME = 1 << 34  # a corrupted length must not make us allocate without bound

RESULT_MAGIC = b"SBX1"
RESULT_HEADER = struct.Struct(">4sIQ")  # magic, envelope length, value length
RESULT_FD = 3  # where the call child finds its result pipe
COMMAND_FD = 4  # where a spare child waits for its call
RESULT_FILE = ".sandbox-result"  # fallback in the call directory if the plugin closed fd 3
RESULT_LOST_EXIT = 119  # the child returned but could deliver its result nowhere
ENVELOPE_LIMIT = 1 << 20  # error text and traceback are capped well below this


def encode_frame(message: object) -> list[bytes]:
    """A message as buffers for sendall/sendmsg (avoids joining a large pickle)."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return [FRAME_HEADER.pack(len(payload)), payload]


OK_ENVELOPE = b'{"outcome": "ok"}'  # the common case, without json.dumps in every child


def encode_result(envelope: dict[str, object] | None, value: bytes | memoryview = b"") -> list:
    """The child's result record: header, JSON envelope (None: ok), opaque value bytes."""
    if envelope is None:
        body = OK_ENVELOPE
    else:
        body = json.dumps(envelope, ensure_ascii=True, default=str).encode("ascii")
    return [RESULT_HEADER.pack(RESULT_MAGIC, len(body), len(value)), body, value]


def decode_result(data: bytes | bytearray) -> tuple[dict[str, object], bytes]:
    """Parse a result record; raises ValueError if it is not one (e.g. plugin wrote to fd 3)."""
    if len(data) < RESULT_HEADER.size:
        raise ValueError(f"result record truncated ({len(data)} bytes)")
    magic, env_len, value_len = RESULT_HEADER.unpack_from(data)
    if magic != RESULT_MAGIC or env_len > ENVELOPE_LIMIT:
        raise ValueError("result record has a corrupt header")
    start = RESULT_HEADER.size
    end = start + env_len
    if len(data) != end + value_len:
        raise ValueError(f"result record is {len(data)} bytes, header says {end + value_len}")
    envelope = json.loads(bytes(data[start:end]))
    if not isinstance(envelope, dict):
        raise ValueError("result envelope is not an object")
    return envelope, bytes(data[end:])
