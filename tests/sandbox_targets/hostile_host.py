"""Warm-ups that attack the portal from inside their sandbox host (they run in the host)."""

import os
import pickle
import signal
import struct
import sys
import time


class _RunsInThePortal:
    """Unpickling this runs code: what a forged frame would do in a portal that trusts pickle."""

    def __reduce__(self):
        return (exec, ("import os; os.environ['SANDBOX_PWNED'] = str(os.getpid())",))


class _Bomb:
    """46 bytes of pickle that expand to 1 GB in whoever unpickles them."""

    def __reduce__(self):
        return (bytearray, (10**9,))


def _control_socket() -> int:
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                return int(name)
        except OSError:
            continue
    raise RuntimeError("no control socket found")


def forge_pickle_hello():
    """Write a pickle frame where the portal expects the handshake reply, then hang."""
    payload = pickle.dumps(("hello", _RunsInThePortal()))
    os.write(_control_socket(), struct.pack(">Q", len(payload)) + payload)
    time.sleep(60)


def _host_module():
    return sys.modules["__main__"]  # the host runs as `python -m sandbox.zygote.host`


def patch_answers(field_changes=None, blob_changes=None):
    """Make this host lie in every answer: other field types, or other blobs."""
    host = _host_module()
    original = host.Host._response

    def lying_response(self, call):
        fields, blobs = original(self, call)
        fields.update(field_changes or {})
        blobs.update(blob_changes or {})
        return fields, blobs

    host.Host._response = lying_response


def answer_with_pickle_bomb():
    patch_answers(blob_changes={"value": pickle.dumps(_Bomb())})


def answer_with_bad_types():
    patch_answers({"exit_code": "zzz", "peak_rss_kb": 2**70})


def answer_with_huge_stdout():
    patch_answers(blob_changes={"stdout": b"x" * (8 * 1024 * 1024)})


def fork_sleeper_and_record(path):
    """setup() that starts a process of its own, which the sandbox does not know about."""
    pid = os.fork()
    if pid == 0:
        os.setsid()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(600)
        os._exit(0)
    with open(path, "w") as handle:
        handle.write(str(pid))


def hang(path=None):
    """An import that never finishes (a stuck download, a dead lock)."""
    if path:
        with open(path, "w") as handle:
            handle.write(str(os.getpid()))
    while True:
        pass


def identity():
    """What a call sees: its uid, and the uid its warm host had during the warm-up."""
    return {"call_uid": os.getuid(), "warm_uid": WARM_UID}


WARM_UID = None


def record_uid():
    global WARM_UID
    WARM_UID = os.getuid()


def noop():
    return "ok"
