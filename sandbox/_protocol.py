"""Wire formats.

Portal <-> host: frames of an 8-byte big-endian length followed by a pickle. Both ends are
sandbox code, so pickle is safe there.

Call child -> host: the child runs plugin code, so the host never unpickles what it sends.
The child writes MAGIC, the lengths of a JSON "envelope" (outcome, error details) and of an
opaque pickled value, its own peak RSS and CPU time, then envelope and value. The host checks
only the lengths and forwards both untouched; the portal parses the JSON and rebuilds the
value with a restricted unpickler. The lengths let the host see a record is complete before
the child has finished exiting, and the usage figures stand in for wait4()'s, which come
only after.

Host-side modules (this one, _child, _host, _linux) import only what the host needs:
every megabyte the host holds makes each fork slower.
"""

from __future__ import annotations

import json
import pickle
import struct

FRAME_HEADER = struct.Struct(">Q")
MAX_FRAME = 1 << 34  # a corrupted length must not make us allocate without bound

RESULT_MAGIC = b"SBX2"
# magic, envelope length, value length, peak RSS (KiB), CPU time (microseconds)
RESULT_HEADER = struct.Struct(">4sIQQQ")
RESULT_FD = 3  # where the call child finds its result pipe
COMMAND_FD = 4  # where a spare child waits for its call
RESULT_FILE = ".sandbox-result"  # fallback in the call directory if the plugin closed fd 3
RESULT_LOST_EXIT = 119  # the child returned but could deliver its result nowhere
ENVELOPE_LIMIT = 1 << 20  # error text and traceback are capped well below this
# A host's directories in the temporary directory: "<kind>-<host pid>-<n>-<6 hex digits>".
CALL_DIR_KIND = "sandbox-call"
BYTECODE_DIR_KIND = "sandbox-pycache"


def encode_frame(message: object) -> list[bytes]:
    """A message as buffers for sendall/sendmsg (avoids joining a large pickle)."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return [FRAME_HEADER.pack(len(payload)), payload]


OK_ENVELOPE = b'{"outcome": "ok"}'  # the common case, without json.dumps in every child


class ResultRecord:
    """A parsed result record: the envelope, the opaque value and the child's own usage."""

    __slots__ = ("cpu_s", "envelope", "peak_rss_kb", "value")

    def __init__(self, envelope: bytes, value: bytes, peak_rss_kb: int, cpu_s: float) -> None:
        self.envelope = envelope
        self.value = value
        self.peak_rss_kb = peak_rss_kb
        self.cpu_s = cpu_s


def encode_result(
    envelope: dict[str, object] | None,
    value: bytes | memoryview = b"",
    usage: tuple[int, int] = (0, 0),
) -> list:
    """The child's result record: header, JSON envelope (None: ok), opaque value bytes.
    ``usage`` is (peak RSS in KiB, CPU microseconds)."""
    if envelope is None:
        body = OK_ENVELOPE
    else:
        body = json.dumps(envelope, ensure_ascii=True, default=str).encode("ascii")
    header = RESULT_HEADER.pack(RESULT_MAGIC, len(body), len(value), *usage)
    return [header, body, value]


def record_size(data: bytes | bytearray) -> int | None:
    """The full size the record in ``data`` declares, or None until its header is in."""
    if len(data) < RESULT_HEADER.size:
        return None
    magic, env_len, value_len, _, _ = RESULT_HEADER.unpack_from(data)
    if magic != RESULT_MAGIC or env_len > ENVELOPE_LIMIT:
        raise ValueError("result record has a corrupt header")
    return RESULT_HEADER.size + env_len + value_len


def decode_result(data: bytes | bytearray) -> ResultRecord:
    """Split a result record; raises ValueError if it is not one (e.g. plugin wrote to fd 3).
    The envelope stays JSON text: see ``parse_envelope``."""
    size = record_size(data)
    if size is None:
        raise ValueError(f"result record truncated ({len(data)} bytes)")
    _, env_len, _, peak_rss_kb, cpu_us = RESULT_HEADER.unpack_from(data)
    if len(data) != size:
        raise ValueError(f"result record is {len(data)} bytes, header says {size}")
    start = RESULT_HEADER.size
    envelope = bytes(data[start : start + env_len])
    return ResultRecord(envelope, bytes(data[start + env_len :]), peak_rss_kb, cpu_us / 1e6)


def parse_envelope(text: bytes) -> dict[str, object]:
    """The envelope's JSON object (in the portal); ValueError if it is not one."""
    envelope = json.loads(text)
    if not isinstance(envelope, dict):
        raise ValueError("result envelope is not an object")
    return envelope
