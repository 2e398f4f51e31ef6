"""A resident process: runs its Preload's warm-up once, then serves calls one at a time, in
itself, until the portal retires it (resident mode, docs/sandbox.md).

Started by the portal (sandbox/portal/resident.py) as
``python -P -m sandbox.zygote.resident --fd N`` in a session of its own, with stdout and stderr
on files the portal empties before each call and reads after it. The portal, not this
process, enforces each call's timeout and memory limit: it kills this whole process group,
and the next call starts a new process.

    portal ──init──▶ set up, warm-up (setup() once) ──hello──▶ portal
    portal ──call──▶ invoke the target here ──result (envelope, value)──▶ portal   (repeat)
    portal ──stop or EOF──▶ exit

Standard library only, like the host: it runs under the plugin's own interpreter.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import sys
import time

from sandbox.zygote import linux, startup
from sandbox.zygote.calldirs import CallDirs, remove_tree
from sandbox.zygote.child import flush_stdio, host_hard_limits, invoke, rlimits_for
from sandbox.zygote.portal_link import read_frame_blocking, receive_init, write_blocking
from sandbox.zygote.protocol import OK_ENVELOPE, RESIDENT_DIR_KIND, encode_frame

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: kept as light as the host

if TYPE_CHECKING:
    from sandbox.messages import AnswerFields, HelloFields


class Resident:
    """This process: its setup, its working directory and its loop of calls."""

    def __init__(self, ctrl: int, init: dict) -> None:
        self.ctrl = ctrl
        self.init = init
        self.pid = os.getpid()
        self.warnings: list[str] = []
        self.unreadable: list[str] = []
        self.workdir = ""

    def prepare(self) -> HelloFields:
        init = self.init
        if init["sys_path"] is not None:  # None: a plugin's own interpreter keeps its own
            sys.path[:] = init["sys_path"]
        with contextlib.suppress(OSError):
            linux.set_process_name("sandbox-persist")  # comm holds 15 characters
        stdio = startup.configure_stdio()
        if init.get("no_network"):
            startup.isolate_network(self._warn)
        user = None
        if init.get("run_as"):
            user = startup.resolve_run_as(init["run_as"], self._warn, self.unreadable)
        startup.restore_plugin_environment(init.get("plugin_env", {}))
        sys.dont_write_bytecode = bool(init.get("dont_write_bytecode"))
        # A kind of its own: janitors of older portals sweep call directories of non-hosts.
        dirs = CallDirs(init["tmp_dir"], self.pid, RESIDENT_DIR_KIND)
        self.workdir = dirs.make_private(RESIDENT_DIR_KIND)  # removed by the portal once reaped
        if user is not None:
            os.chown(self.workdir, *user)
            startup.drop_own_privileges(*user, portal_pid=init["portal_pid"])
        self._enter_workdir()
        # Per process, not per call: a CPU-time rlimit would add up over the calls it serves.
        limits = dict(init["limits"], cpu_s=None)
        for which, pair in rlimits_for(limits, host_hard_limits()):
            resource.setrlimit(which, pair)
        output: dict[str, object] = {}
        failure = startup.warm_up(init.get("preload"), output)
        startup.restore_stdio(stdio)
        if failure is not None:
            refusal: HelloFields = {"ok": False, "pid": self.pid, "warnings": self.warnings}
            refusal.update(failure)
            refusal.update(output)  # type: ignore[typeddict-item]
            return refusal
        return {
            "ok": True,
            "pid": self.pid,
            "warnings": self.warnings,
            "base_vsz_mb": linux.address_space_mb(),
            "unreadable": self.unreadable,
            **output,  # type: ignore[typeddict-item]  # warmup_stdout, _stderr, _value
        }

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        with contextlib.suppress(OSError):
            os.write(2, f"sandbox resident[{self.pid}]: {message}\n".encode(errors="replace"))

    def _enter_workdir(self) -> None:
        # Every call: a plugin may have changed directory or TMPDIR in the last one.
        os.chdir(self.workdir)
        os.environ["TMPDIR"] = self.workdir
        tempfile = sys.modules.get("tempfile")
        if tempfile is not None:
            tempfile.tempdir = self.workdir  # type: ignore[attr-defined]

    def serve(self) -> None:
        while True:
            frame = read_frame_blocking(self.ctrl)
            if frame is None or frame[0].get("type") != "call":
                return  # the portal retired this process (or is gone)
            fields, blobs = frame
            self._enter_workdir()
            self._call(fields, blobs["payload"])

    def _call(self, fields: dict, payload: bytes) -> None:
        started = time.monotonic()
        before = _cpu_s()
        sys.argv = [fields["target_name"]]
        envelope, value = invoke(
            payload, int(fields["limits"]["result_bytes"]), fields.get("result_format", "json")
        )
        flush_stdio()  # what the call printed is in the output files before the answer
        body = OK_ENVELOPE
        if envelope is not None:
            body = json.dumps(envelope, ensure_ascii=True, default=str).encode("ascii")
        answer: AnswerFields = {
            "call_id": fields["call_id"],
            "cpu_s": max(0.0, _cpu_s() - before),
            "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "run_s": time.monotonic() - started,
            "host_pid": self.pid,
        }
        write_blocking(
            self.ctrl, encode_frame(dict(answer, type="result"), {"envelope": body, "value": value})
        )

    def shutdown(self) -> None:
        if self.workdir:
            remove_tree(self.workdir)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str]) -> int:
    received = receive_init(argv, "sandbox.zygote.resident")
    if isinstance(received, int):
        return received
    ctrl, fields = received
    resident = Resident(ctrl, fields)
    try:
        hello = resident.prepare()
        write_blocking(ctrl, encode_frame(dict(hello, type="hello")))
        if hello["ok"]:
            resident.serve()
    finally:
        resident.shutdown()
    return 0 if hello["ok"] else 1


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except OSError as exc:
        if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
            raise
        sys.exit(1)  # the portal went away
