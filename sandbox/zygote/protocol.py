"""Wire formats.

Portal <-> host: frames of data only, never pickles, because a warm host runs plugin code
(its import and setup()) and may write anything on its socket. A frame is a 12-byte header
(length of the rest, length of the JSON part), a JSON object of fields, then the binary
blobs the JSON names with their lengths ("blobs": [[name, length], ...]). The portal reads
the header and the JSON (at most HEADER_LIMIT bytes), checks every field and each blob's
length against the call's limits (sandbox/portal/wire.py), and only then reads the blobs.
What the portal sends the host may hold pickles (the call's target and arguments): the
portal is trusted, the host is not.

Call child -> host: the child runs plugin code, so the host never unpickles what it sends.
The child writes MAGIC, the lengths of a JSON "envelope" (outcome, error details) and of
the value (JSON text by default), its own peak RSS and CPU time, then envelope and value.
The host checks only the lengths and forwards both untouched; the portal checks the
envelope's fields and parses the value. The lengths let the host see a record is complete
before the child has finished exiting, and the usage figures stand in for wait4()'s,
which come only after.

Zygote-side modules (this one and the rest of sandbox/zygote/) import only what the host needs:
every megabyte the host holds makes each fork slower.
"""

from __future__ import annotations

import json
import struct

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing grows every fork

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sandbox.messages import Envelope

FRAME_HEADER = struct.Struct(">QI")  # length of what follows, length of its JSON part
HEADER_LIMIT = 1 << 20  # the JSON part of a frame; blobs are bounded by the call's limits
COMMAND_HEADER = struct.Struct(">Q")  # host -> spare: the length of a pickled Command

RESULT_MAGIC = b"SBX2"
# magic, envelope length, value length, peak RSS (KiB), CPU time (microseconds)
RESULT_HEADER = struct.Struct(">4sIQQQ")
RESULT_FD = 3  # where the call child finds its result pipe
COMMAND_FD = 4  # where a spare child waits for its call
RESULT_FILE = ".sandbox-result"  # fallback in the call directory if the plugin closed fd 3
RESULT_LOST_EXIT = 119  # the child returned but could deliver its result nowhere
ENVELOPE_LIMIT = 1 << 20  # error text and traceback are capped well below this
FRAMES_LIMIT = 100  # an exception's frames in an envelope: the innermost ones
# A host's directories in the temporary directory: "<kind>-<host pid>-<n>-<6 hex digits>".
CALL_DIR_KIND = "sandbox-call"
BYTECODE_DIR_KIND = "sandbox-pycache"
RESIDENT_DIR_KIND = "sandbox-resident"  # a resident process's working directory
HOST_DIR_KINDS = (CALL_DIR_KIND, BYTECODE_DIR_KIND, RESIDENT_DIR_KIND)  # what a host leaves


class ProtocolError(ValueError):
    """A frame that is not one: the stream cannot be trusted past it."""


def encode_frame(
    fields: Mapping[str, object], blobs: Mapping[str, bytes | memoryview] | None = None
) -> list[bytes | memoryview]:
    """A frame as buffers for sendall/writev (avoids joining large blobs)."""
    blobs = blobs or {}
    sizes = [(name, memoryview(data).nbytes) for name, data in blobs.items()]
    text = json.dumps(
        dict(fields, blobs=[list(size) for size in sizes]),
        ensure_ascii=True,
        allow_nan=False,
        separators=(",", ":"),
    ).encode("ascii")
    rest = len(text) + sum(length for _, length in sizes)
    # No empty buffers: a writer loop that waits for each buffer to drain would spin on one.
    parts = [data for data in blobs.values() if memoryview(data).nbytes]
    return [FRAME_HEADER.pack(rest, len(text)), text, *parts]


def frame_sizes(header: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(length of the JSON part, total length of the blobs) a frame header declares."""
    rest, text_len = FRAME_HEADER.unpack_from(header)
    if text_len > HEADER_LIMIT or text_len > rest:
        raise ProtocolError(f"frame header declares {text_len} bytes of fields in {rest}")
    return text_len, rest - text_len


def decode_fields(text: bytes | bytearray | memoryview) -> tuple[dict, list[tuple[str, int]]]:
    """The JSON object of a frame and its blob list [(name, length)], checked for shape."""
    try:
        fields = json.loads(bytes(text), parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"frame fields are not JSON ({exc})") from None
    if not isinstance(fields, dict):
        raise ProtocolError("frame fields are not a JSON object")
    declared = fields.pop("blobs", [])
    if not isinstance(declared, list):
        raise ProtocolError("frame blob list is not a list")
    blobs = []
    for entry in declared:
        if (
            not isinstance(entry, list)
            or len(entry) != 2
            or not isinstance(entry[0], str)
            or type(entry[1]) is not int
            or entry[1] < 0
        ):
            raise ProtocolError(f"frame blob entry {entry!r:.100} is not [name, length]")
        blobs.append((entry[0], entry[1]))
    return fields, blobs


def split_blobs(data: bytes | bytearray, declared: list[tuple[str, int]]) -> dict[str, bytes]:
    """The blobs of a frame by name, from the bytes that follow its JSON part."""
    if sum(length for _, length in declared) != len(data):
        raise ProtocolError("frame blob lengths do not add up")
    blobs: dict[str, bytes] = {}
    offset = 0
    for name, length in declared:
        blobs[name] = bytes(data[offset : offset + length])
        offset += length
    return blobs


def decode_frame(data: bytes | bytearray) -> tuple[dict, dict[str, bytes]]:
    """A whole frame (header included) as (fields, blobs); for frames from the portal."""
    text_len, _ = frame_sizes(data)
    start = FRAME_HEADER.size
    fields, declared = decode_fields(data[start : start + text_len])
    return fields, split_blobs(data[start + text_len :], declared)


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON data")


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
    envelope: Envelope | None,
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
    The envelope stays JSON text: the portal checks it (sandbox/portal/wire.py)."""
    size = record_size(data)
    if size is None:
        raise ValueError(f"result record truncated ({len(data)} bytes)")
    _, env_len, _, peak_rss_kb, cpu_us = RESULT_HEADER.unpack_from(data)
    if len(data) != size:
        raise ValueError(f"result record is {len(data)} bytes, header says {size}")
    start = RESULT_HEADER.size
    envelope = bytes(data[start : start + env_len])
    return ResultRecord(envelope, bytes(data[start + env_len :]), peak_rss_kb, cpu_us / 1e6)
