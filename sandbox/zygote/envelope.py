"""What a call process says of its call: the envelope (outcome, phase, exception type,
message, location, traceback) and the return value, encoded and capped.

The portal checks every field on arrival (sandbox/portal/wire.py): a call process runs
plugin code, so what it writes may be anything.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing grows every fork

if TYPE_CHECKING:  # typing-only names: the host (and so every fork) never imports them
    from types import TracebackType

    from typing_extensions import Buffer

    from sandbox.messages import Envelope, ExceptionFacts

TRACEBACK_LIMIT = 32 * 1024
MESSAGE_LIMIT = 2000


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
    location = _raise_site(exc.__traceback__)
    _clear_frames(exc.__traceback__)
    text = format_exception(exc)
    return {
        "phase": phase,
        "error_type": type(exc).__name__,
        "message": safe_str(exc),
        "location": location,
        "traceback": text[-TRACEBACK_LIMIT:],
    }


def _raise_site(tb: TracebackType | None) -> str | None:
    """ "file:line in function" of the innermost frame: where the exception was raised."""
    if tb is None:
        return None
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return f"{code.co_filename}:{tb.tb_lineno} in {code.co_name}"


def _clear_frames(tb: TracebackType | None) -> None:
    # Free the plugin's locals first: after a MemoryError they hold the memory we need.
    # Formatting needs only code objects and line numbers, which clear() keeps.
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


def to_pickle(value: object, cap: int) -> tuple[Envelope | None, bytes | memoryview]:
    writer = _CappedWriter(cap)
    try:
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
