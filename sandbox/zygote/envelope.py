"""What a call process says of its call: the envelope (outcome, phase, exception type,
message, location, traceback, frames, the kind of failure the exception declares and its
data) and the return value, encoded and capped.

The portal checks every field on arrival (sandbox/portal/wire.py): a call process runs
plugin code, so what it writes may be anything.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle

from sandbox.zygote.protocol import FRAMES_LIMIT

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing grows every fork

if TYPE_CHECKING:  # typing-only names: the host (and so every fork) never imports them
    from types import TracebackType

    from typing_extensions import Buffer

    from sandbox.messages import Envelope, ExceptionFacts, WireFrame

TRACEBACK_LIMIT = 32 * 1024
MESSAGE_LIMIT = 2000
DETAIL_LIMIT = 256 * 1024  # of an exception's sandbox_detail, as JSON text; larger is left out


def exit_envelope(exc: SystemExit) -> Envelope:
    code = exc.code
    message = None
    if code is None:
        code = 0
    elif not isinstance(code, int):
        message = safe_str(code)  # Python prints a non-int exit "code" and exits 1
        code = 1
    envelope = exception_envelope(exc, phase="call")
    envelope["outcome"] = "exited"
    envelope["exit_code"] = code
    envelope["message"] = message
    return envelope


def exception_envelope(exc: BaseException, phase: str) -> Envelope:
    """A call's exception: its facts, and "memory" or "error" as the outcome."""
    envelope: Envelope = {"outcome": "memory" if isinstance(exc, MemoryError) else "error"}
    envelope.update(exception_facts(exc, phase))
    return envelope


def exception_facts(exc: BaseException, phase: str) -> ExceptionFacts:
    """What the sandbox tells of an exception caught in ``phase``."""
    tb = exc.__traceback__
    _clear_frames(tb)
    frames = _frames(tb)
    last = frames[-1] if frames else None
    facts: ExceptionFacts = {
        "phase": phase,
        "error_type": type(exc).__name__,
        "message": safe_str(exc),
        "location": f"{last['file']}:{last['line']} in {last['function']}" if last else None,
        "traceback": format_exception(exc)[-TRACEBACK_LIMIT:],
        "frames": frames,
    }
    fault = _declared_fault(exc)
    if fault is not None:
        facts["fault"] = fault
    detail = _detail(exc)
    if detail is not None:
        facts["detail"] = detail
    return facts


def _frames(tb: TracebackType | None) -> list[WireFrame]:
    """The traceback's frames, outermost first; a frame repeated in a row (a recursion) once."""
    frames: list[WireFrame] = []
    while tb is not None:
        code = tb.tb_frame.f_code
        frame: WireFrame = {
            "file": code.co_filename,
            "line": tb.tb_lineno or 0,
            "function": code.co_name,
        }
        if not frames or frames[-1] != frame:
            frames.append(frame)
        tb = tb.tb_next
    return frames[-FRAMES_LIMIT:]


def _declared_fault(exc: BaseException) -> str | None:
    """The ``sandbox_fault`` an exception's class (or a base) sets, read from the classes
    themselves: a ``__getattr__`` that answers every name declares nothing."""
    try:
        for cls in type(exc).__mro__:
            fault = vars(cls).get("sandbox_fault")
            if fault is not None:
                return fault if type(fault) is str else None
    except BaseException:  # plugin classes may break anything; then they declare nothing
        pass
    return None


def _detail(exc: BaseException) -> object:
    """The JSON data an exception carries as ``sandbox_detail``; None if it is not JSON data
    or larger than DETAIL_LIMIT."""
    try:
        detail = vars(exc).get("sandbox_detail")
        if detail is None or len(_JSON.encode(detail)) > DETAIL_LIMIT:
            return None
    except BaseException:  # not JSON data (a set, NaN, a cycle), or a hostile container
        return None
    return detail


def _clear_frames(tb: TracebackType | None) -> None:
    # Free the plugin's locals first: after a MemoryError they hold the memory we need.
    # Frames and formatting need only code objects and line numbers, which clear() keeps.
    while tb is not None:
        with contextlib.suppress(RuntimeError):  # a frame still executing (ours)
            tb.tb_frame.clear()
        tb = tb.tb_next


def format_exception(exc: BaseException) -> str:
    try:
        # Imported only on failure. It may be unimportable (a plugin broke sys.path, or
        # SANDBOX_RUN_AS cannot read the stdlib): the outcome must survive that.
        import traceback

        text = "".join(traceback.format_exception(exc))
    except BaseException:
        text = f"{type(exc).__name__}: {safe_str(exc)} (full traceback unavailable)\n"
    return text


def safe_str(obj: object) -> str:
    try:
        text = str(obj)
    except BaseException:
        text = f"<unprintable {type(obj).__name__}>"
    return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT] + "..."


class _ResultTooLarge(Exception):
    pass


class _CappedWriter(io.BytesIO):
    """Pickle target that stops as soon as the value exceeds its cap (bounded memory)."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self._cap = cap

    def write(self, data: Buffer) -> int:
        if self.tell() + memoryview(data).nbytes > self._cap:
            raise _ResultTooLarge
        return super().write(data)


# JSON text, ASCII only (a lone surrogate stays an escape), no NaN: what the portal parses.
_JSON = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":"))


def to_json(value: object, cap: int) -> tuple[Envelope | None, bytes | memoryview]:
    try:
        data = _JSON.encode(value).encode("ascii")
    except MemoryError as exc:
        return exception_envelope(exc, phase="serialise"), b""
    except BaseException as exc:  # TypeError, ValueError (NaN, a cycle), RecursionError
        envelope = exception_envelope(exc, phase="serialise")
        envelope["outcome"] = "unserialisable"
        envelope["value_type"] = _type_name(value)
        return envelope, b""
    if len(data) > cap:
        return {
            "outcome": "output_limit",
            "phase": "serialise",
            "value_type": _type_name(value),
        }, b""
    return None, data


_EXACT = frozenset({str, int, float, bool, bytes, type(None)})
# How a subclass of each plain type becomes that type without calling its own overrides.
_TO_BASE: tuple[tuple[type, object], ...] = (
    (str, str.__str__),
    (bytes, bytes.__bytes__),
    (int, int.__index__),
    (float, float.__float__),
)
PLAIN_DEPTH = 500  # deeper than this is a cycle or a hostile value: left to the pickler


def plain_value(value: object, depth: int = 0) -> object:
    """``value`` with subclasses of str, bytes, int, float, list, tuple and dict (torch's
    version string, named tuples, numpy's float64) made their plain base types, so the portal
    rebuilds them without loading the plugin's classes."""
    cls = type(value)
    if cls in _EXACT or depth > PLAIN_DEPTH:
        return value
    for base, convert in _TO_BASE:
        if isinstance(value, base):
            return convert(value)  # type: ignore[operator]  # the base's own method
    if isinstance(value, dict):
        return {plain_value(k, depth + 1): plain_value(v, depth + 1) for k, v in dict.items(value)}
    if isinstance(value, list):
        return [plain_value(item, depth + 1) for item in list.__iter__(value)]
    if isinstance(value, tuple):
        return tuple(plain_value(item, depth + 1) for item in tuple.__iter__(value))
    return value


def to_pickle(value: object, cap: int) -> tuple[Envelope | None, bytes | memoryview]:
    writer = _CappedWriter(cap)
    try:
        value = plain_value(value)
        pickle.Pickler(writer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    except _ResultTooLarge:
        return {
            "outcome": "output_limit",
            "phase": "serialise",
            "value_type": _type_name(value),
        }, b""
    except MemoryError as exc:
        return exception_envelope(exc, phase="serialise"), b""
    except BaseException as exc:  # whatever __reduce__ of plugin objects raises
        envelope = exception_envelope(exc, phase="serialise")
        envelope["outcome"] = "unserialisable"
        envelope["value_type"] = _type_name(value)
        return envelope, b""
    return None, writer.getbuffer()  # None: the "ok" envelope


def _type_name(value: object) -> str:
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"
